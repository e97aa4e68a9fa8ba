"""Weight-heavy torchvision exports at 32 px timed now, beside the protocol's reference and memory probe, to set
against their committed timings of 2026-12-05 (``predictor_local_32_memory_variants9``: held-out exports and the
table's outside models, timed in a calm memory state: the probe of its rows 0.24-0.27 ms from the 10th to the
90th percentile).

Each round is one ``latency_models.measure_interleaved`` job over every model (the deployed protocol: an
ONNX-Runtime-only worker, 1 thread), the order reversed every other round; printed per round: each latency, the
job's reference and memory probe; then per model the median and the fastest round.

    python experiments/results/memory_swing_32/heavy_now.py resnet18,resnet34,resnext50_32x4d,efficientnet_b1,efficientnet_b0,mobilenet_v2,regnet_y_400mf,shufflenet_v2_x1_0 8

(alone on the machine; output in ``heavy_now.log``).
"""
import pathlib
import sys

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
from predictor_local import _torchvision  # noqa: E402

from latency_models import kernels_from_onnx, measure_interleaved  # noqa: E402
from latency_models._features import physical  # noqa: E402

names = sys.argv[1].split(",")
folder = pathlib.Path("/tmp/karumi_heavy_now")
folder.mkdir(parents=True, exist_ok=True)
paths = _torchvision(names, 32, folder)
w = {n: float(physical(kernels_from_onnx(str(p))[0])[:, 2].sum()) for n, p in zip(names, paths)}
res: dict[str, list] = {n: [] for n in names}
for rep in range(int(sys.argv[2])):
    order, nm = (paths, names) if rep % 2 == 0 else (paths[::-1], names[::-1])
    ts = measure_interleaved(order)
    for n, t in zip(nm, ts):
        res[n].append((t.latency_ms, t.reference_ms))
    print(rep, [(n, round(t.latency_ms, 3)) for n, t in zip(nm, ts)], "reference", round(ts[0].reference_ms, 4),
          "memory probe", round(ts[0].memory_reference_ms, 3), flush=True)
for n in names:
    a = np.array(res[n])
    print(f"{n:22s} {w[n]:6.1f} MB of weights, median {np.median(a[:, 0]):.3f} ms, fastest {a[:, 0].min():.3f} ms, "
          f"reference median {np.median(a[:, 1]):.4f} ms")
