"""Tried and not kept: the table's whole models outside the spaces weighted up in the main fit (its ridge fits and
leave-one-out errors, stages 1 and 2), so that together they weigh ``alpha`` times the candidates (0: the default fit).

    python experiments/results/intel_32_exports/outside_rows_weighted.py predictor_local_32_intel_shuffle8,predictor_local_128_pool,predictor_local_128_intel_cover,predictor_local_32_memory
"""
import sys, warnings, time, numpy as np
import pathlib
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from offgrid_siblings import _score
from weight_term import _run_tables
from latency_models import LatencyPredictor
import latency_models._predictor as P
orig = P._ridge_loo
W = {"w": None}
def ridge(xt, yt, pen):
    w = W["w"]
    if w is None or len(w) != len(yt):
        return orig(xt, yt, pen)
    s = np.sqrt(w)
    coef, loo = P._ridge_loo_residuals(xt * s[:, None], yt * s, pen)
    return coef, float(np.mean(loo**2) / np.mean(w))
P._ridge_loo = ridge
for run in sys.argv[1].split(","):
    table, held, groups = _run_tables(run); g = dict(groups)
    out = np.array([not r.candidate for r in table.model_rows])
    for alpha in (0.0, 0.25, 0.5):
        W["w"] = None if alpha == 0 else np.where(out, alpha * (~out).sum() / out.sum(), 1.0)
        t0 = time.time()
        pred = LatencyPredictor.fit(table)
        pr = {n: tuple(round(100*_score(pred, table, g[n])[k],1) for k in ("within_5","within_10")) for n in ("spaces, all","spaces, float32, all","torchvision")}
        ex = [round(100*r["error"]) for r in _score(pred, table, g["torchvision"])["rows"]]
        rows = [r for r in table.model_rows if not r.candidate]
        p = pred.predict_many([r.kernels for r in rows])
        ins = [round(100*(x/float(pred.on_scale(r.latency_ms, r.reference_ms))-1)) for r, x in zip(rows, p)]
        print(run, "alpha", alpha, f"{time.time()-t0:.0f}s exp {pred.reference_exponent}", pr, "exports", ex, "in-sample outside", ins, flush=True)
