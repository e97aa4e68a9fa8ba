"""A channel shuffle of what int8 layers wrote: what ONNX Runtime runs, what it costs, and the kernel that times it.

ONNX Runtime runs an int8 convolution as ``QLinearConv`` on uint8 channels-last (NHWC) tensors. When a channel
shuffle reads such a tensor (after an FBNet grouped 1x1 convolution at 8 bits, or after a ShuffleNet down-sampling
unit whose two branches end in int8 convolutions: the export quantises their concatenation), its layout pass
merges the shuffle's transpose with the layout's into one strided uint8 ``Transpose`` of (1, H, W, g, C/g) to
(1, C/g, g, H, W). Until 2026-12-05 the kernel lists called every shuffle a float32 one and the profiler timed it
as such, several times too fast for it. Now such a shuffle is listed at 8 bits (``spaces._plan.shuffle_bits``,
``kernels_from_onnx``) and its kernel graph runs that transpose (``latency_models.kernel_graph``).

This experiment checks them on the held-out models of a committed ``predictor_local.py`` run (its
``held.json`` candidates, rebuilt and listed by the current code), in this script's process (torch loaded, not the
protocol's worker: a diagnosis, compared side by side):

1. the listing against ONNX Runtime: every shuffle of every model, matched by shape to the 5-D ``Transpose`` nodes
   of its per-node profile (``enable_profiling``, ``ORT_ENABLE_ALL``, 1 thread), counted by the bits it is listed at
   and the node's element type and layout, with the node's median time per element;
2. the kernel graphs against the model's node: the distinct 8-bit shuffles of those models timed alone, as the
   float32 kernel graph (what was profiled before) and as the 8-bit one (interleaved rounds, the 0.2 quantile of
   each round's runs, the median over rounds), per element, beside the in-model node;
3. what the shuffles cost whole models: the ``--models`` models with the most 8-bit shuffle elements timed as
   exported and with every shuffle's transpose made the identity permutation (the same nodes, no shuffling),
   interleaved; the difference beside the 8-bit kernel graphs' stand-alone time;
4. what the listing buys the predictor (fits only): ``--table`` (profiled with the 8-bit shuffles listed) fitted
   as it is and as it would have been before (its model rows' shuffles at 32 bits, its 8-bit shuffle kernel rows
   dropped), each scored on the held-out random-width models of the ``--held`` runs (their timings; the same
   candidates), listed the same way as the fit.

    python experiments/int8_shuffle.py --run predictor_local_32_intel_retime2 \\
        --table predictor_local_32_intel_shuffle8 \\
        --held predictor_local_32_intel_retime2,predictor_local_32_intel_shuffle8 --name int8_shuffle

Writes ``experiments/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from in_context_kernels import _profile  # noqa: E402
from predictor_local import RESULTS, _read  # noqa: E402

from latency_models import (Kernel, LatencyPredictor, LatencyTable, accuracy_metrics, cpu_name,  # noqa: E402
                            kernel_graph)
from spaces import Candidate, get_space  # noqa: E402

_SHUFFLE_PERM = [0, 2, 1, 3, 4]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _interleaved_ms(models: list[onnx.ModelProto], rounds: int, runs: int) -> list[float]:
    """Per model, the median over ``rounds`` interleaved rounds of the 0.2 quantile of ``runs`` timed runs."""
    sessions = [_session(m) for m in models]
    feeds = []
    for s in sessions:
        inp = s.get_inputs()[0]
        feeds.append({inp.name: np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in inp.shape],
                                                                 dtype=np.float32)})
    per: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for s, feed, out in zip(sessions, feeds, per):
            for _ in range(10):
                s.run(None, feed)
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                ts.append(time.perf_counter() - t0)
            out.append(float(np.quantile(ts, 0.2)) * 1e3)
    return [float(np.median(v)) for v in per]


def _unshuffled(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every channel shuffle's transpose made the identity permutation (same nodes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        for a in node.attribute:
            if node.op_type == "Transpose" and a.name == "perm" and list(a.ints) == _SHUFFLE_PERM:
                a.ints[:] = [0, 1, 2, 3, 4]
    return out


def _transposes(nodes: list[dict]) -> list[dict]:
    """The profile's 5-D transposes, in execution order: input shape, element type, ns per element."""
    return [{"shape": n["inputs"][0], "dtype": n["dtype"], "ns_per_element": n["ms"] * 1e6 / math.prod(n["inputs"][0])}
            for n in nodes if n["op"] == "Transpose" and n["inputs"] and len(n["inputs"][0]) == 5]


def _match(k: Kernel, found: list[dict]) -> dict | None:
    """The first unmatched transpose of shuffle ``k``: (1, g, C/g, H, W) in NCHW, (1, H, W, g, C/g) channels-last."""
    (c, h, w), g = k.input_shape, k.groups
    for node in found:
        if node.get("kernel") is None and node["shape"] in ([1, g, c // g, h, w], [1, h, w, g, c // g]):
            node["kernel"] = k
            node["layout"] = "NCHW" if node["shape"] == [1, g, c // g, h, w] else "NHWC"
            return node
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="predictor_local_32_intel_retime2",
                    help="a predictor_local.py run committed under experiments/results/ (its held-out candidates)")
    ap.add_argument("--profile-runs", type=int, default=300)
    ap.add_argument("--kernels", type=int, default=8, help="distinct 8-bit shuffles timed alone")
    ap.add_argument("--models", type=int, default=6, help="models timed with and without their shuffles")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--table", default="predictor_local_32_intel_shuffle8",
                    help="a run whose table was profiled with the 8-bit shuffles listed (part 4, fits only)")
    ap.add_argument("--held", default="predictor_local_32_intel_retime2,predictor_local_32_intel_shuffle8",
                    help="runs whose held-out timings part 4 scores on (the same candidates, listed now)")
    ap.add_argument("--name", default="int8_shuffle")
    args = ap.parse_args()
    started, load_before = dt.datetime.now(dt.timezone.utc), loadavg()
    rows = [r for r in _read(RESULTS / args.run, "held.json").model_rows if r.candidate]
    models, seen = [], collections.Counter()
    for r in rows:
        seen[r.source] += 1
        c = Candidate.from_dict(r.candidate)
        space = get_space(c.space, **c.options)
        models.append((f"{r.source} #{seen[r.source] - 1}", space.onnx(c), list(space.kernels(c))))
    # 1. the listing against ONNX Runtime's nodes
    census: dict = collections.defaultdict(list)
    in_model: dict = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for source, model, kernels in models:
            shuffles = [k for k in kernels if k.op == "channel_shuffle"]
            if not shuffles:
                continue
            nodes, _ = _profile(model.SerializeToString(), args.profile_runs, tmp)
            found = _transposes(nodes)
            for k in shuffles:
                node = _match(k, found)
                key = (source.split(" ")[0], k.bits, *((node["dtype"], node["layout"]) if node else ("not found", "-")))
                census[key].append(node["ns_per_element"] if node else float("nan"))
                if node and k.bits == 8:
                    in_model[k].append(node["ns_per_element"])
            print(f"{source}: {len(shuffles)} shuffles profiled", flush=True)
    listing = [{"space": s, "listed_bits": b, "node_dtype": d, "node_layout": lay, "shuffles": len(v),
                "median_ns_per_element": float(np.nanmedian(v)) if len(v) else None}
               for (s, b, d, lay), v in sorted(census.items(), key=str)]
    # 2. the kernel graphs against the in-model node
    chosen = sorted(in_model, key=lambda k: -math.prod(k.input_shape))[:args.kernels]
    graphs = []
    for k in chosen:
        graphs += [kernel_graph(Kernel("channel_shuffle", k.input_shape, groups=k.groups)), kernel_graph(k)]
    ms = _interleaved_ms(graphs, args.rounds, args.runs)
    alone = []
    for j, k in enumerate(chosen):
        n = math.prod(k.input_shape)
        alone.append({"input_shape": list(k.input_shape), "float32_graph_ms": ms[2 * j], "int8_graph_ms": ms[2 * j + 1],
                      "float32_graph_ns_per_element": ms[2 * j] * 1e6 / n,
                      "int8_graph_ns_per_element": ms[2 * j + 1] * 1e6 / n,
                      "in_model_node_ns_per_element": float(np.median(in_model[k]))})
        print(f"shuffle {k.input_shape}: float32 graph {ms[2 * j] * 1e3:.1f} us, "
              f"8-bit graph {ms[2 * j + 1] * 1e3:.1f} us",
              flush=True)
    # 3. whole models with and without their shuffles
    def mel8(kernels: list[Kernel]) -> float:
        return sum(math.prod(k.input_shape) for k in kernels if k.op == "channel_shuffle" and k.bits == 8) / 1e6

    ranked = sorted(range(len(models)), key=lambda i: -mel8(models[i][2]))[:args.models]
    pair = [m for i in ranked for m in (models[i][1], _unshuffled(models[i][1]))]
    ms = _interleaved_ms(pair, args.rounds, args.runs)
    shuffles_alone = _interleaved_ms([kernel_graph(k) for i in ranked for k in models[i][2]
                                      if k.op == "channel_shuffle"], 3, args.runs)
    whole, pos = [], 0
    for j, i in enumerate(ranked):
        source, _, kernels = models[i]
        n = sum(k.op == "channel_shuffle" for k in kernels)
        whole.append({"model": source, "shuffles": n,
                      "int8_shuffles": sum(k.op == "channel_shuffle" and k.bits == 8 for k in kernels),
                      "int8_shuffle_melements": mel8(kernels), "model_ms": ms[2 * j], "unshuffled_ms": ms[2 * j + 1],
                      "shuffles_ms": ms[2 * j] - ms[2 * j + 1],
                      "kernel_graphs_ms": float(sum(shuffles_alone[pos:pos + n]))})
        pos += n
        print(f"{source}: {ms[2 * j]:.3f} ms, unshuffled {ms[2 * j + 1]:.3f} ms", flush=True)
    listed = _listing_paired(args.table, args.held.split(","))
    out = {"command": "python " + " ".join(sys.argv), "run": args.run, "cpu": cpu_name(),
           "onnxruntime": ort.__version__, "started_utc": started.replace(microsecond=0).isoformat(),
           "listing": listing, "kernel_graphs": alone, "whole_models": whole, "table": args.table, "paired": listed,
           "load_average_before_after": [load_before, loadavg()],
           "minutes": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)}
    write_json(RESULTS / f"{args.name}.json", out)
    _markdown(args.name, out)


def _as_before(kernels: Sequence[Kernel]) -> tuple[Kernel, ...]:
    """The kernels as they were listed before the 8-bit shuffles: every shuffle at 32 bits."""
    return tuple(dataclasses.replace(k, bits=32) if k.op == "channel_shuffle" else k for k in kernels)


def _listing_paired(table_name: str, held_names: list[str]) -> list[dict]:
    """4. The same table fitted with the shuffles listed as now (its 8-bit shuffle kernel rows kept) and as before
    (model rows' shuffles at 32 bits, those kernel rows dropped), each scored on the held-out random-width models of
    ``held_names`` (kernels listed the same way as the fit), on the predictor's scale."""
    table = _read(RESULTS / table_name, "table.json")
    int8 = [r for r in table.kernel_rows if r.kernel.op == "channel_shuffle" and r.kernel.bits == 8]
    before = LatencyTable(device=table.device, protocol=table.protocol,
                          kernel_rows=[r for r in table.kernel_rows if r not in int8],
                          model_rows=[dataclasses.replace(r, kernels=_as_before(r.kernels)) for r in table.model_rows])

    def now(row: Any) -> list[Kernel]:
        c = Candidate.from_dict(row.candidate)
        return list(get_space(c.space, **c.options).kernels(c))

    fits = {"listed before": (LatencyPredictor.fit(before), lambda row: list(_as_before(row.kernels))),
            "listed now": (LatencyPredictor.fit(table), now)}
    out = []
    for held in held_names:
        rows = _read(RESULTS / held, "held.json").model_rows
        for label, (pred, lister) in fits.items():
            for group in ("fbnet", "mobilenet", "shufflenet", "spaces, all"):
                rs = [r for r in rows if group == "spaces, all" or r.source == group]
                measured = pred.on_scale(np.array([r.latency_ms for r in rs]), np.array([r.reference_ms for r in rs]))
                m = accuracy_metrics(pred.predict_many([lister(r) for r in rs]), measured)
                out.append({"timing": held, "fit": label, "group": group, "n": len(rs), "int8_shuffle_kernel_rows":
                            len(int8) if label == "listed now" else 0, **m})
    return out


def _markdown(name: str, r: dict) -> None:
    lines = [f"# A channel shuffle of what int8 layers wrote ({name})", "",
             f"Command: `{r['command']}`  ",
             f"Started {r['started_utc']}, {r['minutes']} min, {r['cpu']}, ONNX Runtime {r['onnxruntime']}; held-out "
             f"models of `{r['run']}`; load average (1/5/15 min) before / after: {r['load_average_before_after'][0]} / "
             f"{r['load_average_before_after'][1]} on 2 shared cores. All times in this script's process (a diagnosis, "
             "not the protocol): compare side by side.", "",
             "## 1. Listed bits against what ONNX Runtime runs", "",
             "Every shuffle of every held-out model, matched by shape to a 5-D `Transpose` of the model's per-node "
             "profile (its time includes the profiler's own per-node cost, about 2 us).", "",
             "| space | listed at | node type | node layout | shuffles | median ns per element |",
             "| --- | --- | --- | --- | --- | --- |"]
    for x in r["listing"]:
        v = x["median_ns_per_element"]
        lines.append(f"| {x['space']} | {x['listed_bits']} bits | {x['node_dtype']} | {x['node_layout']} | "
                     f"{x['shuffles']} | {'' if v is None or v != v else f'{v:.2f}'} |")
    lines += ["", "## 2. Kernel graphs against the model's node", "",
              "| input (C, H, W) | float32 graph us | 8-bit graph us | float32 graph ns/el | 8-bit graph ns/el | "
              "in-model node ns/el |", "| --- | --- | --- | --- | --- | --- |"]
    for x in r["kernel_graphs"]:
        lines.append(f"| {tuple(x['input_shape'])} | {x['float32_graph_ms'] * 1e3:.1f} | "
                     f"{x['int8_graph_ms'] * 1e3:.1f} | "
                     f"{x['float32_graph_ns_per_element']:.2f} | {x['int8_graph_ns_per_element']:.2f} | "
                     f"{x['in_model_node_ns_per_element']:.2f} |")
    lines += ["", "## 3. What the shuffles cost whole models", "",
              "The same model with every shuffle's transpose made the identity (same nodes); the shuffles' kernel "
              "graphs (as now listed) timed alone and summed.", "",
              "| model | shuffles (8-bit) | 8-bit Melements | model ms | unshuffled ms | shuffles ms | "
              "kernel graphs ms |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for x in r["whole_models"]:
        lines.append(f"| {x['model']} | {x['shuffles']} ({x['int8_shuffles']}) | "
                     f"{x['int8_shuffle_melements']:.4f} | {x['model_ms']:.3f} | {x['unshuffled_ms']:.3f} | "
                     f"{x['shuffles_ms']:.3f} | {x['kernel_graphs_ms']:.3f} |")
    lines += ["", "## 4. The listing, paired: one table, the same timings (fits only)", "",
              f"`{r['table']}` fitted with the shuffles listed as now and as before (its model rows' shuffles at 32 "
              "bits, "
              "its 8-bit shuffle kernel rows dropped), scored on held-out random-width models listed the same way, on "
              "the predictor's scale.", "",
              "| held-out timing | fit | group | n | within ±5 % | within ±10 % | RMSPE |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for x in r["paired"]:
        lines.append(f"| {x['timing']} | {x['fit']} | {x['group']} | {x['n']} | {100 * x['within_5']:.1f}% | "
                     f"{100 * x['within_10']:.1f}% | {100 * x['rmspe']:.1f}% |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
