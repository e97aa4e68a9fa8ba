"""Squeeze-and-excitation layers inside a model against the same layers alone (ONNX Runtime's own per-node times).

The spaces have no squeeze-and-excitation (SE) block, so the predictor learns what its layers cost in a model from
the few whole models of ``profile_models`` that have one (MobileNetV3, EfficientNet, RegNetY). Fitted on
``predictor_local_32_memory_variants9`` the SE scale (``scale/b32``) gets a multiplier of 3.6 while the global average
pool beside it is held at 0, and EfficientNet-B0 is predicted +30 %. This experiment asks what those layers really
cost in a model: for SE models exported from torchvision it opens an ONNX Runtime session with ``enable_profiling``
(``ORT_ENABLE_ALL``, 1 thread, as ``in_context_kernels.py`` does) and sums the node times of each part of the SE
blocks (the global average pools, the convolutions on 1x1 maps, the scale ``Mul`` and any gate left as a node of its
own), then times each of those layers' kernels alone (``latency_models.kernel_graph``) the same way, fastest median
over interleaved rounds.

    python experiments/se_in_context.py --input-size 32

Writes ``experiments/results/NAME.json`` and ``.md`` (NAME: ``se_in_context_SIZE``). Run it alone on the machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from in_context_kernels import _CONV_OPS, RESULTS, _models, _profile  # noqa: E402

from latency_models import Kernel, kernel_graph, kernels_from_onnx  # noqa: E402

PARTS = ("global average pool", "conv on 1x1 map", "scale", "gate node")


def _node_part(node: dict) -> str | None:
    """Which part of an SE block a profiled node is (None: not one)."""
    op, ins = node["op"], node["inputs"]
    if op == "GlobalAveragePool":
        return "global average pool"
    if op in _CONV_OPS and len(ins[0]) == 4 and ins[0][2] * ins[0][3] == 1:
        return "conv on 1x1 map"
    if op == "Mul" and len(ins) == 2 and all(len(s) == 4 for s in ins):
        small = [s for s in ins if s[2] * s[3] == 1]
        if len(small) == 1 and ins[0][1] == ins[1][1] and max(s[2] * s[3] for s in ins) > 1:
            return "scale"
    if op in ("Sigmoid", "HardSigmoid") and len(ins[0]) == 4 and ins[0][2] * ins[0][3] == 1:
        return "gate node"
    return None


def _kernel_part(k: Kernel) -> str | None:
    if k.op == "global_avgpool":
        return "global average pool"
    if k.op == "conv" and len(k.input_shape) == 3 and k.input_shape[1] * k.input_shape[2] == 1:
        return "conv on 1x1 map"
    if k.op == "scale":
        return "scale"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--torchvision", default="efficientnet_b0,mobilenet_v3_small,regnet_y_400mf,efficientnet_b1,"
                                              "mobilenet_v3_large,regnet_y_800mf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200, help="profiled runs per session")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.input_size < 16 or args.rounds < 1 or args.runs < 8:
        raise SystemExit("--input-size must be >= 16, --rounds >= 1 and --runs >= 8")
    name = args.name or f"se_in_context_{args.input_size}"
    loads = [loadavg()]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(args.input_size, 0, [s for s in args.torchvision.split(",") if s], pathlib.Path(tmp))
        parts: dict[str, collections.Counter] = {}
        for _, mname, data in models:  # each SE part's kernels and how often the model runs each
            ks, _ = kernels_from_onnx(onnx.load_from_string(data))
            parts[mname] = collections.Counter(k for k in ks if _kernel_part(k))
        distinct = sorted({k for c in parts.values() for k in c}, key=repr)
        best_nodes: dict[str, list[dict]] = {}
        best_run: dict[str, float] = {}
        alone: dict[Kernel, float] = {}
        for _ in range(args.rounds):
            for _, mname, data in models:
                nodes, run_ms = _profile(data, args.runs, tmp)
                if mname in best_nodes:  # fastest median per node over the rounds
                    for a, b in zip(best_nodes[mname], nodes):
                        a["ms"] = min(a["ms"], b["ms"])
                else:
                    best_nodes[mname] = nodes
                best_run[mname] = min(best_run.get(mname, np.inf), run_ms)
            for k in distinct:
                nodes, _ = _profile(kernel_graph(k).SerializeToString(), args.runs, tmp)
                part = _kernel_part(k)
                t = sum(n["ms"] for n in nodes if _node_part(n) == part or (part == "conv on 1x1 map" and
                                                                           n["op"] in ("Sigmoid", "HardSigmoid")))
                alone[k] = min(alone.get(k, np.inf), t)
    loads.append(loadavg())
    rows = []
    for _, mname, _ in models:
        nodes = best_nodes[mname]
        in_model = collections.Counter()
        for n in nodes:
            part = _node_part(n)
            if part:
                in_model[part] += n["ms"]
        by_part = collections.Counter()
        for k, count in parts[mname].items():
            by_part[_kernel_part(k)] += count * alone[k]
        rows.append({"model": mname, "model_run_ms": best_run[mname], "nodes_ms": sum(n["ms"] for n in nodes),
                     "in_model_ms": {p: in_model[p] for p in PARTS},
                     "alone_ms": {p: by_part[p] for p in PARTS if p != "gate node"},
                     "kernels": {p: sum(c for k, c in parts[mname].items() if _kernel_part(k) == p) for p in PARTS}})
    out = {"command": " ".join(["python experiments/se_in_context.py", *sys.argv[1:]]),
           "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "minutes": round((time.time() - started) / 60, 1), "load_average_before": loads[0],
           "load_average_after": loads[1], "input_size": args.input_size, "models": rows}
    write_json(RESULTS / f"{name}.json", out)
    (RESULTS / f"{name}.md").write_text(_markdown(name, out), encoding="utf-8")
    print(_markdown(name, out))


def _markdown(name: str, out: dict) -> str:
    lines = [f"# Squeeze-and-excitation layers in a model against alone ({name})", "",
             f"Command: `{out['command']}`  ",
             f"Finished {out['finished_utc']} after {out['minutes']} min; load average (1/5/15 min) before / after: "
             f"{out['load_average_before']} / {out['load_average_after']} on 2 shared cores. ONNX Runtime's own "
             "per-node times (`enable_profiling`) in the script's process, fastest median over interleaved rounds; "
             "a gate (Sigmoid, HardSigmoid) fused into its convolution counts with the convolution, alone and in the "
             "model.", "",
             "| model | run ms | nodes ms | " + " | ".join(f"{p}: in model / alone ms (n)" for p in PARTS[:3])
             + " | gate nodes ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in out["models"]:
        cells = [f"{r['in_model_ms'][p]:.3f} / {r['alone_ms'][p]:.3f} ({r['kernels'][p]})" for p in PARTS[:3]]
        lines.append(f"| {r['model']} | {r['model_run_ms']:.3f} | {r['nodes_ms']:.3f} | " + " | ".join(cells)
                     + f" | {r['in_model_ms']['gate node']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
