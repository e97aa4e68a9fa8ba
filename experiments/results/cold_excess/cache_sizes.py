"""The cache-size sweep of ``evaluate.py`` (its first version, fewer columns): with ``cold_excess.patch`` applied, each
table fitted with the cold column at each cache size C in MB (0: none), at the exponent the committed status run
chose; printed: leave-one-out RMSPE, the fitted cold cost (C, ms per MB), the held-out groups within ±5 / ±10 %, the
in-sample RMSPE of the table's models outside the spaces, each torchvision export's error.

    python experiments/results/cold_excess/cache_sizes.py predictor_local_32_memory_variants9,predictor_local_32_pool_variants9,predictor_local_32_memory 0,16,32,48
    python experiments/results/cold_excess/cache_sizes.py predictor_local_32_intel_shuffle8_variants9,predictor_local_128_pool_variants9,predictor_local_32_noprobe 0,16,32,48

Output in ``cache_sizes.log``.
"""
import sys, os, json, time, pathlib, warnings, numpy as np
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from latency_status import _run_tables
from offgrid_siblings import _score
from latency_models import LatencyPredictor
status = json.load(open(_ROOT / "experiments/results/latency_status.json"))["runs"]
cs = [float(c) for c in sys.argv[2].split(",")]
for run in sys.argv[1].split(","):
    table, held, groups = _run_tables(run)
    g = dict(groups)
    b = status[run]["reference_exponent"] if run in status else "auto"
    for c in cs:
        os.environ["KARUMI_COLD_C"] = str(c)
        t0 = time.time()
        pred = LatencyPredictor.fit(table, reference_exponent=b)
        pr = {}
        for name in ("spaces, all", "spaces, float32, all", "torchvision"):
            if name in g:
                s = _score(pred, table, g[name]); pr[name[:12]] = (round(100*s["within_5"],1), round(100*s["within_10"],1))
        outs = [r for r in table.model_rows if not r.candidate]
        p = pred.predict_many([r.kernels for r in outs])
        e = [x / float(pred.on_scale(r.latency_ms, r.reference_ms)) - 1 for r, x in zip(outs, p)]
        ins = round(100 * float(np.sqrt(np.mean(np.square(e)))), 1)
        ex = [f'{r["model"][:10]}{100*r["error"]:+.0f}' for r in _score(pred, table, g["torchvision"])["rows"]] if "torchvision" in g else []
        print(run, c, f"{time.time()-t0:.0f}s", "loo", round(100*pred.fit_info["loo_rmspe"],2), "cold", pred.fit_info.get("cold"), pr,
              "ins", ins, " ".join(ex), flush=True)
