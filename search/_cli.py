"""``python -m search``: the command line over :func:`search.run` (and ``profile`` / ``measure``).

Bad input prints one line (``error: ...``) and exits with code 2, without a traceback and without writing
to the output folder. Ctrl-C during the search writes the results so far and exits with code 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from search import _profiling
from search._errors import InputError
from search._options import add_arguments
from search._report import summary
from search._run import run

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "build_parser", "main"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: ``python -m search profile|measure ...``: profiling this machine for the spaces (search/_profiling.py).
SUBCOMMANDS = ("profile", "measure")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the search (one flag per field of :class:`search.SearchOptions`)."""
    p = argparse.ArgumentParser(
        prog="python -m search",
        description="Search the most accurate compressed model that meets a latency budget on a device, and "
                    "export it (ONNX) with its Pareto front and a report.",
        epilog="Also: 'python -m search profile --space NAME --device-name D --out T.json' profiles this "
               "machine for a space, 'python -m search measure ...' times held-out models (see their --help).",
    )
    add_arguments(p)
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its saved options")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines, only the summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _profiling.main(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}

    def echo(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        result = run(resume=args.resume, progress=not args.quiet, echo=echo, **options)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary(result), flush=True)
    return EXIT_INTERRUPTED if result.interrupted else 0
