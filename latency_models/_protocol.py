"""The timing protocol ``karumi-interleaved/3``, host side: run the worker on ONNX models, read its figures.

Every latency the project records (a profile's kernel and model rows, ``measure``, the search's
re-measurement of its exports) is taken by :func:`measure_interleaved`: the models are timed together in a
fresh worker process that loads only ONNX Runtime and numpy (``latency_models/_worker.py``, see its
docstring for the protocol), interleaved in warm blocks, each model's latency the 20 % quantile of its
runs, and a fixed reference model (:func:`reference_model`, built with ``onnx.helper``) timed in every
block. Each :class:`Timing` carries the reference's latency of its own measurement, so figures taken
minutes apart can be put on one scale (``latency_ms / reference_ms * table_reference_ms``). A job whose
reference ran slow (the machine's slow state) is timed again in the same worker, up to
``settle_attempts`` attempts, until its reference is within ``settle_tolerance`` of the fastest reference of
this process's recent jobs (:data:`_FLOOR_JOBS`), which the host passes to the worker as its floor. A memory
probe (a memory-bound vector-matrix product over 16 MiB) is timed in the same blocks and reported as
``Timing.memory_reference_ms``: the machine's memory state, which the compute-bound reference does not see. With
``memory_settle_tolerance`` (off by default: it did not pay, measured), a job holding a model file of at least
``memory_settle_mb`` MiB settles on the probe too, against the fastest kept probe of the same recent jobs
(``Timing.memory_settled`` says whether it did). ``kernel_settle_attempts`` (default None: as ``settle_attempts``)
caps the attempts of a profile's one-kernel jobs alone (:func:`latency_models.profile`); measured on a 32-px profile
of an Intel Xeon, 1 (no settling) gave 1.7 times the kernel rows and did not improve the predictions.

Needs numpy, onnx and onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any, Mapping, Sequence

from latency_models._worker import DEFAULTS, PROTOCOL_NAME

__all__ = ["PROTOCOL_NAME", "REFERENCE_NAME", "Timing", "measure_interleaved", "protocol_params", "reference_model",
           "WORKER_PATH"]

#: The reference workload's name and version (part of the protocol: a different reference is another scale).
REFERENCE_NAME = "karumi-reference/1"
#: The worker script (standard library, numpy and onnxruntime only).
WORKER_PATH = pathlib.Path(__file__).with_name("_worker.py")
_WORKER_TIMEOUT_S = 3600
#: The floor a job's reference is settled against: the fastest kept reference of this many recent jobs (of the
#: same reference, threads and interpreter) in this process. Recent, not all: a machine that drifts slower
#: over tens of minutes must not be held to a speed it no longer reaches.
_FLOOR_JOBS = 8
_recent: dict[tuple[str, int, str], list[float]] = {}  # key -> kept references, oldest first
_recent_memory: dict[tuple[str, int, str, float], list[float]] = {}  # key and probe size -> kept probes


@dataclasses.dataclass(frozen=True)
class Timing:
    """One model's latency under the protocol and the reference's latency in the same measurement (ms).

    ``attempt_references_ms``: the reference of each attempt of the job (the kept one is the fastest, or with
    ``memory_settled`` the one with the fastest probe among those within ``settle_tolerance`` of it);
    ``attempt_latency_ms``: this model's latency in each attempt; ``memory_reference_ms``: the memory probe's
    latency in the kept attempt (None when the probe was off), ``attempt_memory_references_ms`` in each;
    ``memory_settled``: whether the job also settled on the probe (it held a model of ``memory_settle_mb``)."""

    latency_ms: float
    reference_ms: float
    attempt_references_ms: tuple[float, ...] = ()
    attempt_latency_ms: tuple[float, ...] = ()
    memory_reference_ms: float | None = None
    attempt_memory_references_ms: tuple[float, ...] = ()
    memory_settled: bool = False

    @property
    def first_attempt_ms(self) -> float:
        """The model's latency in the job's first attempt: what the job reported without settling."""
        return self.attempt_latency_ms[0] if self.attempt_latency_ms else self.latency_ms


def protocol_params(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The protocol's timing parameters (:data:`latency_models._worker.DEFAULTS`) with ``overrides``, checked."""
    p = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULTS:
            raise ValueError(f"timing parameter {key!r} is not known; allowed: {', '.join(sorted(DEFAULTS))}")
        p[key] = value
    for key in ("threads", "warmup", "blocks", "min_runs", "max_runs"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < 1:
            raise ValueError(f"{key}={p[key]!r} must be a positive integer")
    if p["warmup"] < 10:
        raise ValueError(f"warmup={p['warmup']!r} must be an integer >= 10 (the protocol's floor)")
    if p["max_runs"] < p["min_runs"]:
        raise ValueError(f"max_runs={p['max_runs']} must be >= min_runs={p['min_runs']}")
    for key in ("warmup_ms", "block_ms"):
        if isinstance(p[key], bool) or not isinstance(p[key], (int, float)) or p[key] < 0:
            raise ValueError(f"{key}={p[key]!r} must be a non-negative number of milliseconds")
    if not isinstance(p["quantile"], (int, float)) or not 0.0 <= float(p["quantile"]) <= 0.5:
        raise ValueError(f"quantile={p['quantile']!r} must be a number in [0, 0.5]")
    if isinstance(p["settle_attempts"], bool) or not isinstance(p["settle_attempts"], int) or p["settle_attempts"] < 1:
        raise ValueError(f"settle_attempts={p['settle_attempts']!r} must be a positive integer (1: no settling)")
    ksa = p["kernel_settle_attempts"]
    if ksa is not None and (isinstance(ksa, bool) or not isinstance(ksa, int) or ksa < 1):
        raise ValueError(f"kernel_settle_attempts={ksa!r} must be a positive integer (1: kernel jobs do not settle) "
                         "or None (as settle_attempts)")
    mb = p["memory_probe_mb"]
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 0.0 <= float(mb) <= 1024.0:
        raise ValueError(f"memory_probe_mb={mb!r} must be a number of MiB in [0, 1024] (0: no memory probe)")
    tol = p["settle_tolerance"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 <= float(tol) <= 1.0:
        raise ValueError(f"settle_tolerance={tol!r} must be a number in [0, 1] (a fraction of the reference)")
    tol = p["memory_settle_tolerance"]
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 <= tol <= 1.0):
        raise ValueError(f"memory_settle_tolerance={tol!r} must be a number in [0, 1] (a fraction of the memory "
                         "probe) or None (no settling on the memory)")
    mb = p["memory_settle_mb"]
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 0.0 <= float(mb) <= 1e6:
        raise ValueError(f"memory_settle_mb={mb!r} must be a non-negative number of MiB (the model file size from "
                         "which a job settles on the memory probe)")
    return p


def reference_model() -> Any:
    """The reference workload (an ``onnx.ModelProto``, fixed weights): a small CNN of the kinds of layers the
    profiled models run (3x3 and 1x1 convolutions, a depthwise convolution, ReLU, pooling, a linear layer),
    about a quarter of a millisecond on one core of a server CPU."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from latency_models._microgen import IR_VERSION, OPSET

    rng = np.random.default_rng(20261201)
    inits, nodes = [], []

    def w(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name))
        return name

    x = "input"
    layers = [  # (cin, cout, k, stride, groups)
        (16, 48, 3, 1, 1), (48, 48, 3, 1, 48), (48, 96, 1, 1, 1), (96, 96, 3, 2, 96), (96, 128, 1, 1, 1),
    ]
    for i, (cin, cout, k, s, g) in enumerate(layers):
        y = f"conv{i}"
        nodes.append(helper.make_node("Conv", [x, w(f"w{i}", cout, cin // g, k, k), w(f"b{i}", cout)], [y],
                                      kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=g))
        nodes.append(helper.make_node("Relu", [y], [f"relu{i}"]))
        x = f"relu{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    nodes.append(helper.make_node("Gemm", ["flat", w("fc_w", 10, 128), w("fc_b", 10)], ["output"], transB=1))
    graph = helper.make_graph(nodes, "karumi_reference",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16, 40, 40])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = REFERENCE_NAME
    onnx.checker.check_model(model)
    return model


def _as_path(model: Any, folder: pathlib.Path, i: int) -> str:
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model)
        if not path.is_file():
            raise ValueError(f"model path={str(path)!r} does not exist")
        return str(path.resolve())
    if type(model).__name__ != "ModelProto":
        raise ValueError(f"models[{i}] is a {type(model).__name__}; allowed: an ONNX file path or an onnx.ModelProto")
    path = folder / f"m{i}.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def measure_interleaved(models: Sequence[Any], *, threads: int = 1, reference: str | os.PathLike[str] | None = None,
                        timing: Mapping[str, Any] | None = None, python: str | None = None) -> list[Timing]:
    """Time ``models`` (ONNX paths or ``ModelProto``) together under ``karumi-interleaved/3``; one
    :class:`Timing` per model, in order.

    Args:
        threads: ONNX Runtime intra-op threads.
        reference: the reference model file (default: :func:`reference_model`, written to a temporary file).
        timing: overrides of the protocol's parameters (:func:`protocol_params`).
        python: the interpreter that runs the worker (default: this one).

    Raises:
        ValueError: a missing file, a bad parameter, or a model the worker could not run (its error named).
    """
    models = list(models)
    if not models:
        return []
    params = protocol_params({**(timing or {}), "threads": threads})
    with tempfile.TemporaryDirectory(prefix="karumi-timing-") as tmp:
        folder = pathlib.Path(tmp)
        paths = [_as_path(m, folder, i) for i, m in enumerate(models)]
        if reference is None:
            ref = folder / "reference.onnx"
            ref.write_bytes(reference_model().SerializeToString())
        else:
            ref = pathlib.Path(reference)
            if not ref.is_file():
                raise ValueError(f"reference={str(ref)!r} does not exist")
        # the floor is kept per reference workload (by content: a profile writes the default one to a file)
        key = (hashlib.sha1(ref.read_bytes()).hexdigest(), int(threads), python or sys.executable)
        recent = _recent.setdefault(key, [])
        floor = min(recent) if recent else None
        recent_memory = _recent_memory.setdefault((*key, float(params["memory_probe_mb"])), [])
        memory_floor = min(recent_memory) if recent_memory else None
        job, out = folder / "job.json", folder / "out.json"
        job.write_text(json.dumps({**params, "models": paths, "reference": str(ref), "reference_floor_ms": floor,
                                   "memory_floor_ms": memory_floor}), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        proc = subprocess.run([python or sys.executable, "-I", str(WORKER_PATH), str(job), str(out)],
                              capture_output=True, text=True, env=env, timeout=_WORKER_TIMEOUT_S, cwd=tmp)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ValueError(f"the timing worker failed on {len(paths)} model(s): {tail[0]}")
        result = json.loads(out.read_text(encoding="utf-8"))
    ref_ms = float(result["reference_ms"])
    recent.append(ref_ms)
    del recent[:-_FLOOR_JOBS]
    attempts = tuple(float(r) for r in result.get("attempt_references_ms", (ref_ms,)))
    per_attempt = result.get("attempt_latency_ms", [result["latency_ms"]])
    memory = result.get("memory_reference_ms")
    memory = None if memory is None else float(memory)
    if memory is not None:
        recent_memory.append(memory)
        del recent_memory[:-_FLOOR_JOBS]
    memory_attempts = tuple(float(m) for m in result.get("attempt_memory_references_ms", ()))
    settled = bool(result.get("memory_settled", False))
    return [Timing(float(ms), ref_ms, attempts, tuple(float(a[i]) for a in per_attempt), memory, memory_attempts,
                   settled) for i, ms in enumerate(result["latency_ms"])]
