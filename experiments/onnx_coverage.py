"""Which torchvision classification CNNs ``latency_models.kernels_from_onnx`` reads whole (no unknown operator).

Exports every model of the families below (``weights=None``, 10 classes) at ``--size`` with the project's own
``spaces.compress.export_onnx`` and lists the kernels read and the operators left unknown.

    python experiments/onnx_coverage.py --size 64

Writes ``experiments/results/onnx_coverage.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
FAMILIES = r"(mobilenet|shufflenet|mnasnet|resnet|resnext|wide_resnet|regnet|efficientnet|squeezenet|googlenet|densenet|alexnet|vgg)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    args = ap.parse_args()
    import torch
    import torchvision

    from latency_models import kernels_from_onnx
    from spaces.compress import export_onnx

    torch.set_num_threads(1)
    names = [n for n in torchvision.models.list_models(module=torchvision.models) if re.match(FAMILIES, n)]
    rows = []
    for name in names:
        kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        model = getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs).eval()
        size_bytes = 4 * sum(p.numel() for p in model.parameters())
        if size_bytes >= 2**31:  # protobuf's limit: one ONNX file without external data cannot hold it
            rows.append({"model": name, "error": f"{size_bytes / 2**30:.1f} GiB of float32 weights: over the 2 GiB "
                                                 "of one ONNX file (protobuf)"})
            continue
        proto = export_onnx(model, (3, args.size, args.size))
        kernels, unknown = kernels_from_onnx(proto)
        ops = collections.Counter(k.op for k in kernels)
        rows.append({"model": name, "kernels": len(kernels), "unknown": unknown, "ops": dict(sorted(ops.items()))})
        print(name, len(kernels), unknown, flush=True)
    whole = [r for r in rows if r.get("unknown") == []]
    out = {"command": f"python experiments/onnx_coverage.py --size {args.size}", "size": args.size,
           "models": len(rows), "read_whole": len(whole), "rows": rows}
    (RESULTS / "onnx_coverage.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# `kernels_from_onnx` on torchvision CNNs at {args.size}x{args.size}", "",
             f"Command: `{out['command']}`. Read whole (no unknown operator): **{len(whole)} of {len(rows)}**.", "",
             "| model | kernels | unknown operators | kernels by op |", "| --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | - | not read: {r['error']} | |")
        else:
            lines.append(f"| {r['model']} | {r['kernels']} | {', '.join(r['unknown']) or 'none'} | "
                         f"{', '.join(f'{k} {v}' for k, v in r['ops'].items())} |")
    (RESULTS / "onnx_coverage.md").write_text("\n".join(lines) + "\n")
    print(f"read whole: {len(whole)} of {len(rows)}")


if __name__ == "__main__":
    main()
