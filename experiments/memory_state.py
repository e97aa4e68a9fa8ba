"""The machine's memory state, which the protocol's compute-bound reference does not see.

At 32 px the held-out FBNet candidates of ``predictor_local_32_pool`` re-timed with an 8 % sd between two
protocol timings minutes apart, while MobileNet's and ShuffleNet's re-timed within 1 % and the reference
workload timed beside each (a small compute-bound CNN, ``latency_models.reference_model``) stayed within 0.5 %.
FBNet's 32-px models are the weight-heavy ones (1.5-2.5 MB of weights for 2 ms of compute). This experiment
times, in one process that loads only ONNX Runtime and numpy (as a deployed application runs), a few held-out
models of a committed table beside the protocol's reference and beside memory-bound references: a ``MatMul`` of
a (1, k) vector by a (k, k) float32 matrix, whose time is that of streaming the matrix (``--reference-mb``, 1 to
64 MB: from what stays in the last-level cache to what comes from DRAM every run).

Protocol of the loop (``--seconds`` long): blocks; in each block every model and reference, in a shuffled order,
runs once untimed and then for about ``--block-ms`` (3 to 50 runs); the block's value is the 20 % quantile of
those runs (the protocol's statistic). Reported per model: the spread of its block values (p10-p90), the
correlation of its series with each reference's (smoothed over ``--smooth`` blocks, so that the states rather
than single-run jitter are compared), and its elasticity on the DRAM-bound reference (slope of the smoothed log
series); beside them the model's weight megabytes and its committed protocol timings (first and re-timed).

    python experiments/memory_state.py --table predictor_local_32_pool --seconds 300

Writes ``experiments/results/memory_state.json`` and ``.md`` (``--name``). Alone on the machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def worker(job_path: str, out_path: str) -> None:
    """The timing loop, in a process of its own with ONNX Runtime and numpy only (``--worker``)."""
    import random

    import numpy as np
    import onnxruntime as ort

    job = json.loads(pathlib.Path(job_path).read_text())
    sessions = {}
    for name, path in job["models"].items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        feed = {inp.name: np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in inp.shape],
                                                           dtype=np.float32)}
        for _ in range(20):
            sess.run(None, feed)
        sessions[name] = (sess, feed)
    names = list(sessions)
    series: dict[str, list[float]] = {n: [] for n in names}
    stamps: list[float] = []
    rng = random.Random(0)
    start = time.perf_counter()
    block_s = job["block_ms"] / 1e3
    while time.perf_counter() - start < job["seconds"]:
        stamps.append(time.perf_counter() - start)
        order = names[:]
        rng.shuffle(order)
        for n in order:
            sess, feed = sessions[n]
            sess.run(None, feed)
            runs: list[float] = []
            t0 = time.perf_counter()
            while len(runs) < 3 or (time.perf_counter() - t0 < block_s and len(runs) < 50):
                a = time.perf_counter()
                sess.run(None, feed)
                runs.append((time.perf_counter() - a) * 1e3)
            series[n].append(float(np.quantile(runs, 0.2)))
    pathlib.Path(out_path).write_text(json.dumps({"series": series, "block_start_s": stamps,
                                                  "runtime_version": ort.__version__}))


def _matmul_reference(mb: float):
    """A ``MatMul`` of a (1, k) vector by a (k, k) float32 matrix of about ``mb`` megabytes (fixed weights)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from latency_models import reference_model

    ref = reference_model()  # the same opset and IR version as the protocol's reference
    k = int(round((mb * 1e6 / 4) ** 0.5 / 64)) * 64
    w = numpy_helper.from_array((np.random.default_rng(k).standard_normal((k, k)) * 0.01).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], f"dram_{k}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k])], [w])
    model = helper.make_model(graph, opset_imports=list(ref.opset_import))
    model.ir_version = ref.ir_version
    return model, k * k * 4


def _smooth(v, w: int):
    import numpy as np

    return np.convolve(v, np.ones(w) / w, mode="valid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--table", default="predictor_local_32_pool", help="a committed predictor_local.py run")
    ap.add_argument("--per-space", default="fbnet:6,mobilenet:2,shufflenet:2",
                    help="held-out models per space (SPACE:N,...), the first N of the run's held.json")
    ap.add_argument("--reference-mb", default="1,4,16,64", help="sizes of the memory-bound references (MB)")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--block-ms", type=float, default=20.0)
    ap.add_argument("--smooth", type=int, default=10, help="blocks averaged before correlating")
    ap.add_argument("--name", default="memory_state")
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    import datetime as dt

    import numpy as np

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import spaces
    from _common import loadavg, write_json
    from latency_models import reference_model
    from predictor_local import _exists, _read

    try:
        per_space = {s: int(n) for s, n in (x.split(":") for x in args.per_space.split(","))}
        sizes = [float(x) for x in args.reference_mb.split(",")]
    except ValueError:
        sys.exit(f"error: --per-space {args.per_space!r} / --reference-mb {args.reference_mb!r}: allowed SPACE:N,... "
                 "and comma-separated megabytes")
    folder = RESULTS / args.table
    if not _exists(folder, "held.json"):
        sys.exit(f"error: --table {args.table!r}: {folder} has no held.json(.gz); allowed: a predictor_local.py run")
    held = _read(folder, "held.json").model_rows
    retimed = {}
    if _exists(RESULTS / (args.table + "_retime"), "held.json"):
        retimed = {json.dumps(r.candidate, sort_keys=True): r.latency_ms
                   for r in _read(RESULTS / (args.table + "_retime"), "held.json").model_rows}
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="memory-state-") as tmp:
        models, info = {}, {}
        taken = {s: 0 for s in per_space}
        for r in held:
            if r.source not in per_space or taken[r.source] >= per_space[r.source]:
                continue
            name = f"{r.source}_{taken[r.source]}"
            taken[r.source] += 1
            space = spaces.get_space(r.source, **r.candidate["options"])
            path = pathlib.Path(tmp) / f"{name}.onnx"
            path.write_bytes(space.onnx(spaces.Candidate.from_dict(r.candidate)).SerializeToString())
            models[name] = str(path)
            info[name] = {"kind": "model", "weight_mb": float(space.stats(spaces.Candidate.from_dict(r.candidate))
                                                               .size_bytes) / 1e6,
                          "table_first_ms": r.latency_ms,
                          "table_retimed_ms": retimed.get(json.dumps(r.candidate, sort_keys=True))}
        path = pathlib.Path(tmp) / "reference.onnx"
        path.write_bytes(reference_model().SerializeToString())
        models["reference"] = str(path)
        info["reference"] = {"kind": "protocol reference (compute-bound)", "weight_mb": None}
        for mb in sizes:
            model, nbytes = _matmul_reference(mb)
            name = f"matmul_{mb:g}mb"
            path = pathlib.Path(tmp) / f"{name}.onnx"
            path.write_bytes(model.SerializeToString())
            models[name] = str(path)
            info[name] = {"kind": "memory-bound reference", "weight_mb": nbytes / 1e6}
        job = pathlib.Path(tmp) / "job.json"
        job.write_text(json.dumps({"models": models, "seconds": args.seconds, "block_ms": args.block_ms}))
        out = pathlib.Path(tmp) / "out.json"
        started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        subprocess.run([sys.executable, __file__, "--worker", str(job), str(out)], check=True)
        raw = json.loads(out.read_text())
    series = {n: np.log(np.array(v)) for n, v in raw["series"].items()}
    refs = [n for n in models if info[n]["kind"] != "model"]
    dram = f"matmul_{max(sizes):g}mb"
    w = args.smooth
    smoothed = {n: _smooth(x, w) for n, x in series.items()}
    rows = []
    for n, x in series.items():
        sm = smoothed[n]
        rows.append({"name": n, **info[n], "median_ms": float(np.exp(np.median(x))),
                     "p10_p90_pct": float(100 * (np.exp(np.quantile(x, 0.9) - np.quantile(x, 0.1)) - 1)),
                     "corr": {r: float(np.corrcoef(sm, smoothed[r])[0, 1]) for r in refs},
                     "elasticity_on_dram": float(np.polyfit(smoothed[dram], sm, 1)[0])})
    stamps = np.array(raw["block_start_s"])
    timeline = []
    step = max(1, int(len(stamps) / 30))
    for i in range(0, len(stamps) - step + 1, step):
        timeline.append({"t_s": float(stamps[i]),
                         **{n: float(np.exp(np.median(series[n][i:i + step]))) for n in series}})
    model_rows = [r for r in rows if r["kind"] == "model"]
    fb = [r for r in model_rows if r["table_retimed_ms"]]
    result = {
        "command": "python experiments/memory_state.py " + " ".join(sys.argv[1:]), "started_utc": started,
        "runtime_version": raw["runtime_version"], "blocks": int(len(stamps)),
        "load_average_before_after": [load_before, loadavg()], "dram_reference": dram, "rows": rows,
        "timeline": timeline,
        "corr_elasticity_weight_mb": float(np.corrcoef([r["elasticity_on_dram"] for r in model_rows],
                                                       [r["weight_mb"] for r in model_rows])[0, 1]),
    }
    write_json(RESULTS / f"{args.name}.json", result)
    lines = [f"# The machine's memory state and the protocol's reference ({args.name})", "",
             f"Command: `{result['command']}`  ", f"Started {started}, {len(stamps)} blocks in {args.seconds:g} s, "
             f"ONNX Runtime {raw['runtime_version']}, one thread, a process with ONNX Runtime and numpy only; "
             f"load average (1/5/15 min) before / after: {load_before} / {result['load_average_before_after'][1]} on "
             f"2 shared cores. Block value = 20 % quantile of the block's runs; correlations of series smoothed over "
             f"{w} blocks; elasticity = slope of the model's smoothed log series on the {dram} reference's.", "",
             "| workload | weight MB | median ms | p10-p90 of blocks | "
             + " | ".join(f"corr. with {r}" for r in refs) + f" | elasticity on {dram} | table: first ms | "
             "table: re-timed ms |", "|---|---:|---:|---:|" + "---:|" * len(refs) + "---:|---:|---:|"]
    for r in rows:
        wmb = "" if r["weight_mb"] is None else f"{r['weight_mb']:.2f}"
        first = f"{r['table_first_ms']:.3f}" if r.get("table_first_ms") else ""
        again = f"{r['table_retimed_ms']:.3f}" if r.get("table_retimed_ms") else ""
        lines.append(f"| {r['name']} | {wmb} | {r['median_ms']:.3f} | {r['p10_p90_pct']:.1f} % | "
                     + " | ".join(f"{r['corr'][q]:+.2f}" for q in refs)
                     + f" | {r['elasticity_on_dram']:+.2f} | {first} | {again} |")
    lines += ["", f"Correlation of the models' elasticity with their weight megabytes: "
              f"{result['corr_elasticity_weight_mb']:+.2f} ({len(model_rows)} models).", "",
              "Timeline (median of each stretch of blocks, ms):", "",
              "| t (s) | " + " | ".join(series) + " |", "|---:|" + "---:|" * len(series)]
    for t in timeline:
        lines.append(f"| {t['t_s']:.0f} | " + " | ".join(f"{t[n]:.3f}" for n in series) + " |")
    if fb:
        lines += ["", "The table's models in this run against their two committed protocol timings (this run's "
                  "median / first, / re-timed): " + ", ".join(
                      f"{r['name']} {r['median_ms'] / r['table_first_ms']:.2f} / {r['median_ms'] / r['table_retimed_ms']:.2f}"
                      for r in fb) + "."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
