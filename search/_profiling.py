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

from latency_models import LatencyPredictor, LatencyTable, Progress, WorkloadModel, measure_models, profile
from spaces import SearchSpace, get_space

__all__ = ["kernel_pool", "main", "measure_spaces", "profile_spaces", "space_models"]

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


def _model(space: SearchSpace, rng: Any) -> WorkloadModel:
    cand = space.sample(rng)
    return WorkloadModel(onnx=space.onnx(cand), kernels=tuple(space.kernels(cand)), candidate=cand.to_dict(),
                         source=space.name)


def space_models(spaces: Sequence[SearchSpace], *, seed: int = 0) -> Callable[[int], WorkloadModel]:
    """``models(j)``: the j-th calibration model, a random candidate of the spaces in turn (deterministic)."""
    import numpy as np

    return lambda j: _model(spaces[j % len(spaces)], np.random.default_rng([seed, 7, j]))


class _HeldOut(SequenceABC):
    """``n`` random models per space, exported when first asked for (a held-out set can be long)."""

    def __init__(self, spaces: Sequence[SearchSpace], n: int, seed: int) -> None:
        self.spaces, self.n, self.seed = list(spaces), n, seed

    def __len__(self) -> int:
        return self.n * len(self.spaces)

    def __getitem__(self, i: Any) -> Any:
        import numpy as np

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _model(self.spaces[i % len(self.spaces)], np.random.default_rng([self.seed, i]))


def profile_spaces(spaces: Sequence[SearchSpace], *, device_name: str, out: str | pathlib.Path,
                   threads: int = 1, budget_min: float = 10.0, description: str = "", seed: int = 0,
                   clock: str = "wall", statistic: str = "median", pool_candidates: int = POOL_CANDIDATES,
                   on_progress: Callable[[float, float, str], None] | None = None) -> LatencyTable:
    """Profile this machine for ``spaces`` (see :func:`latency_models.profile`): their kernels, then whole
    models, within ``budget_min`` minutes; continues ``out`` when it exists."""
    spaces = list(spaces)
    if not spaces:
        raise ValueError("spaces must name at least one search space")
    return profile(kernel_pool(spaces, n_per_space=pool_candidates, seed=seed), space_models(spaces, seed=seed),
                   device_name=device_name, out=out, threads=threads, budget_min=budget_min,
                   description=description, seed=seed, clock=clock, statistic=statistic,
                   spaces=[s.name for s in spaces], on_progress=on_progress)


def measure_spaces(spaces: Sequence[SearchSpace], *, n: int, device_name: str, out: str | pathlib.Path | None = None,
                   threads: int = 1, seed: int = 1_000_003, clock: str = "wall", statistic: str = "median",
                   on_progress: Callable[[float, float, str], None] | None = None) -> LatencyTable:
    """Time ``n`` random whole models per space (held-out data: the seed differs from the profile's)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")
    spaces = list(spaces)
    return measure_models(_HeldOut(spaces, n, seed), device_name=device_name, out=out, threads=threads,
                          clock=clock, statistic=statistic, spaces=[s.name for s in spaces], on_progress=on_progress)


# --------------------------------------------------------------------------------------------- command line
def _cmd_profile(args: argparse.Namespace) -> int:
    with Progress(60.0 * args.budget_min, f"profiling {args.device_name}", unit="s") as bar:
        table = profile_spaces([get_space(n) for n in args.space], device_name=args.device_name, out=args.out,
                               threads=args.threads, budget_min=args.budget_min, description=args.description,
                               seed=args.seed, clock=args.clock, statistic=args.statistic, on_progress=bar.report)
    pred_path = pathlib.Path(args.out).with_suffix(".predictor.json")
    LatencyPredictor.fit(table).save(pred_path)
    print(f"{args.out}: {len(table.kernel_rows)} kernel rows, {len(table.model_rows)} model rows "
          f"in {table.extra.get('spent_s', 0.0) / 60:.1f} min; predictor written to {pred_path}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    with Progress(args.n * len(args.space), "measuring", unit="model") as bar:
        table = measure_spaces([get_space(n) for n in args.space], n=args.n, device_name=args.device_name,
                               out=args.out, threads=args.threads, seed=args.seed, clock=args.clock,
                               statistic=args.statistic, on_progress=bar.report)
    print(f"{args.out}: {len(table.model_rows)} whole models timed")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m search", description="Profile this machine for the search spaces.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="time kernels and whole models of the given spaces on this machine")
    p.add_argument("--space", action="append", required=True, help="a registered space name (repeatable)")
    p.add_argument("--device-name", required=True)
    p.add_argument("--out", required=True, help="table JSON; continued if it exists")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget-min", type=float, default=10.0)
    p.add_argument("--description", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "thread_cpu"), default="wall",
                   help="thread_cpu: CPU time of the one ORT thread, for a machine shared with other processes")
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="statistic over the timed runs (min: least disturbed run, for a shared machine)")
    p.set_defaults(func=_cmd_profile)
    m = sub.add_parser("measure", help="time N random whole models per space (held-out evaluation data)")
    m.add_argument("--space", action="append", required=True)
    m.add_argument("--n", type=int, required=True, help="models per space")
    m.add_argument("--out", required=True)
    m.add_argument("--device-name", default="this-machine")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--seed", type=int, default=1_000_003)
    m.add_argument("--clock", choices=("wall", "thread_cpu"), default="wall")
    m.add_argument("--statistic", choices=("median", "min"), default="median")
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
