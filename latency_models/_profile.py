"""The profiler: time the kernels a set of spaces can produce, and whole models, on this machine.

Plan, within a wall-clock budget:

1. Pool: sample candidates from every space and collect their kernels, each with how often it occurs.
2. Kernels (about 30 % of the budget): a first random batch (frequent kernels first), then rounds of
   adaptive sampling: fit the per-kernel model, and measure the pool kernels whose expected error in
   milliseconds (leave-one-out error of their measured neighbours x predicted latency x frequency) is the
   largest, as nn-Meter and LitePred do.
3. Whole models (the rest): random candidates of every space in turn, exported by ``space.onnx(candidate)``
   (the deployable graph, QDQ where bits say so), timed end to end; these rows teach the predictor the
   difference between the sum of kernels and the whole graph.

The table is saved after every batch (atomically), and a run finding ``out`` already there continues it
(same device name and protocol), counting the time already spent against the budget.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from typing import Any, Callable, Sequence

from latency_models._kernel import Kernel
from latency_models._measure import MIN_RUNS, MIN_WARMUP, check_clock, check_statistic, make_session, time_session
from latency_models._microgen import kernel_graph
from latency_models._table import LatencyTable, default_protocol, device_info

__all__ = ["profile", "profile_models", "measure_models", "sample_pool"]

logger = logging.getLogger(__name__)

_KERNEL_SHARE = 0.3
_FIRST_BATCH = 120
_ROUND = 60
_POOL_CANDIDATES = 150


def _check_spaces(spaces: Sequence[Any]) -> list[Any]:
    spaces = list(spaces)
    if not spaces:
        raise ValueError("spaces must name at least one search space")
    for s in spaces:
        for attr in ("sample", "kernels", "name"):
            if not hasattr(s, attr):
                raise ValueError(f"space {s!r} has no {attr!r}: a space needs .sample(rng), .kernels(cand) and .name")
    return spaces


def sample_pool(spaces: Sequence[Any], *, n_per_space: int = _POOL_CANDIDATES, seed: int = 0) -> dict[Kernel, float]:
    """Distinct kernels of ``n_per_space`` random candidates per space, with their mean count per model."""
    import numpy as np

    pool: dict[Kernel, float] = {}
    for j, space in enumerate(spaces):
        rng = np.random.default_rng([seed, j, 17])
        for _ in range(n_per_space):
            for k in space.kernels(space.sample(rng)):
                pool[k] = pool.get(k, 0.0) + 1.0 / n_per_space
    return pool


def _open_table(out: pathlib.Path, *, device_name: str, description: str, threads: int,
                protocol: dict[str, Any]) -> LatencyTable:
    if out.exists():
        table = LatencyTable.load(out)
        if table.device.get("name") != device_name:
            raise ValueError(f"out={str(out)!r} holds device {table.device.get('name')!r}, not {device_name!r}: "
                             "use another --out or the same --device-name")
        if table.protocol != protocol or table.device.get("threads") != threads:
            raise ValueError(f"out={str(out)!r} was measured under another protocol or thread count "
                             f"({table.protocol}, threads={table.device.get('threads')}); use another --out")
        logger.info("continuing %s: %d kernel rows, %d model rows", out, len(table.kernel_rows), len(table.model_rows))
        return table
    return LatencyTable(device=device_info(name=device_name, description=description, threads=threads),
                        protocol=protocol, extra={"spent_s": 0.0})


def _time_kernel(kernel: Kernel, threads: int, warmup: int, runs: int, clock: str, statistic: str) -> float:
    return time_session(make_session(kernel_graph(kernel), threads=threads), warmup=warmup, runs=runs, clock=clock,
                        statistic=statistic)


def profile(spaces: Sequence[Any], *, device_name: str, out: str | os.PathLike[str], threads: int = 1,
            budget_min: float = 10.0, description: str = "", progress: bool = True, seed: int = 0,
            warmup: int = MIN_WARMUP, runs: int = MIN_RUNS, clock: str = "wall",
            statistic: str = "median", pool_candidates: int = _POOL_CANDIDATES,
            on_progress: Callable[[float, str], None] | None = None) -> LatencyTable:
    """Profile this machine for ``spaces`` within ``budget_min`` minutes and return the table (also at ``out``).

    Args:
        spaces: space objects (``.sample(rng)``, ``.kernels(cand)``, ``.name``; ``.onnx(cand)`` for whole models).
        device_name: the name recorded in the table.
        out: the JSON file, written as the profile goes; an existing one (same device, protocol) is continued.
        threads: ONNX Runtime intra-op threads (pinned).
        budget_min: wall-clock minutes, including the time spent by earlier runs on the same ``out``.
        progress: show a tqdm progress bar (time-based, with an ETA) if tqdm is installed.
        clock: ``"wall"`` or ``"thread_cpu"`` (one thread only; for a machine shared with other processes).
        statistic: ``"median"`` (the protocol's default) or ``"min"`` over the timed runs.
        pool_candidates: random candidates per space whose kernels form the pool to sample kernels from.
        on_progress: optional callback ``(fraction_done, message)``.
    """
    import numpy as np

    spaces = _check_spaces(spaces)
    if not isinstance(budget_min, (int, float)) or budget_min <= 0:
        raise ValueError(f"budget_min={budget_min!r} must be a positive number of minutes")
    if not device_name:
        raise ValueError(f"device_name={device_name!r} must be a non-empty string")
    if warmup < MIN_WARMUP or runs < MIN_RUNS:
        raise ValueError(f"warmup={warmup}, runs={runs}: the protocol needs at least {MIN_WARMUP} and {MIN_RUNS}")
    check_clock(clock, threads)
    check_statistic(statistic)
    out = pathlib.Path(out)
    protocol = default_protocol(warmup=warmup, runs=runs, clock=clock, statistic=statistic)
    protocol["spaces"] = sorted({s.name for s in spaces})
    table = _open_table(out, device_name=device_name, description=description, threads=threads, protocol=protocol)
    budget_s = 60.0 * float(budget_min)
    spent0 = float(table.extra.get("spent_s", 0.0))
    start = time.perf_counter()

    def spent() -> float:
        return spent0 + time.perf_counter() - start

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=round(budget_s), initial=min(round(spent0), round(budget_s)), unit="s",
                       desc=f"profiling {device_name}", bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}]{postfix}")
        except ImportError:
            bar = None

    def tick(msg: str) -> None:
        table.extra["spent_s"] = spent()
        if bar is not None:
            bar.n = min(round(spent()), bar.total)
            bar.set_postfix_str(msg, refresh=True)
        if on_progress is not None:
            on_progress(min(spent() / budget_s, 1.0), msg)

    def save() -> None:
        table.extra["spent_s"] = spent()
        table.save(out)

    try:
        # ---------------------------------------------------------------- kernels
        pool = sample_pool(spaces, n_per_space=pool_candidates, seed=seed)
        measured = {r.kernel for r in table.kernel_rows}
        kernel_deadline = _KERNEL_SHARE * budget_s
        rng = np.random.default_rng([seed, 99])
        while spent() < kernel_deadline:
            todo = [k for k in pool if k not in measured]
            if not todo:
                break
            if len(table.kernel_rows) < _FIRST_BATCH:
                weights = np.array([pool[k] for k in todo])
                n = min(_FIRST_BATCH - len(table.kernel_rows), len(todo))
                pick = rng.choice(len(todo), size=n, replace=False, p=weights / weights.sum())
                batch = [todo[i] for i in pick]
            else:
                from latency_models._kernel_model import KernelModel

                km = KernelModel([r.kernel for r in table.kernel_rows], [r.latency_ms for r in table.kernel_rows])
                pred = km.predict(todo)
                score = km.uncertainty(todo) * pred * np.array([pool[k] for k in todo])
                order = np.argsort(-score)[:_ROUND]
                batch = [todo[i] for i in order]
            for k in batch:
                if spent() >= kernel_deadline:
                    break
                table.add_kernel(k, _time_kernel(k, threads, warmup, runs, clock, statistic))
                measured.add(k)
                tick(f"{len(table.kernel_rows)} kernels")
            save()
        # ---------------------------------------------------------------- whole models
        whole = [s for s in spaces if callable(getattr(s, "onnx", None))]
        if not whole:
            logger.warning("no space has .onnx(candidate): the table gets no model rows")
        j = len(table.model_rows)
        while whole and spent() < budget_s:
            space = whole[j % len(whole)]
            rng_m = np.random.default_rng([seed, 7, j])
            cand = space.sample(rng_m)
            model = space.onnx(cand)
            ms = time_session(make_session(model, threads=threads), warmup=warmup, runs=runs, clock=clock,
                              statistic=statistic)
            table.add_model(space.kernels(cand), ms, candidate=cand.to_dict() if hasattr(cand, "to_dict") else None,
                            source=space.name)
            j += 1
            tick(f"{len(table.kernel_rows)} kernels, {len(table.model_rows)} models")
            save()
    finally:
        save()
        if bar is not None:
            bar.close()
    return table


def profile_models(models: Sequence[Any], *, out: str | os.PathLike[str], names: Sequence[str] | None = None,
                   progress: bool = False) -> LatencyTable:
    """Add ONNX models to an existing table: their kernels the table lacks, and each whole model, timed here.

    For models outside the profiled spaces (a teacher, a hand-made baseline): the predictor fitted on the
    table then knows their kernels and their end-to-end time instead of extrapolating to them. Uses the
    table's own protocol and thread count; kernels already in the table are not timed again, and a model
    already in the table under the same name is skipped, so calling it again costs nothing.

    Args:
        models: ONNX file paths or ``onnx.ModelProto``.
        out: the table file (written by :func:`profile`); saved again when rows were added.
        names: the ``source`` recorded on each model row (default ``"onnx:<index>"`` or the file name).
        progress: show a tqdm progress bar over the timings.

    Raises:
        ValueError: ``out`` does not exist, ``names`` does not match ``models``, or a model has operators
            that map to no kernel (its kernels could not be timed one by one).
    """
    from latency_models._onnx_graph import kernels_from_onnx

    out = pathlib.Path(out)
    if not out.is_file():
        raise ValueError(f"out={str(out)!r} does not exist: profile the device first (latency_models.profile)")
    models = list(models)
    if names is None:
        names = [pathlib.Path(m).name if isinstance(m, (str, os.PathLike)) else f"onnx:{i}" for i, m in enumerate(models)]
    names = [str(n) for n in names]
    if len(names) != len(models):
        raise ValueError(f"names has {len(names)} entries for {len(models)} models")
    table = LatencyTable.load(out)
    proto = table.protocol
    threads = int(table.device.get("threads") or 1)
    timing = dict(warmup=int(proto["warmup_runs"]), runs=int(proto["timed_runs"]), clock=str(proto.get("clock", "wall")),
                  statistic=str(proto.get("statistic", "median")))
    have_models = {r.source for r in table.model_rows}
    have_kernels = {r.kernel for r in table.kernel_rows}
    plan = []
    for model, name in zip(models, names):
        if name in have_models:
            continue
        kernels, unknown = kernels_from_onnx(model)
        if unknown:
            raise ValueError(f"model {name!r} has operators that map to no kernel ({', '.join(unknown)}); "
                             "it cannot be profiled kernel by kernel")
        missing = list(dict.fromkeys(k for k in kernels if k not in have_kernels))
        have_kernels.update(missing)
        plan.append((model, name, kernels, missing))
    if not plan:
        return table
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(m) + 1 for *_, m in plan), unit="graph", desc="profiling models")
        except ImportError:
            bar = None
    try:
        for model, name, kernels, missing in plan:
            for k in missing:
                table.add_kernel(k, _time_kernel(k, threads, **timing))
                if bar is not None:
                    bar.update(1)
            ms = time_session(make_session(model, threads=threads), **timing)
            table.add_model(kernels, ms, source=name)
            if bar is not None:
                bar.update(1)
            logger.info("profiled %s: %d new kernels, %.4f ms end to end", name, len(missing), ms)
    finally:
        table.save(out)
        if bar is not None:
            bar.close()
    return table


def measure_models(spaces: Sequence[Any], *, n: int, device_name: str, out: str | os.PathLike[str] | None = None,
                   threads: int = 1, seed: int = 1_000_003, warmup: int = MIN_WARMUP, runs: int = MIN_RUNS,
                   clock: str = "wall", statistic: str = "median", progress: bool = True) -> LatencyTable:
    """Time ``n`` random whole models per space end to end (held-out evaluation data): model rows only.

    The seed differs from :func:`profile`'s, so these candidates are not the profiled ones. Writes ``out``
    after every model and continues an existing file.
    """
    import numpy as np

    spaces = _check_spaces(spaces)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    for s in spaces:
        if not callable(getattr(s, "onnx", None)):
            raise ValueError(f"space {s.name!r} has no .onnx(candidate): whole models cannot be exported")
    check_clock(clock, threads)
    check_statistic(statistic)
    protocol = default_protocol(warmup=warmup, runs=runs, clock=clock, statistic=statistic)
    protocol["spaces"] = sorted({s.name for s in spaces})
    path = pathlib.Path(out) if out is not None else None
    if path is not None:
        table = _open_table(path, device_name=device_name, description="held-out whole models", threads=threads,
                            protocol=protocol)
    else:
        table = LatencyTable(device=device_info(name=device_name, threads=threads), protocol=protocol)
    total = n * len(spaces)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=len(table.model_rows), unit="model", desc="measuring")
        except ImportError:
            bar = None
    done = len(table.model_rows)
    while done < total:
        space = spaces[done % len(spaces)]
        cand = space.sample(np.random.default_rng([seed, done]))
        ms = time_session(make_session(space.onnx(cand), threads=threads), warmup=warmup, runs=runs, clock=clock,
                          statistic=statistic)
        table.add_model(space.kernels(cand), ms, candidate=cand.to_dict() if hasattr(cand, "to_dict") else None,
                        source=space.name)
        done += 1
        if path is not None:
            table.save(path)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return table
