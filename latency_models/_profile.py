"""The profiler: time a workload of kernels and whole models on this machine, into a latency table.

A *workload* is what to time: a pool of kernels (each with how often it occurs in a model, from whoever
knows the models: ``search`` samples the search spaces) and a sequence of whole models (ONNX graphs with
their kernels). ``latency_models`` never imports the spaces; it times what it is given.

Plan, within a wall-clock budget:

1. Kernels (about 30 % of the budget): a first batch (the most frequent kernel of every operator and bit
   width and of every family first, then kernels drawn by frequency), then rounds of
   adaptive sampling: fit the per-kernel model, bring every family short of the rows its own fit needs up to
   them, and measure the pool kernels whose expected error in
   milliseconds (leave-one-out error of their measured neighbours x predicted latency x frequency) is the
   largest, as nn-Meter and LitePred do. A share of every round (``offgrid_share``, 15 %) goes to float32
   kernels of the pool's families at channel counts that are not a multiple of 8 (:func:`offgrid_variants`),
   chosen the same way: the models users bring have such widths (ShuffleNetV2 1.0x: 58 and 116 channels per
   branch; RegNetY's squeeze-and-excitation layers: 12-110), which run other kernels than the spaces' aligned
   widths, and a table that never timed one predicts them from the aligned ones (18.8 % of such torchvision
   exports within ±10 %, ``experiments/results/export_coverage.md``).
2. Whole models (the rest): the workload's models in order, timed end to end; these rows teach the
   predictor the difference between the sum of kernels and the whole graph.

The table is saved after every batch (atomically), and a run finding ``out`` already there continues it
(same device name and protocol), counting the time already spent against the budget and continuing the
sequence of whole models where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

from latency_models._kernel import Kernel
from latency_models._microgen import kernel_graph
from latency_models._protocol import Timing, measure_interleaved, reference_model
from latency_models._table import LatencyTable, continues, default_protocol, device_info, timing_params

__all__ = ["KERNEL_SHARE", "OFFGRID_SHARE", "WorkloadModel", "check_kernel_share", "measure_models",
           "offgrid_variants", "profile", "profile_models"]

logger = logging.getLogger(__name__)

#: Share of a profile's budget spent timing kernels alone, before the whole models (``profile(kernel_share=...)``).
KERNEL_SHARE = 0.3
#: Share of every adaptive round spent on off-grid widths (:func:`offgrid_variants`).
OFFGRID_SHARE = 0.15
#: Channel changes an off-grid variant draws from: even, so a split or shuffle in 2 groups still divides, and
#: never a multiple of 8 away, so an aligned width becomes 2, 4 or 6 past a multiple of 8 (not a multiple of 4: the
#: plain NCHW path of a blocking device; a multiple of 4 but not of 8 or 16: blocked, padded to whole blocks).
_OFFGRID_STEPS = (-6, -4, -2, 2, 4, 6)
_FIRST_BATCH = 120
_ROUND = 60
#: Kernels / whole models timed together by one worker process (interleaved, sessions created once).
_KERNEL_CHUNK = 40
_MODEL_CHUNK = 4

#: ``on_progress(done, total, message)``: what the profiler reports as it goes (see :class:`Progress`).
OnProgress = Callable[[float, float, str], None]


@dataclasses.dataclass(frozen=True)
class WorkloadModel:
    """One whole model to time.

    Attributes:
        onnx: an ONNX file path or ``onnx.ModelProto``.
        kernels: the kernels it executes, in graph order (what its table row records).
        candidate: the candidate it was made from, as a JSON dict, if any.
        source: where it comes from (a space name, a file name).
    """

    onnx: Any
    kernels: tuple[Kernel, ...]
    candidate: Mapping[str, Any] | None = None
    source: str = ""


def _open_table(out: pathlib.Path, *, device_name: str, description: str, threads: int,
                protocol: dict[str, Any]) -> LatencyTable:
    if out.exists():
        table = LatencyTable.load(out)
        if table.device.get("name") != device_name:
            raise ValueError(f"out={str(out)!r} holds device {table.device.get('name')!r}, not {device_name!r}: "
                             "use another --out or the same --device-name")
        if not continues(table.protocol, protocol) or table.device.get("threads") != threads:
            raise ValueError(f"out={str(out)!r} was measured under another protocol or thread count "
                             f"({table.protocol.get('name', 'karumi/1')}, threads={table.device.get('threads')}); "
                             "use another --out")
        logger.info("continuing %s: %d kernel rows, %d model rows", out, len(table.kernel_rows), len(table.model_rows))
        return table
    return LatencyTable(device=device_info(name=device_name, description=description, threads=threads),
                        protocol=protocol, extra={"spent_s": 0.0})


class _Timer:
    """Times ONNX models under the protocol, the reference model written once to a temporary file."""

    def __init__(self, threads: int, timing: Mapping[str, Any], workdir: pathlib.Path) -> None:
        self.threads, self.timing = threads, dict(timing)
        attempts = self.timing.get("kernel_settle_attempts")  # the kernel jobs' own cap, when the protocol sets one
        self.kernel_timing = self.timing if attempts is None else {**self.timing, "settle_attempts": int(attempts)}
        self.reference = workdir / "reference.onnx"
        if not self.reference.is_file():
            self.reference.write_bytes(reference_model().SerializeToString())

    def __call__(self, models: Sequence[Any], timing: Mapping[str, Any] | None = None) -> list[Timing]:
        return measure_interleaved(models, threads=self.threads, reference=self.reference,
                                   timing=self.timing if timing is None else timing)

    def kernels(self, kernels: Sequence[Kernel]) -> list[Timing]:
        """One-kernel graphs of ``kernels`` timed together (callers pass at most :data:`_KERNEL_CHUNK`), with at
        most ``kernel_settle_attempts`` attempts when the protocol sets it (else ``settle_attempts``)."""
        return self([kernel_graph(k) for k in kernels], self.kernel_timing)


def profile(pool: Mapping[Kernel, float], models: Callable[[int], WorkloadModel | None] | None, *, device_name: str,
            out: str | os.PathLike[str], threads: int = 1, budget_min: float = 10.0, description: str = "",
            seed: int = 0, timing: Mapping[str, Any] | None = None, spaces: Sequence[str] = (),
            space_options: Mapping[str, Any] | None = None, on_progress: OnProgress | None = None,
            offgrid_share: float = OFFGRID_SHARE, kernel_share: float = KERNEL_SHARE) -> LatencyTable:
    """Profile this machine within ``budget_min`` minutes and return the table (also saved at ``out``).

    Every latency is taken under the protocol ``karumi-interleaved/3`` (:func:`measure_interleaved`): kernels
    and whole models timed in batches by a worker process with only ONNX Runtime and numpy loaded, each row
    with the reference workload's latency of its batch (``reference_ms``). At the end it times its first
    :data:`~latency_models._floor.PROFILE_FLOOR_MODELS` whole models again (a few seconds past the budget) and
    records how far the second timing is from the first in ``table.extra["noise_floor"]`` (the table's own noise
    floor: :func:`~latency_models._floor.retime_floor`).

    Args:
        pool: the kernels that may be timed alone, each with its mean count per model (sampling weight).
        models: ``models(j)`` is the j-th whole model to time (deterministic, so a continued profile
            continues the sequence), None when there are no more; ``models=None``: kernels only.
        device_name: the name recorded in the table.
        out: the JSON file, written as the profile goes; an existing one (same device, protocol) is continued.
        threads: ONNX Runtime intra-op threads (pinned).
        budget_min: wall-clock minutes, including the time spent by earlier runs on the same ``out``.
        timing: overrides of the protocol's timing parameters (recorded in the table's protocol).
        spaces: names of what the workload describes (recorded in the protocol; a search checks them).
        space_options: the options the spaces were made with (input size...; recorded in the protocol).
        on_progress: ``on_progress(seconds_spent, budget_seconds, message)`` after every batch.
        offgrid_share: the share of every adaptive round given to float32 kernels of the pool's families at
            channel counts that are not a multiple of 8 (:func:`offgrid_variants`); 0: the pool's kernels only.
        kernel_share: the share of the budget spent timing kernels alone before the whole models (above 0, below 1;
            all of it when ``models`` is None); a kernel phase that runs out of kernels hands its minutes on.
    """
    import numpy as np

    if not pool:
        raise ValueError("pool is empty: give at least one kernel to profile")
    check_offgrid_share(offgrid_share)
    check_kernel_share(kernel_share)
    if not isinstance(budget_min, (int, float)) or budget_min <= 0:
        raise ValueError(f"budget_min={budget_min!r} must be a positive number of minutes")
    if not device_name:
        raise ValueError(f"device_name={device_name!r} must be a non-empty string")
    out = pathlib.Path(out)
    protocol = default_protocol(**dict(timing or {}))
    protocol["spaces"] = sorted(set(spaces))
    if space_options:
        protocol["space_options"] = {k: v for k, v in sorted(space_options.items())}
    table = _open_table(out, device_name=device_name, description=description, threads=threads, protocol=protocol)
    budget_s = 60.0 * float(budget_min)
    spent0 = float(table.extra.get("spent_s", 0.0))
    start = time.perf_counter()

    def spent() -> float:
        return spent0 + time.perf_counter() - start

    def tick(msg: str) -> None:
        table.extra["spent_s"] = spent()
        if on_progress is not None:
            on_progress(min(spent(), budget_s), budget_s, msg)

    def save() -> None:
        table.extra["spent_s"] = spent()
        table.save(out)

    with tempfile.TemporaryDirectory(prefix="karumi-profile-") as tmp:
        timer = _Timer(threads, timing_params(table.protocol), pathlib.Path(tmp))
        try:
            # ------------------------------------------------------------ kernels
            measured = {r.kernel for r in table.kernel_rows}
            kernel_deadline = kernel_share * budget_s if models is not None else budget_s
            rng = np.random.default_rng([seed, 99])
            offgrid = offgrid_variants(pool, seed=seed) if offgrid_share > 0 else {}
            n_off = max(1, round(offgrid_share * _ROUND)) if offgrid else 0
            while spent() < kernel_deadline:
                todo = [k for k in pool if k not in measured]
                off_todo = [k for k in offgrid if k not in measured]
                if not todo and not off_todo:
                    break
                if len(table.kernel_rows) < _FIRST_BATCH and todo:
                    batch = _first_batch(todo, pool, min(_FIRST_BATCH - len(table.kernel_rows), len(todo)), rng,
                                         covered=measured)
                else:
                    from latency_models._kernel_model import KernelModel

                    km = KernelModel([r.kernel for r in table.kernel_rows], [r.latency_ms for r in table.kernel_rows],
                                     nchwc=table.device.get("nchwc"))  # KernelModel makes the JSON list a tuple
                    # families short of rows first: with fewer than the per-family fit needs, a family's
                    # kernels are predicted from other families (which can be far off, and then never chosen)
                    room = _ROUND - min(n_off if todo else _ROUND, len(off_todo))
                    batch = _short_families(todo, [r.kernel for r in table.kernel_rows])[:room]
                    chosen = set(batch)
                    for cands, weight, n in ((todo, pool, room - len(batch)), (off_todo, offgrid, _ROUND - room)):
                        if cands and n > 0:
                            score = km.uncertainty(cands) * km.predict(cands) * np.array([weight[k] for k in cands])
                            batch += [cands[i] for i in np.argsort(-score) if cands[i] not in chosen][:n]
                for i in range(0, len(batch), _KERNEL_CHUNK):
                    if spent() >= kernel_deadline:
                        break
                    chunk = batch[i:i + _KERNEL_CHUNK]
                    for k, t in zip(chunk, timer.kernels(chunk)):
                        table.add_kernel(k, t.latency_ms, reference_ms=t.reference_ms,
                                         memory_reference_ms=t.memory_reference_ms)
                        measured.add(k)
                    tick(f"{len(table.kernel_rows)} kernels")
                    save()
            # ------------------------------------------------------------ whole models
            j = len(table.model_rows)
            while models is not None and spent() < budget_s:
                chunk = []
                for _ in range(_MODEL_CHUNK):
                    m = models(j + len(chunk))
                    if m is None:
                        break
                    chunk.append(m)
                if not chunk:
                    break
                for m, t in zip(chunk, timer([m.onnx for m in chunk])):
                    table.add_model(m.kernels, t.latency_ms, candidate=m.candidate, source=m.source,
                                    reference_ms=t.reference_ms, memory_reference_ms=t.memory_reference_ms)
                j += len(chunk)
                tick(f"{len(table.kernel_rows)} kernels, {len(table.model_rows)} models")
                save()
            if models is not None and _record_floor(table, models, timer):
                tick(f"{len(table.kernel_rows)} kernels, {len(table.model_rows)} models, noise floor")
                save()
        finally:
            save()
    return table


def _record_floor(table: LatencyTable, models: Callable[[int], WorkloadModel | None], timer: "_Timer") -> bool:
    """Time the table's first :data:`~latency_models._floor.PROFILE_FLOOR_MODELS` calibration models again, as the
    profile timed them (jobs of :data:`_MODEL_CHUNK`), and record how far the second timing is from the first in
    ``table.extra["noise_floor"]`` (:func:`~latency_models._floor.retime_floor`). False, recording nothing, when the
    table has fewer such rows, or ``models`` no longer gives the same models (their kernels differ)."""
    from latency_models._floor import PROFILE_FLOOR_MODELS, retime_floor

    first = table.model_rows[:PROFILE_FLOOR_MODELS]
    if len(first) < PROFILE_FLOOR_MODELS:
        return False
    again = [models(i) for i in range(PROFILE_FLOOR_MODELS)]
    if any(m is None or tuple(m.kernels) != tuple(r.kernels) for m, r in zip(again, first)):
        logger.warning("noise floor not measured: the profile's first %d models are not the table's first model rows",
                       PROFILE_FLOOR_MODELS)
        return False
    second = []
    for i in range(0, PROFILE_FLOOR_MODELS, _MODEL_CHUNK):
        second += timer([m.onnx for m in again[i:i + _MODEL_CHUNK]])
    table.extra["noise_floor"] = {
        **retime_floor([r.latency_ms for r in first], [r.reference_ms for r in first],
                       [t.latency_ms for t in second], [t.reference_ms for t in second]),
        "model_rows": len(table.model_rows)}
    return True


def check_offgrid_share(value: Any, name: str = "offgrid_share") -> float:
    """``value`` as a share of the adaptive rounds in [0, 1); else a ValueError naming ``name`` (a command line
    passes its flag)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        sep = "=" if name.isidentifier() else " "
        raise ValueError(f"{name}{sep}{value!r} must be a number in [0, 1): the share of every adaptive round given to "
                         "off-grid widths (0: the pool's kernels only)")
    return float(value)


def check_kernel_share(value: Any, name: str = "kernel_share") -> float:
    """``value`` as a share of a profile's budget in (0, 1); else a ValueError naming ``name`` (a command line passes
    its flag)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        shown = f"={value!r}" if name.isidentifier() or not number else f" {value:g}"  # a flag: as typed
        raise ValueError(f"{name}{shown}; allowed: a share of the budget above 0 and below 1")
    return float(value)


def offgrid_variants(pool: Mapping[Kernel, float], *, seed: int = 0) -> dict[Kernel, float]:
    """Float32 kernels like the pool's at channel counts that are not a multiple of 8, each with the summed
    frequency of the pool kernels it was drawn from (deterministic in ``seed``; none already in the pool).

    Every float32 convolution, pool, add, activation, excitation, concatenation, split and shuffle of the pool gets
    one variant with its channel counts moved by an even step of 2-6 (:data:`_OFFGRID_STEPS`), the operator's
    constraints kept: a depthwise convolution stays depthwise, a grouped one keeps its channels per group and changes
    its number of groups, a split or shuffle keeps a multiple of its groups, an input of fewer than 8 channels (the
    image) stays. Fully connected layers have no channel layout and get none. Quantised and float16 layers are left
    to the pool: the models that come from elsewhere are float32 exports.
    """
    import numpy as np

    rng = np.random.default_rng([seed, 8])

    def moved(c: int, multiple: int = 1) -> int:
        for _ in range(8):
            new = c + int(rng.choice(_OFFGRID_STEPS))
            if new > 0 and new % 8 and new % multiple == 0:
                return new
        return c

    out: dict[Kernel, float] = {}
    for k in sorted(pool, key=lambda k: k.key()):
        if k.bits != 32 or k.op == "linear":
            continue
        c, rest = k.input_shape[0], k.input_shape[1:]
        if k.op == "conv" and k.groups == 1:
            cin = c if c < 8 else moved(c)
            variant = dataclasses.replace(k, input_shape=(cin, *rest), out_channels=moved(k.out_channels or c))
        elif k.op == "conv" and k.groups == c == (k.out_channels or c):  # depthwise
            new = moved(c)
            variant = dataclasses.replace(k, input_shape=(new, *rest), out_channels=new, groups=new)
        elif k.op == "conv":  # grouped: the channels per group kept, the number of groups moved
            per_in, per_out = c // k.groups, (k.out_channels or c) // k.groups
            groups = next((g for g in (k.groups + int(s) for s in rng.permutation([-3, -2, -1, 1, 2, 3]))
                           if g > 1 and (g * per_in) % 8 and (g * per_out) % 8), k.groups)
            variant = dataclasses.replace(k, input_shape=(groups * per_in, *rest), out_channels=groups * per_out,
                                          groups=groups)
        else:
            variant = dataclasses.replace(k, input_shape=(moved(c, k.groups if k.op in ("split", "channel_shuffle")
                                                                else 1), *rest))
        if variant != k and variant not in pool:
            out[variant] = out.get(variant, 0.0) + pool[k]
    return out


def _short_families(todo: Sequence[Kernel], measured: Sequence[Kernel]) -> list[Kernel]:
    """Kernels of ``todo`` that bring every family (:func:`~latency_models._features.family`) with fewer
    measured rows than the kernel model fits a family on (``_MIN_ROWS``) up to that many, spread over the
    family's sizes (evenly spaced in the order of MACs and activation bytes). Adaptive sampling ranks by
    expected error times predicted time, so a family predicted far too fast from other families' rows is never
    chosen again: a 128-px profile on an Intel Xeon kept one row of 4-bit 7x7 depthwise convolutions, one of
    the slowest kernels of its MobileNet models (``experiments/results/family_fallback.md``)."""
    import numpy as np

    from latency_models._features import family, physical
    from latency_models._kernel_model import _MIN_ROWS

    have: dict[str, int] = {}
    for k in measured:
        f = family(k)
        have[f] = have.get(f, 0) + 1
    by_fam: dict[str, list[Kernel]] = {}
    for k in todo:
        f = family(k)
        if have.get(f, 0) < _MIN_ROWS:
            by_fam.setdefault(f, []).append(k)
    out: list[Kernel] = []
    for f, ks in sorted(by_fam.items()):
        need = min(_MIN_ROWS - have.get(f, 0), len(ks))
        phys = physical(ks)
        ks = [ks[i] for i in np.lexsort((phys[:, 1], phys[:, 0]))]
        out += [ks[int(i)] for i in np.unique(np.round(np.linspace(0, len(ks) - 1, need)).astype(int))]
    return out


def _first_batch(todo: Sequence[Kernel], pool: Mapping[Kernel, float], n: int, rng: Any, *,
                 covered: set[Kernel]) -> list[Kernel]:
    """The first ``n`` kernels to time: the most frequent kernel of every (operator, bit width) and then of
    every family (:func:`~latency_models._features.family`) the pool holds and ``covered`` lacks, in that
    order, then kernels drawn at random by frequency. Timed first, so that a profile cut short (a small
    budget, a slow machine, an interrupted run) still holds a kernel of each kind its space uses: without
    one, a search refuses the table ("no kernels like the space's"), and a family's predictions rest on no
    measurement at all."""
    import numpy as np

    from latency_models._features import family

    by_freq = sorted(todo, key=lambda k: -pool[k])
    first: dict[Kernel, None] = {}
    for key in (lambda k: (k.op, k.bits), family):
        seen = {key(k) for k in covered}
        for k in by_freq:
            if len(first) < n and key(k) not in seen:
                seen.add(key(k))
                first[k] = None
    rest = [k for k in todo if k not in first]
    if len(first) < n and rest:
        weights = np.array([pool[k] for k in rest])
        pick = rng.choice(len(rest), size=min(n - len(first), len(rest)), replace=False, p=weights / weights.sum())
        first.update((rest[i], None) for i in pick)
    return list(first)


def profile_models(models: Sequence[Any], *, out: str | os.PathLike[str], names: Sequence[str] | None = None,
                   on_progress: OnProgress | None = None) -> LatencyTable:
    """Add ONNX models to an existing table: their kernels the table lacks, and each whole model, timed here.

    For models outside the profiled spaces (a teacher, a hand-made baseline): the predictor fitted on the
    table then knows their kernels and their end-to-end time instead of extrapolating to them. Uses the
    table's own protocol and thread count; kernels already in the table are not timed again, and a model
    already in the table under the same name is skipped, so calling it again costs nothing.

    Args:
        models: ONNX file paths or ``onnx.ModelProto``.
        out: the table file (written by :func:`profile`); saved again when rows were added.
        names: the ``source`` recorded on each model row (default ``"onnx:<index>"`` or the file name).
        on_progress: ``on_progress(graphs_timed, graphs_to_time, message)`` after every timing.

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
    timing = timing_params(table.protocol)
    threads = int(table.device.get("threads") or 1)
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
    total, done = sum(len(m) + 1 for *_, m in plan), 0
    with tempfile.TemporaryDirectory(prefix="karumi-profile-") as tmp:
        timer = _Timer(threads, timing, pathlib.Path(tmp))
        try:
            for model, name, kernels, missing in plan:
                for i in range(0, len(missing), _KERNEL_CHUNK):
                    chunk = missing[i:i + _KERNEL_CHUNK]
                    for k, t in zip(chunk, timer.kernels(chunk)):
                        table.add_kernel(k, t.latency_ms, reference_ms=t.reference_ms,
                                         memory_reference_ms=t.memory_reference_ms)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, total, name)
                (t,) = timer([model])
                table.add_model(kernels, t.latency_ms, source=name, reference_ms=t.reference_ms,
                                memory_reference_ms=t.memory_reference_ms)
                done += 1
                if on_progress is not None:
                    on_progress(done, total, name)
                logger.info("profiled %s: %d new kernels, %.4f ms end to end", name, len(missing), t.latency_ms)
        finally:
            table.save(out)
    return table


def measure_models(models: Sequence[WorkloadModel], *, device_name: str, out: str | os.PathLike[str] | None = None,
                   threads: int = 1, timing: Mapping[str, Any] | None = None, spaces: Sequence[str] = (),
                   on_progress: OnProgress | None = None) -> LatencyTable:
    """Time whole models end to end (held-out evaluation data): a table of model rows only.

    Under the protocol ``karumi-interleaved/3``, a few models at a time interleaved in one worker process,
    each row with the reference's latency of its batch. Writes ``out`` after every batch and continues an
    existing file (the first rows it holds are the first models of ``models``, which must come in the same
    order).
    """
    protocol = default_protocol(**dict(timing or {}))
    protocol["spaces"] = sorted(set(spaces))
    path = pathlib.Path(out) if out is not None else None
    if path is not None:
        table = _open_table(path, device_name=device_name, description="held-out whole models", threads=threads,
                            protocol=protocol)
    else:
        table = LatencyTable(device=device_info(name=device_name, threads=threads), protocol=protocol)
    with tempfile.TemporaryDirectory(prefix="karumi-measure-") as tmp:
        timer = _Timer(threads, timing_params(table.protocol), pathlib.Path(tmp))
        n = len(models)
        while len(table.model_rows) < n:
            j = len(table.model_rows)
            chunk = models[j:j + _MODEL_CHUNK]
            for m, t in zip(chunk, timer([m.onnx for m in chunk])):
                table.add_model(m.kernels, t.latency_ms, candidate=m.candidate, source=m.source,
                                reference_ms=t.reference_ms, memory_reference_ms=t.memory_reference_ms)
            if path is not None:
                table.save(path)
            if on_progress is not None:
                on_progress(len(table.model_rows), n, chunk[-1].source)
    return table
