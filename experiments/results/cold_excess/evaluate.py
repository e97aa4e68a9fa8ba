"""Tried and not kept (fits only, no timing): the weights a model holds beyond a cache size as a cost fitted inside the
model-rows fit, and the weight term's column made the megabytes of small (<= 1 MB), low-reuse (<= 16 output pixels)
kernels, against the default fit; each at the exponent the committed status run chose for the table.

Needs ``cold_excess.patch`` (beside this file) applied to ``latency_models/_predictor.py``: it adds, when the
environment variable ``KARUMI_COLD_C`` is a size C in MB above 0, a column max(0, W - C) (W: the row's megabytes of
stored weights) with a penalty of its own to the stage-2 fit, held at 0 when its cost comes out negative, and adds
the fitted ms per MB beyond C to every prediction. Modes ``SMALL:C`` (comma-separated): SMALL 1 forces the weight
term with the small low-reuse column; C the cache size (0: no column).

    git apply experiments/results/cold_excess/cold_excess.patch
    python experiments/results/cold_excess/evaluate.py predictor_local_32_memory_variants9,predictor_local_32_memory,predictor_local_128_pool_variants9 0:0,1:0,1:48,0:64
    python experiments/results/cold_excess/evaluate.py predictor_local_32_pool_variants9,predictor_local_32_noprobe,predictor_local_32_intel_shuffle8_variants9 0:0,1:0,1:48,0:64
    python experiments/results/cold_excess/evaluate.py predictor_local_32_memory_variants9,predictor_local_32_pool_variants9,predictor_local_32_memory 0:0,0:16,0:32,0:48
    python experiments/results/cold_excess/evaluate.py predictor_local_32_intel_shuffle8_variants9,predictor_local_128_pool_variants9,predictor_local_32_noprobe 0:0,0:16,0:32,0:48

Printed per table and mode: the fit's leave-one-out RMSPE, the fitted cold cost (C, ms per MB), the weight term's
cost per MB, the held-out groups within ±5 / ±10 %, the in-sample RMSPE of the table's models outside the spaces with
the two worst each way, and each torchvision export's error. ``cache_sizes.log`` holds the first sweep over the cache
size, printed by this script's first version (fewer columns, the same fits), which
``evaluate.py predictor_local_32_memory_variants9,predictor_local_32_pool_variants9,predictor_local_32_memory 0:0,0:16,0:32,0:48``
and ``evaluate.py predictor_local_32_intel_shuffle8_variants9,predictor_local_128_pool_variants9,predictor_local_32_noprobe
0:0,0:16,0:32,0:48`` repeat. Output in ``evaluate.log`` (the two commands above)
and ``evaluate_18.log`` (the eighteen tables of ``experiments/_fit_ways.RUNS_WITH_NINE``, two processes side by side;
their means by ``summarise.py`` in ``summarise_18.log``):

    python experiments/results/cold_excess/evaluate.py predictor_local_32_intel,predictor_local_128_intel,predictor_local_128_intel_cover,predictor_local_96_memory,predictor_local_224_memory,predictor_local_128_pool,predictor_local_128_settled8,predictor_local_96_se,predictor_local_32_memory_variants9 0:0,0:48,0:64
    python experiments/results/cold_excess/evaluate.py predictor_local_32_intel_shuffle8,predictor_local_128_intel_shuffle8,predictor_local_32_memory,predictor_local_128_memory,predictor_local_32_pool,predictor_local_224_pool,predictor_local_128_paths,predictor_local_128_layout,predictor_local_128_pool_variants9 0:0,0:48,0:64
"""
import sys, os, json, time, math, pathlib, warnings, numpy as np
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from latency_status import _run_tables
from offgrid_siblings import _score
from latency_models import LatencyPredictor
import latency_models._predictor as P
from latency_models._features import physical
orig_phi = P._phi
MODE = {"small": False}
def out_hw(k):
    if len(k.input_shape) != 3: return 1
    return math.ceil(k.input_shape[1] / max(k.stride, 1)) * math.ceil(k.input_shape[2] / max(k.stride, 1))
def phi(km, kernels, nchwc, weight_term=False, io_term=False):
    x = orig_phi(km, kernels, nchwc, weight_term, io_term)
    if weight_term and km is not None and MODE["small"]:
        w = physical(list(kernels))[:, 2]
        hw = np.array([out_hw(k) for k in kernels], dtype=float)
        x[:, -1] = w * (hw <= 16) * (w <= 1.0)
    return x
P._phi = phi
status = json.load(open(_ROOT / "experiments/results/latency_status.json"))["runs"]
modes = [m.split(":") for m in sys.argv[2].split(",")]  # small:C
for run in sys.argv[1].split(","):
    table, held, groups = _run_tables(run)
    g = dict(groups)
    b = status[run]["reference_exponent"] if run in status else "auto"
    for small, c in modes:
        MODE["small"] = small == "1"
        os.environ["KARUMI_COLD_C"] = c
        t0 = time.time()
        pred = LatencyPredictor.fit(table, reference_exponent=b, **({"weight_term": True} if MODE["small"] else {}))
        pr = {}
        for name in ("spaces, all", "spaces, float32, all", "torchvision"):
            if name in g:
                s = _score(pred, table, g[name]); pr[name[:12]] = (round(100*s["within_5"],1), round(100*s["within_10"],1))
        outs = [r for r in table.model_rows if not r.candidate]
        p = pred.predict_many([r.kernels for r in outs])
        e = [x / float(pred.on_scale(r.latency_ms, r.reference_ms)) - 1 for r, x in zip(outs, p)]
        ins = round(100 * float(np.sqrt(np.mean(np.square(e)))), 1)
        worst = sorted(zip(e, [str(r.source)[:14] for r in outs]))
        ex = [f'{r["model"][:10]}{100*r["error"]:+.0f}' for r in _score(pred, table, g["torchvision"])["rows"]] if "torchvision" in g else []
        wt = pred.theta0[-1] if MODE["small"] else None
        print(run, small, c, f"{time.time()-t0:.0f}s", "loo", round(100*pred.fit_info["loo_rmspe"],2), "cold", pred.fit_info.get("cold"), "w", wt, pr,
              "ins", ins, "worst", [(n, round(100*v)) for v, n in worst[:2] + worst[-2:]], " ".join(ex), flush=True)
