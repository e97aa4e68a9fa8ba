"""Profiling a device for the search spaces: the spaces' workload, timed by ``latency_models``.

``latency_models`` times kernels and whole ONNX models and knows nothing of the spaces; this module is the
side that does: it samples candidates of the spaces, collects the kernels they execute (how often each
occurs) and exports whole models, and hands that workload to :func:`latency_models.profile`. It is also
the command line ``python -m search profile | measure`` (which ``python -m latency_models profile |
measure`` hands over to).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from collections.abc import Sequence as SequenceABC
from typing import Any, Callable, Sequence

from latency_models import (BITS, KERNEL_SHARE, OFFGRID_SHARE, LatencyTable, Progress, WorkloadModel,
                            check_kernel_share, check_offgrid_share, fit_beside, measure_models, profile,
                            write_workload)
from spaces import SearchSpace, get_space

__all__ = ["kernel_pool", "main", "measure_spaces", "profile_spaces", "space_models", "write_space_workload"]

logger = logging.getLogger(__name__)

#: Random candidates per space whose kernels form the pool the profiler samples kernels from.
POOL_CANDIDATES = 150


def kernel_pool(spaces: Sequence[SearchSpace], *, n_per_space: int = POOL_CANDIDATES, seed: int = 0) -> dict[Any, float]:
    """Distinct kernels of ``n_per_space`` random candidates per space, with their mean count per model."""
    import numpy as np

    pool: dict[Any, float] = {}
    for j, space in enumerate(spaces):
        rng = np.random.default_rng([seed, j, 17])
        for _ in range(n_per_space):
            for k in space.kernels(space.sample(rng)):
                pool[k] = pool.get(k, 0.0) + 1.0 / n_per_space
    return pool


#: Bit widths of the uniform-precision calibration models, in turn (float32 every second one).
UNIFORM_BITS = (32, 8, 32, 16, 32, 4)
#: Which calibration models a profile times (part of the search's device-cache key: a profile of random
#: per-layer widths only, as before, is profiled again rather than reused). "/2": the untrained calibration
#: models are exported with drawn BatchNorm statistics (distinct biases, as trained models have; with zero
#: biases ONNX Runtime ran float16 layers off the blocked path: ``spaces._base._drawn_statistics``).
CALIBRATION = "random-and-uniform-widths/2"
#: How the spaces list a candidate's kernels, where it changed what a table's rows mean (part of the device-cache
#: key too): "/1" lists a max pool next to a quantised layer at 8 bits (ONNX Runtime runs it on uint8).
KERNEL_LISTING = "int8-max-pool/1"


def _model(space: SearchSpace, rng: Any, bits: int | None = None) -> WorkloadModel:
    cand = space.sample(rng) if bits is None else space.sample(rng, bits=(bits,))
    return WorkloadModel(onnx=space.onnx(cand), kernels=tuple(space.kernels(cand)), candidate=cand.to_dict(),
                         source=space.name)


def calibration_bits(j: int, n_spaces: int) -> int | None:
    """The bit width of every layer of the j-th calibration model, or None for random widths per layer.

    The spaces take turns; every second turn draws a uniform-precision model (widths in turn from
    :data:`UNIFORM_BITS`), the others a random width per layer. What a search ships (a float model on a
    device that rewards no quantisation, a uniform compression from the search's starts) and models from
    elsewhere (float exports) run without the quantise / dequantise nodes between layers that random widths
    put in almost every model, and run differently in context: a profile of random widths only never sees
    them whole."""
    turn = j // n_spaces
    return None if turn % 2 == 0 else UNIFORM_BITS[(turn // 2) % len(UNIFORM_BITS)]


def space_models(spaces: Sequence[SearchSpace], *, seed: int = 0) -> Callable[[int], WorkloadModel]:
    """``models(j)``: the j-th calibration model, a random candidate of the spaces in turn (deterministic);
    every second turn all its layers share one bit width (:func:`calibration_bits`)."""
    import numpy as np

    n = len(spaces)
    return lambda j: _model(spaces[j % n], np.random.default_rng([seed, 7, j]), calibration_bits(j, n))


def _space_options(spaces: Sequence[SearchSpace]) -> dict[str, Any]:
    """The options the spaces were made with (the same for all: they are made from the same command line)."""
    opts: dict[str, Any] = {}
    for s in spaces:
        opts.update({k: v for k, v in s.options.items() if isinstance(v, (int, float, str, bool))})
    return opts


class _HeldOut(SequenceABC):
    """``n`` random models per space, exported when first asked for (a held-out set can be long); with
    ``bits``, every layer at that width."""

    def __init__(self, spaces: Sequence[SearchSpace], n: int, seed: int, bits: int | None = None) -> None:
        self.spaces, self.n, self.seed, self.bits = list(spaces), n, seed, bits

    def __len__(self) -> int:
        return self.n * len(self.spaces)

    def __getitem__(self, i: Any) -> Any:
        import numpy as np

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _model(self.spaces[i % len(self.spaces)], np.random.default_rng([self.seed, i]), self.bits)


def profile_spaces(spaces: Sequence[SearchSpace], *, device_name: str, out: str | pathlib.Path,
                   threads: int = 1, budget_min: float = 10.0, description: str = "", seed: int = 0,
                   timing: dict[str, Any] | None = None, pool_candidates: int = POOL_CANDIDATES,
                   on_progress: Callable[[float, float, str], None] | None = None,
                   offgrid_share: float = OFFGRID_SHARE, kernel_share: float = KERNEL_SHARE) -> LatencyTable:
    """Profile this machine for ``spaces`` (see :func:`latency_models.profile`, also for ``offgrid_share`` and
    ``kernel_share``): their kernels, then whole models, within ``budget_min`` minutes; continues ``out`` when it
    exists. The kernels are those of the spaces as made (their ``input_size`` and other options), so a 224x224 space
    profiles 224x224 kernels."""
    spaces = list(spaces)
    if not spaces:
        raise ValueError("spaces must name at least one search space")
    return profile(kernel_pool(spaces, n_per_space=pool_candidates, seed=seed), space_models(spaces, seed=seed),
                   device_name=device_name, out=out, threads=threads, budget_min=budget_min,
                   description=description, seed=seed, timing=timing, spaces=[s.name for s in spaces],
                   space_options=_space_options(spaces), on_progress=on_progress, offgrid_share=offgrid_share,
                   kernel_share=kernel_share)


def write_space_workload(spaces: Sequence[SearchSpace], folder: str | pathlib.Path, *, models: int = 120,
                         seed: int = 0, pool_candidates: int = POOL_CANDIDATES,
                         on_progress: Callable[[float, float, str], None] | None = None) -> pathlib.Path:
    """Write the spaces' profiling workload (kernel pool, ``models`` calibration models as ONNX files, a
    manifest) for a device that has no torch: it runs ``python -m latency_models profile-workload DIR``.
    The same workload :func:`profile_spaces` times here. Returns the manifest's path."""
    spaces = list(spaces)
    if not spaces:
        raise ValueError("spaces must name at least one search space")
    if not isinstance(models, int) or models < 0:
        raise ValueError(f"models={models!r} must be a non-negative integer")
    make = space_models(spaces, seed=seed)
    return write_workload(folder, kernel_pool(spaces, n_per_space=pool_candidates, seed=seed),
                          [make(j) for j in range(models)], spaces=[s.name for s in spaces],
                          space_options=_space_options(spaces), on_progress=on_progress)


def measure_spaces(spaces: Sequence[SearchSpace], *, n: int, device_name: str, out: str | pathlib.Path | None = None,
                   threads: int = 1, seed: int = 1_000_003, timing: dict[str, Any] | None = None,
                   bits: int | None = None,
                   on_progress: Callable[[float, float, str], None] | None = None) -> LatencyTable:
    """Time ``n`` random whole models per space (held-out data: the seed differs from the profile's); with
    ``bits`` (e.g. 32: whole float models, what a search ships where no quantisation pays) every layer of
    every model at that width, else a random width per layer."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    if bits is not None and (isinstance(bits, bool) or bits not in BITS):
        raise ValueError(f"bits={bits!r} is not allowed; allowed: one of {BITS}")
    spaces = list(spaces)
    return measure_models(_HeldOut(spaces, n, seed, bits), device_name=device_name, out=out, threads=threads,
                          timing=timing, spaces=[s.name for s in spaces], on_progress=on_progress)


def _spaces(args: argparse.Namespace) -> list[SearchSpace]:
    """The named spaces with the command line's options (``--input-size``, ``--num-classes``, ``--option``)."""
    import json

    options: dict[str, Any] = {}
    for name in ("input_size", "num_classes", "in_channels"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    for item in args.option or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} must be KEY=VALUE (VALUE in JSON, e.g. width_mult=0.5)")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    try:
        return [get_space(n, **options) for n in args.space]
    except TypeError as exc:
        raise ValueError(f"space options {options}: {exc}") from None


# --------------------------------------------------------------------------------------------- command line
def _cmd_profile(args: argparse.Namespace) -> int:
    space_objs = _spaces(args)
    if args.write_workload:
        with Progress(args.models, "exporting the workload", unit="model") as bar:
            manifest = write_space_workload(space_objs, args.write_workload, models=args.models, seed=args.seed,
                                            on_progress=bar.report)
        print(f"{manifest}: workload for {', '.join(args.space)} ({args.models} calibration models); on the "
              f"device: python -m latency_models profile-workload {args.write_workload} --out table.json")
        return 0
    if not args.out:
        raise ValueError("--out is required (or --write-workload DIR to profile another device)")
    check_offgrid_share(args.offgrid_share, "--offgrid-share")
    check_kernel_share(args.kernel_share, "--kernel-share")
    with Progress(60.0 * args.budget_min, f"profiling {args.device_name}", unit="s") as bar:
        table = profile_spaces(space_objs, device_name=args.device_name, out=args.out, threads=args.threads,
                               budget_min=args.budget_min, description=args.description, seed=args.seed,
                               on_progress=bar.report, offgrid_share=args.offgrid_share,
                               kernel_share=args.kernel_share)
    print("\n".join(fit_beside(table, args.out)[1]))
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    space_objs = _spaces(args)
    with Progress(args.n * len(args.space), "measuring", unit="model") as bar:
        table = measure_spaces(space_objs, n=args.n, device_name=args.device_name, out=args.out,
                               threads=args.threads, seed=args.seed, bits=args.bits, on_progress=bar.report)
    print(f"{args.out}: {len(table.model_rows)} whole models timed")
    return 0


def _space_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", action="append", required=True, help="a registered space name (repeatable)")
    p.add_argument("--input-size", type=int, default=None,
                   help="side of the square input in pixels the models are deployed at (default: the space's)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the space's)")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default: the space's)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="another space option, VALUE in JSON (repeatable)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m search", description="Profile this machine for the search spaces.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="time kernels and whole models of the given spaces on this machine")
    _space_flags(p)
    p.add_argument("--device-name", default="this-machine")
    p.add_argument("--out", help="table JSON; continued if it exists")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-min", type=float, default=10.0)
    p.add_argument("--description", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-workload", metavar="DIR", default=None,
                   help="do not time here: write the workload (kernel pool, calibration models as ONNX, manifest) "
                        "for a device without torch, which runs 'python -m latency_models profile-workload DIR'")
    p.add_argument("--models", type=int, default=120, help="calibration models in a --write-workload folder")
    p.add_argument("--offgrid-share", type=float, default=OFFGRID_SHARE,
                   help="share of every adaptive round given to float32 kernels of the pool's families at channel "
                        "counts that are not a multiple of 8, the widths of models from elsewhere (default "
                        f"{OFFGRID_SHARE:g}; 0: the pool only; a --write-workload folder's device chooses its own)")
    p.add_argument("--kernel-share", type=float, default=KERNEL_SHARE,
                   help=f"share of the budget spent timing kernels alone before the whole models (default "
                        f"{KERNEL_SHARE:g}; above 0, below 1; a --write-workload folder's device chooses its own)")
    p.set_defaults(func=_cmd_profile)
    m = sub.add_parser("measure", help="time N random whole models per space (held-out evaluation data)")
    _space_flags(m)
    m.add_argument("--n", type=int, required=True, help="models per space")
    m.add_argument("--out", required=True)
    m.add_argument("--device-name", default="this-machine")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--seed", type=int, default=1_000_003)
    m.add_argument("--bits", type=int, default=None,
                   help="every layer at this bit width (32: whole float models); default a random width per layer")
    m.set_defaults(func=_cmd_measure)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m search profile | measure ...``; bad input is one ``error:`` line and exit code 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: what was measured is saved; run the same command again to continue", file=sys.stderr)
        return 130
