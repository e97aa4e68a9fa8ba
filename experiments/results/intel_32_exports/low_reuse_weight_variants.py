"""Tried and not kept: the weight term's column as the megabytes of weights read at low reuse (kernels with at most
4 or 16 output pixels, or weights divided by the output pixels), forced on, against the default fit.

    python experiments/results/intel_32_exports/low_reuse_weight_variants.py predictor_local_32_intel_shuffle8,predictor_local_32_intel,predictor_local_32_memory,predictor_local_128_intel_cover,predictor_local_128_pool
"""
import sys, warnings, json, time, math, numpy as np
import pathlib
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from offgrid_siblings import _score
from weight_term import _run_tables
from latency_models import LatencyPredictor
import latency_models._predictor as P
from latency_models._kernel_model import physical
orig_phi = P._phi
MODE = {"v": None}
def out_hw(k):
    if len(k.input_shape) != 3: return 1
    h = math.ceil(k.input_shape[1] / max(k.stride, 1)); w = math.ceil(k.input_shape[2] / max(k.stride, 1))
    return h * w
def phi(km, kernels, nchwc, weight_term=False, io_term=False):
    x = orig_phi(km, kernels, nchwc, weight_term, io_term)
    if weight_term and km is not None and MODE["v"]:
        w = physical(list(kernels))[:, 2]
        hw = np.array([out_hw(k) for k in kernels], dtype=float)
        if MODE["v"] == "low4": x[:, -1] = w * (hw <= 4)
        elif MODE["v"] == "low16": x[:, -1] = w * (hw <= 16)
        elif MODE["v"] == "inv": x[:, -1] = w / hw
    return x
P._phi = phi
res = {}
for run in sys.argv[1].split(","):
    table, held, groups = _run_tables(run)
    g = dict(groups)
    for v, kw in [(None, {}), ("low4", {"weight_term": True}), ("low16", {"weight_term": True}), ("inv", {"weight_term": True})]:
        MODE["v"] = v; t0 = time.time()
        pred = LatencyPredictor.fit(table, **kw)
        pr = {}
        for name in ("spaces, all", "spaces, float32, all", "torchvision"):
            s = _score(pred, table, g[name]); pr[name] = (round(100*s["within_5"],1), round(100*s["within_10"],1))
        outs = [r for r in table.model_rows if not r.candidate]
        p = pred.predict_many([r.kernels for r in outs])
        e = [x / float(pred.on_scale(r.latency_ms, r.reference_ms)) - 1 for r, x in zip(outs, p)]
        ins = round(100 * float(np.sqrt(np.mean(np.square(e)))), 1)
        ex = [round(100*r["error"]) for r in _score(pred, table, g["torchvision"])["rows"]]
        print(run, v, f"{time.time()-t0:.0f}s", "loo", round(100*pred.fit_info["loo_rmspe"],2), pr, "in-sample outside rms", ins, "exports", ex, pred.fit_info.get("weight_term", {}).get("chosen") if v is None else "", flush=True)
