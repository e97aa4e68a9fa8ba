"""Command line: profile a device, time held-out models, evaluate a predictor."""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Any, Sequence

__all__ = ["main"]


def _spaces(names: Sequence[str]) -> list[Any]:
    import spaces  # lazily: latency_models itself never imports spaces

    return [spaces.get_space(n) for n in names]


def _load_predictor(path: str) -> Any:
    from latency_models._predictor import LatencyPredictor
    from latency_models._table import LatencyTable, read_json

    data = read_json(path, what="--predictor")
    if isinstance(data, dict) and data.get("kind") == "karumi.LatencyPredictor":
        return LatencyPredictor.from_dict(data)
    return LatencyPredictor.fit(LatencyTable.from_dict(data))  # a table: fit on the fly


def _cmd_profile(args: argparse.Namespace) -> int:
    from latency_models._predictor import LatencyPredictor
    from latency_models._profile import profile

    table = profile(_spaces(args.space), device_name=args.device_name, out=args.out, threads=args.threads,
                    budget_min=args.budget_min, description=args.description, progress=True, seed=args.seed,
                    clock=args.clock, statistic=args.statistic)
    pred = LatencyPredictor.fit(table)
    pred_path = pathlib.Path(args.out).with_suffix(".predictor.json")
    pred.save(pred_path)
    print(f"{args.out}: {len(table.kernel_rows)} kernel rows, {len(table.model_rows)} model rows "
          f"in {table.extra.get('spent_s', 0.0) / 60:.1f} min; predictor written to {pred_path}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from latency_models._profile import measure_models

    table = measure_models(_spaces(args.space), n=args.n, device_name=args.device_name, out=args.out,
                           threads=args.threads, seed=args.seed, clock=args.clock,
                           statistic=args.statistic)
    print(f"{args.out}: {len(table.model_rows)} whole models timed")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from latency_models._evaluate import evaluate
    from latency_models._table import LatencyTable

    pred = _load_predictor(args.predictor)
    held = LatencyTable.load(args.measured)
    res = evaluate(pred, held)
    print(f"n={res['n']}  within ±5%: {100 * res['within_5']:.1f}%  within ±10%: {100 * res['within_10']:.1f}%  "
          f"RMSPE: {100 * res['rmspe']:.2f}%  Spearman: {res['spearman']:.4f}")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m latency_models", description=__doc__)
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
    e = sub.add_parser("evaluate", help="score a predictor (or a table, fitted on the fly) on measured models")
    e.add_argument("--predictor", required=True)
    e.add_argument("--measured", required=True)
    e.set_defaults(func=_cmd_evaluate)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
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
