"""Which of ONNX Runtime's two uint8 max pools runs, and the predictor that knows it.

An 8-bit max pool (the ShuffleNet stem's, between quantise / dequantise nodes) runs in one of two ways in ONNX
Runtime: channels-last (``NhwcMaxPool``) when an int8 convolution (``QLinearConv``, channels-last itself) feeds
it, and with the generic NCHW uint8 ``MaxPool`` otherwise, 10-20x slower than a float pool
(``int8_maxpool.py``). A kernel timed alone runs the slow one. Since 2026-12-04 (evening) the predictor gives
such a pool a transition state of its own (``latency_models._layout.INT8_POOL``), so that the transitions into it
price which one runs; ``LatencyPredictor.fit(table, int8_pool_state=False)`` reads it as layout-transparent, as before.

For each committed ``predictor_local.py`` table named (times nothing): the predictor fitted both ways (each
choosing its machine-state exponent), scored on the run's held-out models on the predictor's scale (random
widths per space, whole float32 models, torchvision exports), and the ShuffleNet models with an 8-bit pool one
by one, by what feeds the pool.

``--profile NAME``: also export the held-out ShuffleNet models of ``results/NAME/`` that have an 8-bit pool and
read the pool's time inside each from ONNX Runtime's profiler (1 thread, 200 runs after 20 warm-up, the median
per node; the profiler adds a few microseconds per node): which kernel ran, and how long.

    python experiments/int8_pool_state.py predictor_local_128_aligned predictor_local_128_settled --profile predictor_local_128_aligned

Writes ``experiments/results/int8_pool_state.json`` and ``.md`` (``--name``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from latency_models import LatencyPredictor  # noqa: E402
from predictor_local import _exists, _read, _with_layout  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
WAYS = (("transparent", False), ("state", True))
SPACES = ("fbnet", "mobilenet", "shufflenet")


def _pool(kernels) -> tuple[int, object] | None:
    """(index, kernel) of the model's 8-bit max pool, or None."""
    for i, k in enumerate(kernels):
        if k.op == "maxpool" and k.bits in (1, 2, 4, 8):
            return i, k
    return None


def _metrics(err: np.ndarray) -> dict:
    return {"n": int(len(err)), "within_5": float(np.mean(np.abs(err) <= 0.05)),
            "within_10": float(np.mean(np.abs(err) <= 0.10)), "rmspe": float(np.sqrt(np.mean(err ** 2)))}


def score(name: str) -> dict:
    """Both fits of ``results/NAME/table.json`` on that run's held-out models."""
    folder = RESULTS / name
    table = _with_layout(_read(folder, "table.json"), {})
    fits = {label: LatencyPredictor.fit(table, int8_pool_state=flag) for label, flag in WAYS}
    groups: dict[str, list] = {}
    held = _read(folder, "held.json").model_rows
    for s in SPACES:
        groups[s] = [r for r in held if r.source == s]
    groups["spaces, random widths"] = held
    if _exists(folder, "held_float.json"):
        groups["spaces, float32"] = _read(folder, "held_float.json").model_rows
    if _exists(folder, "torchvision.json"):
        groups["torchvision"] = _read(folder, "torchvision.json").model_rows
    out: dict = {"table": name, "exponent": {label: p.reference_exponent for label, p in fits.items()},
                 "pool_transitions_ms": {t: v for t, v in fits["state"].transition_ms.items()
                                         if t.split(":")[0].split(">")[1] == "9"},
                 "groups": {}, "pool_models": []}
    errs: dict[str, dict[str, np.ndarray]] = {}
    for label, pred in fits.items():
        errs[label] = {}
        for g, rows in groups.items():
            measured = np.array([float(pred.on_scale(r.latency_ms, r.reference_ms)) for r in rows])
            errs[label][g] = pred.predict_many([r.kernels for r in rows]) / measured - 1.0
    for g in groups:
        out["groups"][g] = {label: _metrics(errs[label][g]) for label, _ in WAYS}
    for j, r in enumerate(groups["shufflenet"]):
        found = _pool(r.kernels)
        if found is None:
            continue
        i, k = found
        out["pool_models"].append({
            "pool_input": list(k.input_shape), "fed_by_bits": r.kernels[i - 1].bits,
            "measured_ms": float(r.latency_ms),
            **{f"error_{label}": float(errs[label]["shufflenet"][j]) for label, _ in WAYS}})
    return out


def profile(name: str) -> list[dict]:
    """The 8-bit pool's time inside each held-out ShuffleNet model of ``results/NAME/`` that has one."""
    import onnxruntime as ort

    import spaces

    rows = [r for r in _read(RESULTS / name, "held.json").model_rows if r.source == "shufflenet"]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in rows:
            found = _pool(r.kernels)
            if found is None:
                continue
            i, k = found
            space = spaces.get_space(r.source, **r.candidate["options"])
            path = pathlib.Path(tmp) / "model.onnx"
            path.write_bytes(space.onnx(spaces.Candidate.from_dict(r.candidate)).SerializeToString())
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.enable_profiling = True
            opts.profile_file_prefix = str(pathlib.Path(tmp) / "profile")
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.float32)
            for _ in range(220):
                sess.run(None, {inp.name: x})
            events = json.loads(pathlib.Path(sess.end_profiling()).read_text())
            pools: dict[str, list[float]] = {}
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and "MaxPool" in e["args"].get("op_name", ""):
                    pools.setdefault(e["args"]["op_name"], []).append(e["dur"] / 1000.0)
            for op, durs in pools.items():
                out.append({"pool_input": list(k.input_shape), "fed_by_bits": r.kernels[i - 1].bits, "runs_as": op,
                            "pool_ms": float(np.median(durs[-200:]))})
    return out


def _cell(m: dict) -> str:
    return f"{100 * m['within_5']:.1f} / {100 * m['within_10']:.1f} % ({100 * m['rmspe']:.1f} %)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", help="names of experiments/results/NAME/ folders with a table.json(.gz)")
    ap.add_argument("--profile", metavar="NAME", default=None, help="read the pools' times from ONNX Runtime's profiler")
    ap.add_argument("--name", default="int8_pool_state")
    args = ap.parse_args()
    load_before = loadavg()
    results = [score(t) for t in args.tables]
    profiled = profile(args.profile) if args.profile else []
    command = "python experiments/int8_pool_state.py " + " ".join(args.tables) + \
        (f" --profile {args.profile}" if args.profile else "") + \
        ("" if args.name == "int8_pool_state" else f" --name {args.name}")
    out = {"command": command, "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
           "load_average_before_after": [load_before, loadavg()], "results": results, "profiled": profiled}
    write_json(RESULTS / f"{args.name}.json", out)
    lines = [f"# An 8-bit max pool as a transition state of its own ({args.name})", "",
             f"`{command}` ({out['finished_utc']}). Each table's predictor fitted two ways, each choosing its "
             "machine-state exponent: `transparent` = the pool is layout-transparent (`int8_pool_state=False`, "
             "the predictor before), `state` = the pool has a state of its own (the default). Held-out models on "
             "the predictor's scale: within ±5 % / within ±10 % (RMSPE).", ""]
    groups = [g for g in results[0]["groups"]]
    lines += ["| table | models | n | transparent | state |", "|---|---|---:|---|---|"]
    for r in results:
        for g in groups:
            if g in r["groups"]:
                m = r["groups"][g]
                lines.append(f"| {r['table']} | {g} | {m['state']['n']} | {_cell(m['transparent'])} | "
                             f"{_cell(m['state'])} |")
    for r in results:
        lines += ["", f"## {r['table']}: ShuffleNet models with an 8-bit pool (error = predicted / measured - 1)", "",
                  f"Exponents: {r['exponent']}. Transitions into the pool (ms per change, per million elements): "
                  + ", ".join(f"`{t}` {v:+.4f}" for t, v in sorted(r["pool_transitions_ms"].items())), "",
                  "| pool input | fed by a layer of | measured ms | error, transparent | error, state |",
                  "|---|---:|---:|---:|---:|"]
        for p in sorted(r["pool_models"], key=lambda p: (p["fed_by_bits"], p["pool_input"])):
            lines.append(f"| {tuple(p['pool_input'])} | {p['fed_by_bits']} bits | {p['measured_ms']:.3f} | "
                         f"{100 * p['error_transparent']:+.1f} % | {100 * p['error_state']:+.1f} % |")
    if profiled:
        lines += ["", f"## The pool inside the held-out ShuffleNet models of {args.profile} (ONNX Runtime's profiler)",
                  "", "| pool input | fed by a layer of | runs as | pool ms (median of 200) |", "|---|---:|---|---:|"]
        for p in sorted(profiled, key=lambda p: (p["fed_by_bits"], p["pool_input"])):
            lines.append(f"| {tuple(p['pool_input'])} | {p['fed_by_bits']} bits | `{p['runs_as']}` | "
                         f"{p['pool_ms']:.4f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
