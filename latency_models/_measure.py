"""Timing one ONNX model in this process (CPU, pinned threads, median of runs): a quick look.

The project's measurements (profiles, ``measure``, the search's re-measurement) use the protocol
``karumi-interleaved/3`` instead (:func:`latency_models.measure_interleaved`): a worker process with only
ONNX Runtime and numpy loaded, interleaved warm blocks, a low quantile and a reference workload.
"""

from __future__ import annotations

import logging
import os
import pathlib
import statistics
import time
from typing import Any

from latency_models._worker import _feeds, _session  # one definition: the worker imports nothing of the project

__all__ = ["measure_onnx", "make_session", "time_session", "MIN_WARMUP", "MIN_RUNS", "CLOCKS", "STATISTICS"]

logger = logging.getLogger(__name__)

#: The protocol's floor: at least this many warm-up runs and timed runs.
MIN_WARMUP = 10
MIN_RUNS = 50
#: Clocks a run can be timed with. ``wall``: ``time.perf_counter`` (the latency a user sees; the default).
#: ``thread_cpu``: ``time.thread_time``, the CPU time of the calling thread, which with one intra-op thread
#: is where ONNX Runtime computes: the latency the machine gives when idle, robust to other processes
#: sharing the cores (time sliced away is not counted). Only valid with ``threads=1``.
CLOCKS = ("wall", "thread_cpu")
#: Statistics over the timed runs. ``median`` (the default) or ``min`` (the least disturbed run: on a
#: machine shared with other processes the median drifts with their load, the minimum much less).
STATISTICS = ("median", "min")


def make_session(model: Any, *, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU execution provider with the protocol's options."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer")
    source = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return _session(source, threads)


def check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r} is not supported; allowed: {', '.join(STATISTICS)}")


def check_clock(clock: str, threads: int) -> None:
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r} is not supported; allowed: {', '.join(CLOCKS)}")
    if clock == "thread_cpu" and threads != 1:
        raise ValueError(f"clock='thread_cpu' needs threads=1 (got threads={threads}): worker threads are not counted")


def time_session(session: Any, *, warmup: int = MIN_WARMUP, runs: int = MIN_RUNS, clock: str = "wall",
                 statistic: str = "median") -> float:
    """Median (or min) time in milliseconds of ``runs`` calls of ``session.run`` after ``warmup`` calls."""
    feeds = _feeds(session)
    run = session.run
    for _ in range(warmup):
        run(None, feeds)
    times = []
    now = time.perf_counter if clock == "wall" else time.thread_time
    for _ in range(runs):
        t0 = now()
        run(None, feeds)
        times.append(now() - t0)
    return (min(times) if statistic == "min" else statistics.median(times)) * 1e3


def measure_onnx(model: Any, *, threads: int = 1, warmup: int = MIN_WARMUP, runs: int = MIN_RUNS,
                 clock: str = "wall", statistic: str = "median") -> float:
    """Median latency in milliseconds of an ONNX model (path or ``onnx.ModelProto``), timed in this process.

    For figures comparable with a latency table use :func:`latency_models.measure_interleaved`. Here: ONNX Runtime CPU execution provider, ``threads`` intra-op threads, sequential
    execution, full graph optimisation (ORT_ENABLE_ALL), batch 1, random inputs, ``warmup`` untimed runs
    (at least 10), then the median of ``runs`` timed runs (at least 50), timed on ``clock`` (see
    :data:`CLOCKS`; ``"thread_cpu"`` on a machine shared with other processes); ``statistic="min"`` takes
    the fastest run instead of the median (see :data:`STATISTICS`).
    """
    check_clock(clock, threads)
    check_statistic(statistic)
    if not isinstance(warmup, int) or warmup < MIN_WARMUP:
        raise ValueError(f"warmup={warmup!r} must be an integer >= {MIN_WARMUP} (the protocol's floor)")
    if not isinstance(runs, int) or runs < MIN_RUNS:
        raise ValueError(f"runs={runs!r} must be an integer >= {MIN_RUNS} (the protocol's floor)")
    if isinstance(model, (str, os.PathLike)) and not pathlib.Path(model).is_file():
        raise ValueError(f"model path={str(model)!r} does not exist")
    session = make_session(model, threads=threads)
    return time_session(session, warmup=warmup, runs=runs, clock=clock, statistic=statistic)
