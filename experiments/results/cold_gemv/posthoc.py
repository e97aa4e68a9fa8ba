"""Tried post hoc (no refit), not kept: a model's weight-bound layers priced at the table's own cold-read rate.

A 1x1 convolution (or a linear layer) whose output has at most MAX_PIXELS pixels reads each of its weights at most
that many times per run; timed alone its weights stay in the cache, in a model they do not (record, *Where the
Intel 32-px exports lose their time*). The protocol's memory probe (a vector-matrix product over 16 MiB, timed
beside every row) is such a read from memory, in the row's own state: ``rate = the median probe ms of the table's
model rows / 16.78 MB``. Each such layer of at least MIN_KB KB of weights is given ``max(its fitted ms, weight MB *
rate)`` (with ``add``: its fitted ms plus weight MB * rate); the rest of the prediction is the default fit's
(``pred.contributions``). Scored on the run's held-out models on the predictor's scale (within ±5 / ±10 %, before
-> after). Times nothing. 3x3 convolutions on such maps are left out: priced so, ResNet-18 at 32 px went from +3 to
+85 % on ``predictor_local_32_intel_shuffle8`` (its 3x3 layers on 1x1 maps hold 9.4 MB each, and the table's
ResNet-34 and ResNeXt-50 already taught the fit their cost).

    python experiments/results/cold_gemv/posthoc.py RUN,RUN,... [MAX_PIXELS=4] [MIN_KB=16] [add]

The logs beside it (2026-12-07, the Intel Xeon VM):

    python experiments/results/cold_gemv/posthoc.py predictor_local_32_intel_shuffle8,predictor_local_32_intel,predictor_local_32_intel_ks1,predictor_local_32_intel_drift,predictor_local_32_memory,predictor_local_96_memory,predictor_local_128_intel_cover,predictor_local_128_intel_offgrid2,predictor_local_128_memory,predictor_local_224_memory 4 16 > posthoc_max.log
    python experiments/results/cold_gemv/posthoc.py predictor_local_32_intel_shuffle8,predictor_local_32_intel,predictor_local_32_memory 4 16 add > posthoc_add.log
"""
import sys, warnings, math, time
import pathlib
import numpy as np
_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from weight_term import _run_tables
from latency_models import LatencyPredictor

PROBE_MB = 16 * 1024 * 1024 / 1e6
MAX_PIXELS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
MIN_KB = float(sys.argv[3]) if len(sys.argv) > 3 else 16.0
ADD = len(sys.argv) > 4 and sys.argv[4] == "add"


def weight_bound(k):
    if k.op == "linear":
        return True
    return k.op == "conv" and k.groups == 1 and k.kernel_size == 1 and math.prod(k.output_shape[1:]) <= MAX_PIXELS


def extra_ms(pred, kernels, rate):
    ks, ms, _ = pred.contributions(kernels)
    out = 0.0
    for k, m in zip(ks, ms):
        if weight_bound(k) and k.weight_bytes >= MIN_KB * 1e3:
            cold = k.weight_bytes / 1e6 * rate
            out += cold if ADD else max(0.0, cold - m)
    return out


def stats(err):
    e = np.abs(np.array(err))
    return f"{100*np.mean(e <= .05):5.1f} / {100*np.mean(e <= .10):5.1f}"


for run in sys.argv[1].split(","):
    t0 = time.time()
    table, held, groups = _run_tables(run)
    probes = [r.memory_reference_ms for r in table.model_rows if r.memory_reference_ms]
    if not probes:
        print(run, "no memory probe in this table"); continue
    rate = float(np.median(probes)) / PROBE_MB
    pred = LatencyPredictor.fit(table)
    line = [f"{run} rate {rate:.4f} ms/MB"]
    for name in ("spaces, all", "spaces, float32, all", "torchvision"):
        rows = dict(groups).get(name)
        if not rows:
            continue
        p = pred.predict_many([r.kernels for r in rows])
        m = np.array([float(pred.on_scale(r.latency_ms, r.reference_ms)) for r in rows])
        x = np.array([extra_ms(pred, r.kernels, rate) for r in rows])
        b, a = p / m - 1, (p + x) / m - 1
        line.append(f"{name}: {stats(b)} -> {stats(a)}")
        if name == "torchvision":
            line.append("exports " + " ".join(f"{r.source.rsplit('_', 1)[0]} {100*u:+.0f}->{100*v:+.0f}"
                                              for r, u, v in zip(rows, b, a)))
    print(" | ".join(line), f"({time.time()-t0:.0f} s)", flush=True)
