"""Which workloads follow the reference's fast and slow stretches, and which do not?

The protocol (``karumi-interleaved/3``) times a reference model beside every measurement and puts a row on the
table's scale by ``(table reference / row reference) ** exponent``, the exponent chosen by the fit's leave-one-out
error. On the Intel Xeon behind this VM that choice is fragile (0 or 0.5 on the same 32-px table, the held-out
score depending on it) and the reference sits in one of two levels, about 0.242 or 0.270 ms, from one second to
the next. This experiment asks what moves with it: the reference's five layers timed alone, and torchvision
exports at two input sizes.

Each job is a fresh protocol worker (``latency_models.measure_interleaved``: ONNX-Runtime-only process,
interleaved blocks, 20 % quantile, 1 thread) timing every workload once with no settling (``settle_attempts=1``),
so a job lands in whichever level the machine is in. Jobs are split into the reference's fast and slow level at
the widest gap between its sorted timings (reported; when the gap is under ``--min-gap`` of the reference there
is one level and no split). Reported per workload: the median latency in each level, their ratio, and the slope
of log latency on log reference over all jobs (1: moves as the reference does, 0: not at all).

    python experiments/reference_modes.py --jobs 80 --name reference_modes

Writes ``experiments/results/NAME.json`` and ``.md``; run it alone on the machine.
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
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import _torchvision  # noqa: E402

from latency_models import cpu_name, measure_interleaved, reference_model  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MODELS = (("shufflenet_v2_x0_5", 32), ("mnasnet0_5", 32), ("mobilenet_v2", 32), ("resnet18", 32),
          ("mobilenet_v2", 128), ("resnet18", 128))


def reference_layers(folder: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """Each convolution of the reference model (with its ReLU) as a model of its own, fed the shape it sees inside
    the reference; named by (input channels, output channels, kernel, stride, groups, input side)."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    ref = shape_inference.infer_shapes(reference_model())
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*ref.graph.input, *ref.graph.value_info)}
    inits = {i.name: i for i in ref.graph.initializer}
    out = []
    for node in ref.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = shapes[node.input[0]]
        w = inits[node.input[1]]
        name = (f"reference {node.output[0]}: {shape[1]}->{w.dims[0]} k{attrs['kernel_shape'][0]} "
                f"s{attrs['strides'][0]} g{attrs.get('group', 1)} at {shape[2]}x{shape[3]}")
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", node.input[1], node.input[2]], ["c"], **attrs),
             helper.make_node("Relu", ["c"], ["y"])], node.output[0],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes[node.output[0]])],
            [inits[node.input[1]], inits[node.input[2]]])
        model = helper.make_model(graph, opset_imports=ref.opset_import)
        model.ir_version = ref.ir_version
        onnx.checker.check_model(model)
        path = folder / f"{node.output[0]}.onnx"
        path.write_bytes(model.SerializeToString())
        out.append((name, path))
    return out


def _split(ref: np.ndarray, min_gap: float) -> tuple[float | None, float]:
    """The threshold at the widest gap between the sorted reference timings (None when that gap is under
    ``min_gap`` of the median reference: one level), and the gap as a fraction of the median."""
    s = np.sort(ref)
    gaps = np.diff(s)
    i = int(np.argmax(gaps))
    gap = float(gaps[i] / np.median(ref))
    return (float((s[i] + s[i + 1]) / 2) if gap >= min_gap else None), gap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=80, help="protocol jobs, each timing every workload once")
    ap.add_argument("--min-gap", type=float, default=0.03, help="the smallest gap between the reference's sorted "
                                                                "timings, as a fraction, that splits two levels")
    ap.add_argument("--name", default="reference_modes")
    args = ap.parse_args()
    if args.jobs < 10:
        ap.error(f"--jobs {args.jobs}; allowed: at least 10")
    if not 0 < args.min_gap < 1:
        ap.error(f"--min-gap {args.min_gap}; allowed: a fraction in (0, 1)")
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load = [loadavg()]
    with tempfile.TemporaryDirectory(prefix="karumi-reference-modes-") as tmp:
        folder = pathlib.Path(tmp)
        work = reference_layers(folder)
        for name, size in MODELS:
            work.append((f"{name} at {size} px", _torchvision([name], size, folder)[0]))
        names, paths = [n for n, _ in work], [str(p) for _, p in work]
        t0 = time.time()
        ref, lat = [], []
        for j in range(args.jobs):
            ts = measure_interleaved(paths, timing={"settle_attempts": 1, "seed": j})
            ref.append(ts[0].reference_ms)
            lat.append([t.latency_ms for t in ts])
        minutes = (time.time() - t0) / 60
    load.append(loadavg())
    ref_a, lat_a = np.array(ref), np.array(lat)
    threshold, gap = _split(ref_a, args.min_gap)
    slow = ref_a > threshold if threshold is not None else np.zeros(len(ref_a), bool)
    rows = []
    for i, name in enumerate(["the reference (whole)", *names]):
        y = ref_a if i == 0 else lat_a[:, i - 1]
        fast_ms = float(np.median(y[~slow]))
        slow_ms = float(np.median(y[slow])) if slow.any() else None
        slope = float(np.polyfit(np.log(ref_a), np.log(y), 1)[0])
        rows.append({"workload": name, "fast_ms": fast_ms, "slow_ms": slow_ms,
                     "slow_over_fast": None if slow_ms is None else slow_ms / fast_ms, "log_slope_on_reference": slope})
    out = {"command": "python experiments/reference_modes.py " + " ".join(sys.argv[1:]), "started_utc": started,
           "minutes": round(minutes, 1), "cpu_model": cpu_name(), "load_average_before_after": load,
           "jobs": args.jobs, "reference_ms_quantiles_10_50_90": [float(v) for v in np.percentile(ref_a, [10, 50, 90])],
           "threshold_ms": threshold, "widest_gap": gap, "slow_jobs": int(slow.sum()), "workloads": rows,
           "reference_ms": ref, "latency_ms": lat, "names": names}
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out), encoding="utf-8")
    print(_markdown(out))


def _markdown(out: dict) -> str:
    q = out["reference_ms_quantiles_10_50_90"]
    split = (f"split at {out['threshold_ms']:.4f} ms (widest gap {out['widest_gap']:.1%} of the median): "
             f"{out['slow_jobs']} of {out['jobs']} jobs in the slow level" if out["threshold_ms"] is not None else
             f"one level (widest gap {out['widest_gap']:.1%} of the median, under the split's minimum)")
    lines = ["# What follows the reference's fast and slow stretches", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']} on {out['cpu_model']}, {out['minutes']} min, load average (1/5/15 min) before / "
             f"after: {out['load_average_before_after'][0]} / {out['load_average_before_after'][1]}; {out['jobs']} jobs "
             "of the protocol's worker with no settling, each timing every workload once.  ",
             f"Reference p10 / p50 / p90: {q[0]:.4f} / {q[1]:.4f} / {q[2]:.4f} ms; {split}.", "",
             "| workload | median ms, fast level | slow level | slow / fast | slope of log latency on log reference |",
             "| --- | --- | --- | --- | --- |"]
    for r in out["workloads"]:
        slow = "-" if r["slow_ms"] is None else f"{r['slow_ms']:.4f}"
        ratio = "-" if r["slow_over_fast"] is None else f"{r['slow_over_fast']:.3f}"
        lines.append(f"| {r['workload']} | {r['fast_ms']:.4f} | {slow} | {ratio} | {r['log_slope_on_reference']:+.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
