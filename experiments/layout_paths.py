"""Kernels on ONNX Runtime's plain NCHW path, and the neighbours the kernel model corrects them from.

On x86 ONNX Runtime runs float convolutions in its channel-blocked layout (NCHWc) only when their channels fit
it (``latency_models._layout``): a grouped convolution needs a whole block per group (16 channels here), a
depthwise one a multiple of the alignment (4). Those that do not run a plain NCHW implementation, which at equal
MACs is several times slower here (RegNetY-400MF's grouped 3x3 convolutions, 8 channels per group). The
kernel model corrects its per-family physical fit from the nearest measured kernels of the family; before this
experiment the neighbours came from either path, so the few plain-path rows of a family (ResNeXt-50's 4- and
8-channel groups) were drowned by the blocked ones, and a single plain-path row (a depthwise convolution at 122
channels) carried its correction to blocked kernels beside it. Now a neighbour on the other path counts only
when the kernel's own path has none near (``KernelModel(..., nchwc=...)``).

This experiment times one-kernel graphs: RegNetY-400MF's grouped convolutions at the table's input size and depthwise
3x3 convolutions at 16x16 around ShuffleNetV2 1.0's widths, under the protocol
(``latency_models.measure_interleaved``: an ONNX-Runtime-only worker, interleaved blocks, 1 thread), put on the
committed predictor's scale with the reference timed beside each, against the kernel model of the committed
table with and without the path separation (leave-one-out: a kernel the table measured is predicted without
its own row).

Whole models, fitted both ways on committed tables, are scored by the record
``experiments/results/layout_paths/evaluate.py`` (it switches the kernel model's internals, so it is not an
experiment of the public API).

    python experiments/layout_paths.py --table predictor_local_128_maxpool --name layout_paths
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _torchvision  # noqa: E402

from latency_models import (Kernel, KernelModel, LatencyPredictor, kernel_graph, kernels_from_onnx,  # noqa: E402
                            measure_interleaved, plain_path)


def _kernels(size: int, tmp: pathlib.Path) -> list[tuple[str, Kernel]]:
    path = _torchvision(["regnet_y_400mf"], size, tmp)[0]
    ks, _ = kernels_from_onnx(str(path))
    grouped = list(dict.fromkeys(k for k in ks if k.op == "conv" and 1 < k.groups < k.input_shape[0]))
    dw = [Kernel("conv", (c, 16, 16), out_channels=c, kernel_size=3, groups=c)
          for c in (112, 116, 120, 122, 124, 128, 232, 464)]
    return [("regnet_y_400mf grouped", k) for k in grouped] + [("depthwise 3x3", k) for k in dw]


def part1(table_name: str, rounds: int) -> dict:
    pred = LatencyPredictor.load(RESULTS / table_name / "table.predictor.json")
    nchwc = pred.kernel_model.nchwc
    size = int(pred.protocol["space_options"]["input_size"])
    with tempfile.TemporaryDirectory() as tmp:
        kernels = _kernels(size, pathlib.Path(tmp))
    graphs = [kernel_graph(k) for _, k in kernels]
    runs = [measure_interleaved(graphs) for _ in range(rounds)]
    km = pred.kernel_model  # the predictor hands it the table's layout: neighbours by path
    before = KernelModel(km.kernels, km.latencies_ms)  # the same rows without the layout: neighbours from either path
    with_gap = km.predict([k for _, k in kernels], exact=False)
    without = before.predict([k for _, k in kernels], exact=False)
    rows = []
    for i, (group, k) in enumerate(kernels):
        on_scale = [float(pred.on_scale(r[i].latency_ms, r[i].reference_ms)) for r in runs]
        m = float(np.median(on_scale))
        rows.append({"group": group, "kernel": k.to_dict(), "plain_path": plain_path(k, nchwc),
                     "in_table": k.key() in km.exact,
                     "measured_ms": m, "measured_by_round_ms": on_scale,
                     "predicted_ms": float(with_gap[i]), "predicted_before_ms": float(without[i])})
    return {"table": table_name, "nchwc": list(nchwc) if nchwc else None, "rounds": rounds, "kernels": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="predictor_local_128_maxpool",
                    help="the predictor_local.py run whose committed predictor and input size are used")
    ap.add_argument("--rounds", type=int, default=5, help="worker runs, each timing every graph")
    ap.add_argument("--name", default="layout_paths")
    args = ap.parse_args()
    started, load_before = dt.datetime.now(dt.timezone.utc), loadavg()
    out = {"command": "python " + " ".join(sys.argv), "started_utc": started.replace(microsecond=0).isoformat()}
    out["part1"] = part1(args.table, args.rounds)
    out["load_average_before_after"] = [load_before, loadavg()]
    out["minutes"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)
    write_json(RESULTS / f"{args.name}.json", out)
    _markdown(args.name, out)


def _markdown(name: str, r: dict) -> None:
    p1 = r["part1"]
    lines = [f"# Plain-path kernels and the kernel model's neighbours ({name})", "",
             f"Command: `{r['command']}`  ",
             f"Started {r['started_utc']}, {r['minutes']} min; load average (1/5/15 min) before / after: "
             f"{r['load_average_before_after'][0]} / {r['load_average_before_after'][1]} on 2 shared cores; ONNX "
             f"Runtime layout (block, alignment) {p1['nchwc']}.", "",
             f"One-kernel graphs under the protocol ({p1['rounds']} worker runs, median), against the kernel model of "
             f"`{p1['table']}` before (the same rows without the layout) and after (leave-one-out; ms on the predictor's "
             "scale):", "",
             "| kernels | input (C, H, W) | groups | stride | path | in table | measured ms | before: predicted, ratio | "
             "after: predicted, ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in p1["kernels"]:
        kd = k["kernel"]
        lines.append(f"| {k['group']} | {tuple(kd['input_shape'])} | {kd.get('groups', 1)} | {kd.get('stride', 1)} | "
                     f"{'plain' if k['plain_path'] else 'blocked'} | {'yes' if k['in_table'] else 'no'} | "
                     f"{k['measured_ms']:.4f} | "
                     f"{k['predicted_before_ms']:.4f}, {k['predicted_before_ms'] / k['measured_ms']:.2f} | "
                     f"{k['predicted_ms']:.4f}, {k['predicted_ms'] / k['measured_ms']:.2f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
