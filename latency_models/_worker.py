"""The timing worker of the ``karumi-interleaved/3`` protocol: ONNX Runtime and numpy, nothing else.

Run as a script (``python _worker.py JOB.json OUT.json``), in a fresh process, so the timed sessions share
the process with nothing but what a deployed application loads: no torch, no project code, no thread pools
of other libraries. This file imports only the standard library, numpy and onnxruntime, and is copied
as-is next to a device workload (see ``latency_models._workload``) so a device runs it alone.

The protocol, for the models of one job and a fixed reference model:

1. Every session is created once (CPU execution provider, ``threads`` intra-op threads, sequential,
   ORT_ENABLE_ALL), then warmed: at least ``warmup`` runs and ``warmup_ms`` milliseconds each.
2. ``blocks`` blocks. In each block every model and the reference, in a shuffled order, run once untimed
   (back in cache after the others ran) and then ``runs`` timed runs, where ``runs`` gives the block about
   ``block_ms`` milliseconds of that model (at least ``min_runs``, at most ``max_runs``).
3. A model's latency is the ``quantile`` (default 0.2) of all its timed runs: a low quantile sits in the
   machine's fast state whichever state dominated, where the median jumps between states. The reference's
   latency, taken the same way in the same blocks, is reported beside every model (``reference_ms``), so
   measurements taken minutes apart can be put on one scale: ``latency_ms / reference_ms * table_reference_ms``.
4. Settling (new in ``/3``). Steps 2-3 are one *attempt*; a job is short (a second or two), and a shared
   machine's slow state can last longer, so a whole attempt can sit in it: then its models are slowed each its
   own way (a small model by 60 % where the reference slowed by 13 %), which no scale on the reference undoes.
   The attempt is repeated, the sessions kept warm, while the reference is more than ``settle_tolerance``
   above the fastest reference known (the job's ``reference_floor_ms``, which the host takes from its recent
   jobs, or this job's own attempts), up to ``settle_attempts`` attempts; the attempt with the fastest
   reference is the result. Without a floor the job makes at least two attempts.
5. The memory probe (``memory_probe_mb``, default 16; 0: none). The reference above is compute-bound and
   stays in the core's cache; it does not see the machine's *memory* state (the share of the last-level
   cache and of DRAM bandwidth that neighbours leave), which moves a model whose weights do not fit in the
   core's cache by 6-12 % in stretches of 10-60 s while the reference moves < 1 %
   (``experiments/results/memory_state.md``). A float32 vector-matrix product over ``memory_probe_mb`` MiB
   of fixed weights (numpy, one BLAS thread: memory-bound) is timed in every block like the reference and
   reported beside it (``memory_reference_ms``), so each row records the memory state it was timed in.
6. Settling on the memory too (``memory_settle_tolerance``, default null: off). With a tolerance, a job
   holding a model file of at least ``memory_settle_mb`` MiB (default 8: weights that outgrow the core's cache;
   the others do not follow the probe) is also repeated while the probe is more than the tolerance above the
   fastest probe known (``memory_floor_ms`` from the host's recent jobs, or this job's attempts); of the
   attempts made whose reference is within ``settle_tolerance`` of their fastest, the one with the fastest probe
   is kept. Off by default because, run as the protocol runs, it did not pay: read from jobs forced to make
   every attempt it would have lifted weight-heavy models' re-timings within ±2 % from 73 to 82 % of pairs
   (``experiments/results/memory_settling.md``), but timed side by side with reference settling alone, on and
   off in the same rounds, it gave 66.4 against 66.3 % of pairs within ±2 % at 128 px and 54.7 against 54.2 %
   at 32 px (5 %; 1.0-1.1 times the attempts), 69.9 against 66.4 % at 2 % (1.6 times the attempts)
   (``experiments/results/memory_settled_timing_*.md``).

7. ``kernel_settle_attempts`` is not the worker's: a profile times its one-kernel graphs with that many attempts
   at most instead of ``settle_attempts`` (None: the same). The worker reads only ``settle_attempts``.

JOB.json: ``{"models": [path, ...], "reference": path, "threads": 1, "warmup": 10, "warmup_ms": 20,
"blocks": 7, "block_ms": 10, "min_runs": 3, "max_runs": 50, "quantile": 0.2, "seed": 0,
"settle_tolerance": 0.03, "settle_attempts": 8, "memory_probe_mb": 16, "memory_settle_tolerance": null,
"memory_settle_mb": 8, "kernel_settle_attempts": null, "reference_floor_ms": null, "memory_floor_ms": null}``.
OUT.json: ``{"protocol": "karumi-interleaved/3", "latency_ms": [...], "reference_ms": float,
"runs": [...], "attempt_references_ms": [...], "attempt_latency_ms": [[...], ...], "kept_attempt": int,
"memory_reference_ms": float or null, "attempt_memory_references_ms": [...], "memory_settled": bool,
"seconds": float}``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

PROTOCOL_NAME = "karumi-interleaved/3"
#: The protocol's parameters (a job may override them; the table records what was used).
DEFAULTS = {"threads": 1, "warmup": 10, "warmup_ms": 20.0, "blocks": 7, "block_ms": 10.0, "min_runs": 3,
            "max_runs": 50, "quantile": 0.2, "seed": 0, "settle_tolerance": 0.03, "settle_attempts": 8,
            "memory_probe_mb": 16, "memory_settle_tolerance": None, "memory_settle_mb": 8,
            "kernel_settle_attempts": None}

_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _session(path, threads: int):  # noqa: ANN001, ANN202  (a file path, or the bytes of a model)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def _feeds(session) -> dict:  # noqa: ANN001
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise ValueError(f"model input {inp.name!r} has type {inp.type}; supported: {', '.join(_DTYPES)}")
        if dtype.startswith("float"):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _memory_probe(megabytes: float):  # noqa: ANN202
    """The memory probe's call, ``run(None, feeds)`` like a session's: a float32 vector-matrix product over
    ``megabytes`` MiB of fixed weights, memory-bound on one BLAS thread."""
    import numpy as np

    n = max(int(math.sqrt(megabytes * 2**20 / 4)), 1)
    rng = np.random.default_rng(20261205)
    w = rng.standard_normal((n, n), dtype=np.float32)
    x = rng.standard_normal(n, dtype=np.float32)

    def run(_outputs, _feeds):  # noqa: ANN001, ANN202
        return np.dot(w, x)

    return run


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation (numpy's default), in the values' unit."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_job(job: dict) -> dict:
    """Time ``job["models"]`` and ``job["reference"]`` under the protocol; see the module docstring."""
    import random

    p = {**DEFAULTS, **{k: v for k, v in job.items() if k in DEFAULTS}}
    threads, q = int(p["threads"]), float(p["quantile"])
    paths = [str(m) for m in job["models"]] + [str(job["reference"])]
    start = time.perf_counter()
    sessions = [_session(path, threads) for path in paths]
    calls = []
    for s in sessions:
        run, feeds = s.run, _feeds(s)
        calls.append((run, feeds))
    n_models, probe = len(paths) - 1, float(p["memory_probe_mb"])
    if probe > 0:
        calls.append((_memory_probe(probe), {}))
    clock = time.perf_counter
    estimate = []
    for run, feeds in calls:  # warm-up: at least `warmup` runs and `warmup_ms`
        n, t0 = 0, clock()
        while n < p["warmup"] or (clock() - t0) * 1e3 < p["warmup_ms"]:
            t1 = clock()
            run(None, feeds)
            last = clock() - t1
            n += 1
        estimate.append(max(last * 1e3, 1e-4))
    order = list(range(len(calls)))
    rng = random.Random(int(p["seed"]))

    def attempt() -> tuple[list[float], list[int]]:
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(int(p["blocks"])):
            rng.shuffle(order)
            for i in order:
                run, feeds = calls[i]
                runs = int(min(max(math.ceil(p["block_ms"] / estimate[i]), p["min_runs"]), p["max_runs"]))
                run(None, feeds)  # untimed: the model's weights back in cache after the others ran
                ts = times[i]
                for _r in range(runs):
                    t0 = clock()
                    run(None, feeds)
                    ts.append(clock() - t0)
        return [_quantile(ts, q) * 1e3 for ts in times], [len(ts) for ts in times]

    floor, mem_floor = job.get("reference_floor_ms"), job.get("memory_floor_ms")
    tolerance, most = float(p["settle_tolerance"]), int(p["settle_attempts"])
    mem_tolerance = p["memory_settle_tolerance"]
    largest = max((os.path.getsize(path) for path in paths[:n_models]), default=0)
    on_memory = mem_tolerance is not None and probe > 0 and largest >= float(p["memory_settle_mb"]) * 2**20
    attempts: list[tuple[list[float], list[int]]] = []
    while len(attempts) < most:
        attempts.append(attempt())
        ref = attempts[-1][0][n_models]
        fastest = min(a[0][n_models] for a in attempts)
        if floor is None and len(attempts) == 1:
            continue  # nothing to compare with yet: a second attempt
        settled = ref <= (1.0 + tolerance) * (fastest if floor is None else min(float(floor), fastest))
        if on_memory:
            mem = attempts[-1][0][n_models + 1]
            fastest_mem = min(a[0][n_models + 1] for a in attempts)
            settled = settled and mem <= (1.0 + float(mem_tolerance)) * (
                fastest_mem if mem_floor is None else min(float(mem_floor), fastest_mem))
        if settled:
            break
    fastest = min(a[0][n_models] for a in attempts)
    if on_memory:  # of the attempts in the reference's fast state, the one in the fastest memory state
        near = [a for a in range(len(attempts)) if attempts[a][0][n_models] <= (1.0 + tolerance) * fastest]
        kept = min(near, key=lambda a: attempts[a][0][n_models + 1])
    else:
        kept = min(range(len(attempts)), key=lambda a: attempts[a][0][n_models])
    lat, runs = attempts[kept]
    loaded = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")} - set(sys.stdlib_module_names))
    memory = [a[0][n_models + 1] for a in attempts] if probe > 0 else []
    return {"protocol": PROTOCOL_NAME, "params": p, "latency_ms": lat[:n_models], "reference_ms": lat[n_models],
            "runs": runs[:n_models], "attempt_references_ms": [a[0][n_models] for a in attempts], "kept_attempt": kept,
            "attempt_latency_ms": [a[0][:n_models] for a in attempts],
            "memory_reference_ms": memory[kept] if memory else None, "attempt_memory_references_ms": memory,
            "memory_settled": on_memory, "seconds": time.perf_counter() - start, "loaded": loaded}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python _worker.py JOB.json OUT.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        job = json.load(fh)
    result = run_job(job)
    tmp = argv[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
