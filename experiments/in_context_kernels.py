"""A convolution inside a whole model against the same convolution timed alone, read from ONNX Runtime's own
per-node profiler (no model of ours in between).

The latency predictor sums the times of kernels each timed alone, in a one-kernel graph
(``latency_models.kernel_graph``, the graph the profiler times), and corrects the sum with terms fitted
on the spaces' whole models. This experiment measures how far the kernel itself moves when it runs inside a
model: for every model it opens an ONNX Runtime session with ``enable_profiling`` (``ORT_ENABLE_ALL``, 1 thread,
the session options of a deployment) in this script's own process (torch loaded, not the timing protocol's
ONNX-Runtime-only worker: the node times are a diagnostic, compared as ratios taken side by side), reads each
node's time, and profiles every distinct convolution of the model alone the same way.
Compared: float32 convolution nodes, matched to their kernel by input, weight and output shapes (a 4-bit layer
and a float16 one also run as a float ``Conv``, behind a ``DequantizeLinear`` or ``Cast``: a shape that such a layer
of the model shares is left out; the spaces' random models are mixed precision, so most of their time is). Both sides are ONNX Runtime's ``*_kernel_time`` of the convolution node (the reorders around a stand-alone one
are separate nodes, not counted). Rounds are interleaved (a model, then its convolutions alone, then the next
model; ``--rounds`` times) and each node keeps its fastest median over the rounds. Convolutions that run with a
residual add fused in (a fourth input) are reported apart: their in-model node does more work.

Reported: per model, the profiled run time, the sum of its nodes, its convolutions in the model and alone
(ratio); pooled over models, the in-model / alone ratio by kind of convolution and output size, for the spaces'
random models (the predictor's calibration data) and for torchvision exports (models outside the spaces); and
whether a context factor fitted on the spaces' convolutions (log ratio on log weight and output bytes) carries
over to the exports. Every compared convolution is in the JSON.

    python experiments/in_context_kernels.py --input-size 128 --n 6 --name in_context_kernels_128
    python experiments/in_context_kernels.py --input-size 128 --n 6 --bits 32 --name in_context_kernels_128_fp32
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from _common import loadavg, write_json  # noqa: E402

import spaces  # noqa: E402
from latency_models import BITS, Kernel, kernel_graph, kernels_from_onnx  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
_CONV_OPS = ("Conv", "FusedConv")
#: Output spatial sizes (height x width) the pooled ratios are grouped by.
_SIZE_BINS = ((1, 16), (17, 64), (65, 256), (257, 1024), (1025, 10**9))


def _profile(model: bytes, runs: int, tmp: str) -> tuple[list[dict], float]:
    """One profiled session: per node (in execution order) its op, shapes and median time in ms over the
    last three quarters of ``runs``; and the median ``model_run`` time in ms."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tmp, "ort")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)  # every input (a scale's graph alone takes two)
    feed = {i.name: rng.random([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32)
            for i in sess.get_inputs()}
    for _ in range(runs):
        sess.run(None, feed)
    path = sess.end_profiling()
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(path)
    times: dict[str, list[float]] = collections.defaultdict(list)
    nodes: dict[str, dict] = {}
    model_run = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            if e["name"] not in nodes:
                a = e["args"]
                nodes[e["name"]] = {"op": a["op_name"], "parameter_bytes": int(a.get("parameter_size", 0)),
                                    "dtype": next(iter(a["input_type_shape"][0])) if a["input_type_shape"] else "",
                                    "inputs": [next(iter(s.values())) for s in a["input_type_shape"]],
                                    "output": next(iter(a["output_type_shape"][0].values()))}
            times[e["name"]].append(e["dur"] / 1000.0)
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            model_run.append(e["dur"] / 1000.0)
    skip = runs // 4
    out = [{**node, "ms": float(np.median(times[name][skip:]))} for name, node in nodes.items()]
    return out, float(np.median(model_run[skip:]))


def _signature(node: dict) -> tuple | None:
    """(cin, h, w, cout, kernel, stride, groups) of a convolution node from its logical shapes."""
    if node["op"] not in _CONV_OPS or len(node["inputs"]) < 2 or len(node["inputs"][0]) != 4 or node["dtype"] != "float":
        return None
    _, cin, h, w = node["inputs"][0]
    cout, cin_g, kh, _ = node["inputs"][1]
    oh = node["output"][2]
    return (cin, h, w, cout, kh, -(-h // oh), cin // cin_g)


def _kernel_signature(k: Kernel) -> tuple:
    cin, h, w = k.input_shape
    return (cin, h, w, k.out_channels or cin, k.kernel_size, k.stride, k.groups)


def _kind(sig: tuple) -> str:
    cin, _, _, cout, ks, _, g = sig
    if g == 1:
        return f"dense k{ks}"
    return f"depthwise k{ks}" if g == cin == cout else f"grouped k{ks}"


def _models(size: int, n: int, tv_names: list[str], folder: pathlib.Path,
            bits: int | None = None) -> list[tuple[str, str, bytes]]:
    """(group, name, ONNX bytes): ``n`` random models per built-in space (their own seed; with ``bits``, every
    layer at that width) and the exports."""
    out = []
    for space_name in ("fbnet", "mobilenet", "shufflenet"):
        space = spaces.get_space(space_name, input_size=size)
        rng = np.random.default_rng([20261202, size])
        for i in range(n):
            model = space.onnx(space.sample(rng) if bits is None else space.sample(rng, bits=(bits,)))
            data = model if isinstance(model, bytes) else (
                pathlib.Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else model.SerializeToString())
            out.append(("spaces", f"{space_name}_{i}", data))
    if tv_names:
        import torch
        import torchvision

        from spaces.compress import export_onnx

        torch.set_num_threads(1)
        for name in tv_names:
            path = folder / f"{name}_{size}.onnx"
            if not path.exists():
                export_onnx(getattr(torchvision.models, name)(weights=None, num_classes=10).eval(), (3, size, size), str(path))
            out.append(("torchvision", name, onnx.load(str(path)).SerializeToString()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--n", type=int, default=6, help="random models per built-in space")
    ap.add_argument("--torchvision", default="mobilenet_v2,mnasnet1_0,mnasnet0_5,shufflenet_v2_x1_0,resnet18,"
                                              "efficientnet_b0,mobilenet_v3_small,regnet_y_400mf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200, help="profiled runs per session")
    ap.add_argument("--bits", type=int, default=None,
                    help="every layer of the spaces' models at this width (32: whole float models); default a random "
                         "width per layer, as the predictor's calibration models drew before 2026-12-03")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.input_size < 16 or args.n < 0 or args.rounds < 1 or args.runs < 8:
        raise SystemExit("--input-size must be >= 16, --n >= 0, --rounds >= 1 and --runs >= 8")
    if args.bits is not None and args.bits not in BITS:
        raise SystemExit(f"--bits {args.bits} is not allowed; allowed: one of {BITS}")
    name = args.name or f"in_context_kernels_{args.input_size}"
    loads = [loadavg()]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(args.input_size, args.n, [s for s in args.torchvision.split(",") if s], pathlib.Path(tmp),
                         args.bits)
        kernels: dict[str, dict[tuple, Kernel]] = {}
        for _, mname, data in models:  # the kernel listing (activation, padding) for each signature
            ks, _ = kernels_from_onnx(onnx.load_from_string(data))
            by_sig: dict[tuple, set[Kernel]] = collections.defaultdict(set)
            for k in ks:
                if k.op == "conv":
                    by_sig[_kernel_signature(k)].add(k)
            # shapes at which every convolution of the model is float32 (an in-model node is matched to its
            # kernel by shape; a 4-bit layer runs as a float Conv behind DequantizeLinear, so a shape shared
            # with a quantised layer is left out). Nodes sharing a shape are compared with one kernel of it
            # (they differ at most by the fused activation).
            kernels[mname] = {sig: min(ks_, key=repr) for sig, ks_ in by_sig.items()
                              if all(k.bits == 32 for k in ks_)}
        best_model: dict[str, tuple[list[dict], float]] = {}
        best_alone: dict[tuple, float] = {}
        for r in range(args.rounds):
            for group, mname, data in models:
                nodes, run_ms = _profile(data, args.runs, tmp)
                old = best_model.get(mname)
                if old is None:
                    best_model[mname] = (nodes, run_ms)
                else:  # fastest median per node over the rounds
                    for a, b in zip(old[0], nodes):
                        a["ms"] = min(a["ms"], b["ms"])
                    best_model[mname] = (old[0], min(old[1], run_ms))
                for sig, k in kernels[mname].items():
                    alone, _ = _profile(kernel_graph(k).SerializeToString(), args.runs, tmp)
                    t = sum(n["ms"] for n in alone if n["op"] in _CONV_OPS)
                    best_alone[sig] = min(best_alone.get(sig, np.inf), t)
            logging.getLogger(__name__).info("round %d done", r + 1)
    loads.append(loadavg())

    per_model = []
    pooled: dict[str, dict[str, list[tuple[float, float]]]] = {"spaces": collections.defaultdict(list),
                                                               "torchvision": collections.defaultdict(list)}
    unmatched = 0
    unmatched_ms = {"spaces": 0.0, "torchvision": 0.0}
    convs = []
    for group, mname, _ in models:
        nodes, run_ms = best_model[mname]
        conv_in = conv_alone = fused_in = fused_alone = 0.0
        for node in nodes:
            sig = _signature(node)
            if sig is None:
                continue
            if sig not in kernels[mname]:
                unmatched += 1
                unmatched_ms[group] += node["ms"]
                continue
            fused = len(node["inputs"]) >= 4  # a residual add fused in
            convs.append({"group": group, "model": mname, "signature": list(sig), "kind": _kind(sig),
                          "out_hw": node["output"][2] * node["output"][3],
                          "weight_bytes": 4 * int(np.prod(node["inputs"][1])),
                          "out_bytes": 4 * int(np.prod(node["output"])), "fused_add": fused,
                          "in_model_ms": node["ms"], "alone_ms": best_alone[sig]})
            if fused:
                fused_in += node["ms"]
                fused_alone += best_alone[sig]
                continue
            conv_in += node["ms"]
            conv_alone += best_alone[sig]
            hw = node["output"][2] * node["output"][3]
            size_bin = next(f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}" for lo, hi in _SIZE_BINS if lo <= hw <= hi)
            pooled[group][f"{_kind(sig)}, out hw {size_bin}"].append((node["ms"], best_alone[sig]))
            pooled[group]["all (no fused add)"].append((node["ms"], best_alone[sig]))
        per_model.append({"group": group, "model": mname, "model_run_ms": run_ms,
                          "nodes_ms": sum(n["ms"] for n in nodes), "nodes": len(nodes),
                          "weight_bytes": sum(n["parameter_bytes"] for n in nodes),
                          "conv_in_model_ms": conv_in, "conv_alone_ms": conv_alone,
                          "conv_ratio": conv_in / conv_alone if conv_alone else None,
                          "conv_fused_add_in_model_ms": fused_in, "conv_fused_add_alone_ms": fused_alone})
    summary = {}
    for group, bins in pooled.items():
        summary[group] = {}
        for label, pairs in sorted(bins.items()):
            a = np.array(pairs)
            summary[group][label] = {"n": len(a), "in_model_ms": float(a[:, 0].sum()), "alone_ms": float(a[:, 1].sum()),
                                     "ratio_of_sums": float(a[:, 0].sum() / a[:, 1].sum()),
                                     "median_ratio": float(np.median(a[:, 0] / a[:, 1]))}
    result = {
        "command": (f"python experiments/in_context_kernels.py --input-size {args.input_size} --n {args.n} "
                    f"--torchvision {args.torchvision} --rounds {args.rounds} --runs {args.runs}"
                    + (f" --bits {args.bits}" if args.bits else "") + f" --name {name}"),
        "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "minutes": (time.time() - started) / 60.0, "load_average_before_after": loads,
        "onnxruntime": ort.__version__, "float_conv_nodes_not_compared": unmatched,
        "float_conv_ms_not_compared": unmatched_ms, "models": per_model, "pooled": summary,
        "transfer": _transfer(convs), "convs": convs,
    }
    write_json(RESULTS / f"{name}.json", result)
    _markdown(name, result)


def _spearman(a: list[float], b: list[float]) -> float:
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def _features(convs: list[dict]) -> np.ndarray:
    """Columns of the in-model / alone log-ratio model: 1, log weight MB, log output MB, depthwise."""
    return np.array([[1.0, np.log(c["weight_bytes"] / 1e6), np.log(c["out_bytes"] / 1e6),
                      float(c["kind"].startswith("depthwise"))] for c in convs])


def _transfer(convs: list[dict]) -> dict:
    """Does a context factor learned on the spaces' convolutions carry over to the exports'? Least squares of
    log(in-model / alone) on :func:`_features`, weighted by the time alone, fitted on the spaces' convolutions
    (no fused add) and applied to the exports'; per export, the error of the convolutions' summed time alone
    and with the factor, against their summed time in the model."""
    plain = [c for c in convs if not c["fused_add"]]
    fit = [c for c in plain if c["group"] == "spaces"]
    out: dict = {"fitted_on": len(fit)}
    if len(fit) < 8:
        return out
    x = _features(fit)
    y = np.log([c["in_model_ms"] / c["alone_ms"] for c in fit])
    w = np.sqrt([c["alone_ms"] for c in fit])
    coef = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
    out["coefficients"] = dict(zip(("intercept", "log_weight_mb", "log_out_mb", "depthwise"), map(float, coef)))
    for group in ("spaces", "torchvision"):
        cs = [c for c in plain if c["group"] == group]
        if len(cs) >= 3:
            out[f"spearman_ratio_weight_{group}"] = _spearman([c["weight_bytes"] for c in cs],
                                                             [c["in_model_ms"] / c["alone_ms"] for c in cs])
    per_model = []
    for mname in dict.fromkeys(c["model"] for c in plain if c["group"] == "torchvision"):
        cs = [c for c in plain if c["model"] == mname]
        inside = sum(c["in_model_ms"] for c in cs)
        alone = sum(c["alone_ms"] for c in cs)
        corrected = float(np.sum(np.array([c["alone_ms"] for c in cs]) * np.exp(_features(cs) @ coef)))
        per_model.append({"model": mname, "convs": len(cs), "in_model_ms": inside,
                          "alone_error": alone / inside - 1.0, "corrected_error": corrected / inside - 1.0})
    out["torchvision"] = per_model
    return out


def _markdown(name: str, r: dict) -> None:
    lines = [f"# A convolution inside a model against the same convolution alone ({name})", "",
             f"Command: `{r['command']}`  ",
             f"Finished {r['finished_utc']} after {r['minutes']:.1f} min; ONNX Runtime {r['onnxruntime']}; load average "
             f"(1/5/15 min) before / after: {r['load_average_before_after'][0]} / {r['load_average_before_after'][1]} "
             f"on 2 shared cores. Times are ONNX Runtime's own per-node profile (`enable_profiling`) in the script's "
             f"process, fastest median over interleaved rounds.", "",
             "| group | model | weights MB | run ms | nodes (sum ms) | convs in model ms | same convs alone ms | ratio | with fused add: in model / alone ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in r["models"]:
        ratio = f"{m['conv_ratio']:.2f}" if m["conv_ratio"] else "-"
        lines.append(f"| {m['group']} | {m['model']} | {m['weight_bytes'] / 1e6:.2f} | {m['model_run_ms']:.3f} | {m['nodes']} ({m['nodes_ms']:.3f}) | "
                     f"{m['conv_in_model_ms']:.3f} | {m['conv_alone_ms']:.3f} | {ratio} | "
                     f"{m['conv_fused_add_in_model_ms']:.3f} / {m['conv_fused_add_alone_ms']:.3f} |")
    w = [m["weight_bytes"] for m in r["models"] if m["conv_ratio"]]
    q = [m["conv_ratio"] for m in r["models"] if m["conv_ratio"]]
    lines += ["", f"Spearman correlation of the models' convolution ratio with their weight bytes: "
                  f"{_spearman(w, q):.2f} ({len(w)} models)."]
    lines += ["", f"Float convolution nodes left out (their shape is shared with a 4-, 8- or 16-bit layer of the model, "
                  f"whose weights also reach a float Conv node, or does not read back as one of its kernels, e.g. "
                  f"channels padded to the block): "
                  f"{r['float_conv_nodes_not_compared']}, "
                  + ", ".join(f"{g} {ms:.3f} ms" for g, ms in r["float_conv_ms_not_compared"].items()) + "."]
    t = r["transfer"]
    if "coefficients" in t:
        c = t["coefficients"]
        lines += ["", f"A context factor learned on the spaces' {t['fitted_on']} convolutions (least squares of "
                      f"log(in model / alone), weighted by the time alone): intercept {c['intercept']:+.3f}, "
                      f"{c['log_weight_mb']:+.3f} per log weight MB, {c['log_out_mb']:+.3f} per log output MB, "
                      f"{c['depthwise']:+.3f} if depthwise. Spearman of a convolution's ratio with its own weight "
                      f"bytes: spaces {t.get('spearman_ratio_weight_spaces', float('nan')):.2f}, torchvision "
                      f"{t.get('spearman_ratio_weight_torchvision', float('nan')):.2f}. Applied to the exports "
                      f"(error of their convolutions' summed time against the same convolutions in the model):", "",
                  "| export | convolutions | in model ms | alone: error | with the spaces' factor: error |",
                  "| --- | --- | --- | --- | --- |"]
        for m in t["torchvision"]:
            lines.append(f"| {m['model']} | {m['convs']} | {m['in_model_ms']:.3f} | {100 * m['alone_error']:+.1f} % | "
                         f"{100 * m['corrected_error']:+.1f} % |")
    lines += ["", "Pooled over the models of each group (convolutions without a fused add): in-model / alone.", "",
              "| group | convolutions | n | in model ms | alone ms | ratio of sums | median ratio |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for group, bins in r["pooled"].items():
        for label, s in bins.items():
            lines.append(f"| {group} | {label} | {s['n']} | {s['in_model_ms']:.3f} | {s['alone_ms']:.3f} | "
                         f"{s['ratio_of_sums']:.2f} | {s['median_ratio']:.2f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
