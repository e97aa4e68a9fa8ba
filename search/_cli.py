"""``python -m search``: the command line over :func:`search.run`.

Bad input prints one line (``error: ...``) and exits with code 2, without a traceback and without writing
to the output folder. Ctrl-C during the search writes the results so far and exits with code 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from search._errors import InputError

__all__ = ["build_parser", "main"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _parts(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every default is None so that ``--resume`` can tell given options apart."""
    from search._run import DEFAULTS

    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="python -m search",
        description="Search the most accurate compressed model that meets a latency budget on a device, and "
                    "export it (ONNX) with its Pareto front and a report.",
    )
    p.add_argument("--budget-ms", type=float, metavar="MS", help="latency budget on the target device, in milliseconds")
    p.add_argument("--space", metavar="NAME",
                   help=f"search space: mobilenet, shufflenet, fbnet or prune (default {d['space']})")
    p.add_argument("--data", metavar="NAME",
                   help="data set: digits, shapes (generated offline), cifar10, cifar100, mnist, fashion-mnist or imagefolder:PATH "
                        f"(default {d['data']}, ships with scikit-learn)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of the torchvision data sets (default ~/.cache/karumi/data)")
    p.add_argument("--download", action="store_const", const=True, help="download a torchvision data set into --data-dir")
    p.add_argument("--teacher", metavar="SPEC",
                   help="builtin (a CNN trained on the data once, cached), a TorchScript/.pt2 file, or "
                        "torchvision:NAME=STATE_DICT (default builtin)")
    p.add_argument("--device", metavar="SPEC",
                   help="local (this CPU via ONNX Runtime, profiled once and cached) or a latency table / saved "
                        "predictor JSON (default local)")
    p.add_argument("--trials", type=int, metavar="N", help=f"number of trials (default {d['trials']})")
    p.add_argument("--timeout-min", type=float, metavar="M",
                   help=f"stop starting trials after M minutes (default {d['timeout_min']:g})")
    p.add_argument("--sampler", metavar="NAME", help=f"Optuna sampler: tpe, nsga2, random or gp (default {d['sampler']})")
    p.add_argument("--seed", type=int, metavar="S", help=f"seed of the splits, sampler and training (default {d['seed']})")
    p.add_argument("--out", metavar="DIR", help="output folder, must be new or empty (default runs/<UTC time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its saved options")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL, e.g. postgresql://... (default a SQLite file in the output folder)")
    p.add_argument("--study-name", metavar="NAME", help=f"Optuna study name in the storage (default {d['study_name']})")
    p.add_argument("--final-epochs", type=int, metavar="E",
                   help=f"distillation epochs of the selected model's final fine-tune (default {d['final_epochs']})")
    p.add_argument("--search", type=_parts, metavar="PARTS",
                   help="what to search, a comma list of arch, prune, bits (default all three)")
    p.add_argument("--proxy-epochs", type=int, metavar="E",
                   help=f"distillation epochs of each trial's accuracy proxy (default {d['proxy_epochs']})")
    p.add_argument("--proxy-samples", type=int, metavar="N",
                   help=f"training images of each trial's accuracy proxy (default {d['proxy_samples']})")
    p.add_argument("--profile-min", type=float, metavar="M",
                   help=f"minutes of profiling for --device local on first use (default {d['profile_min']:g})")
    p.add_argument("--teacher-epochs", type=int, metavar="E",
                   help=f"training epochs of the built-in teacher on first use (default {d['teacher_epochs']})")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="run the trials on Ray: local (start Ray here), auto (this machine's cluster) or host:port")
    p.add_argument("--workers", type=int, metavar="N",
                   help=f"with --ray-address: trials running at once, one CPU each (default {d['workers']})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines, only the summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # exporting random-weight candidates to time them calibrates on noise by design: not worth a warning here
    logging.getLogger("spaces._quant").setLevel(logging.ERROR)
    options = {k: v for k, v in vars(args).items() if k not in ("resume", "quiet")}

    def echo(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    from search._report import summary
    from search._run import run

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
