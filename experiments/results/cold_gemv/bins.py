"""The exports' 1x1 convolutions on maps of at most 2x2 pixels, in a model against alone, by their weight bytes.

Reads ``in_context_kernels.py``'s JSON (every compared convolution, ONNX Runtime's per-node profile taken side by
side): per bin of weight bytes the ratio of the sums (in model / alone) and the extra time per MB (least squares
through zero); then, per export, the time those layers (>= 64 KB) and the 3x3 convolutions on maps of at most 4x4
take beyond the spaces' own in-model ratio, as a share of the export's node time. Times nothing.

    python experiments/results/cold_gemv/bins.py in_context_kernels_32_intel_fp32 in_context_kernels_32_amd_fp32 > bins.log
"""
import json
import pathlib
import sys

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parents[1]
BINS_KB = ((0, 16), (16, 64), (64, 256), (256, 1000), (1000, 5000))

for name in sys.argv[1:]:
    d = json.loads((RESULTS / f"{name}.json").read_text())
    spaces = [x for x in d["convs"] if x["group"] == "spaces" and not x["fused_add"]]
    ratio = sum(x["in_model_ms"] for x in spaces) / sum(x["alone_ms"] for x in spaces)
    small = [x for x in d["convs"] if x["group"] == "torchvision" and x["kind"] == "dense k1" and x["out_hw"] <= 4
             and not x["fused_add"]]
    print(f"{name}: spaces' convolutions {ratio:.2f}x in model; exports' 1x1 convolutions on <= 2x2 maps: {len(small)}")
    for lo, hi in BINS_KB:
        s = [x for x in small if lo * 1e3 <= x["weight_bytes"] < hi * 1e3]
        if s:
            extra = np.array([x["in_model_ms"] - x["alone_ms"] for x in s])
            mb = np.array([x["weight_bytes"] / 1e6 for x in s])
            ratio_sums = sum(x["in_model_ms"] for x in s) / sum(x["alone_ms"] for x in s)
            print(f"  {lo}-{hi} KB: n {len(s)}, in model / alone {ratio_sums:.2f}, "
                  f"extra {extra @ mb / (mb @ mb):.4f} ms per MB")
    s = [x for x in small if x["weight_bytes"] >= 16e3]
    extra, mb = np.array([x["in_model_ms"] - x["alone_ms"] for x in s]), np.array([x["weight_bytes"] / 1e6 for x in s])
    print(f"  >= 16 KB: extra {extra @ mb / (mb @ mb):.4f} ms per MB (n {len(s)})")
    for m in d["models"]:
        if m["group"] != "torchvision":
            continue
        mine = [x for x in d["convs"] if x["model"] == m["model"]]
        k1 = sum(x["in_model_ms"] - ratio * x["alone_ms"] for x in mine
                 if x["kind"] == "dense k1" and x["out_hw"] <= 4 and x["weight_bytes"] >= 64e3)
        k3 = sum(x["in_model_ms"] - ratio * x["alone_ms"] for x in mine
                 if x["kind"] == "dense k3" and x["out_hw"] <= 16)
        print(f"  {m['model']}: beyond {ratio:.2f}x, share of node time {m['nodes_ms']:.3f} ms: 1x1 on <= 2x2 "
              f"(>= 64 KB) {100 * k1 / m['nodes_ms']:.0f} %, 3x3 on <= 4x4 {100 * k3 / m['nodes_ms']:.0f} %")
