"""Post hoc, not a refit: the fitted predictor of a table with its global-average-pool family terms (multiplier and
per-kernel cost) removed, scored on the run's held-out models and the table's own outside models.

    python experiments/results/intel_32_exports/gap_terms_dropped.py predictor_local_128_pool
"""
import sys, warnings, numpy as np
import pathlib
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from offgrid_siblings import _score
from weight_term import _run_tables
from latency_models import LatencyPredictor
for run in sys.argv[1].split(","):
    table, held, groups = _run_tables(run); g = dict(groups)
    pred = LatencyPredictor.fit(table)
    def show(tag):
        pr = {n: tuple(round(100*_score(pred, table, g[n])[k],1) for k in ("within_5","within_10")) for n in ("spaces, all","spaces, float32, all","torchvision")}
        ex = [round(100*r["error"]) for r in _score(pred, table, g["torchvision"])["rows"]]
        outs = [r for r in table.model_rows if not r.candidate]
        p = pred.predict_many([r.kernels for r in outs])
        ins = {r.source.rsplit("_",1)[0]: round(100*(x/float(pred.on_scale(r.latency_ms, r.reference_ms))-1)) for r, x in zip(outs, p)}
        print(run, tag, pr, ex, ins, flush=True)
    show("as fitted mult=%s" % {f: round(v,2) for f, v in pred.family_mult.items() if "avgpool" in f or "scale" in f})
    for f in [f for f in pred.family_mult if f.startswith("global_avgpool")]:
        pred.family_mult.pop(f); pred.family_count_ms.pop(f, None)
    pred._cache.clear(); pred._token = object()
    show("GAP terms dropped")
