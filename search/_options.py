"""`SearchOptions`: every option of a search, defined once.

The dataclass below is the single definition: ``search.run``'s keyword arguments, the command line's flags
(``python -m search --help``), the ``config.json`` of a run folder and the report's reproducing command
line are all derived from its fields. Each field's metadata carries its help text, its metavar and
whether ``--resume`` may change it; the allowed values come from the registries that define them (the
spaces, the samplers, the data sets).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import pathlib
import shlex
from typing import Any, Callable, Mapping

from search._data import DATASETS, MIN_INPUT_SIZE, check_data_spec
from search._device import check_device_spec
from search._errors import InputError
from search._objective import SIZES
from search._pareto import SELECTIONS
from search._study import SAMPLERS
from search._teacher import check_teacher_spec
from latency_models import BITS
from spaces import SEARCH_PARTS, list_spaces, opt_in_genes

__all__ = ["CONFIG", "SearchOptions", "add_arguments", "command_line", "parse_bits", "resolve_options"]

#: The options file of a run folder.
CONFIG = "config.json"


def _option(default: Any, help: str, *, metavar: str | None = None, resume: bool = False,
            flag: bool = False, reproduce: bool = True) -> Any:
    """A field with its command-line description; ``resume``: ``--resume`` may change it."""
    return dataclasses.field(default=default, metadata={
        "help": help, "metavar": metavar, "resume": resume, "flag": flag, "reproduce": reproduce})


def _parts(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """The options of a search. ``help`` strings may name ``{default}`` and ``{choices}``."""

    budget_ms: float | None = _option(None, "latency budget on the target device, in milliseconds (required)",
                                      metavar="MS")
    space: str = _option("mobilenet", "search space: {choices}; prune is the teacher itself, pruned and "
                                      "quantised (default {default})", metavar="NAME")
    data: str = _option("digits", "data set: {choices} or imagefolder:PATH (default {default}, ships with "
                                  "scikit-learn; shapes is generated offline)", metavar="NAME")
    input_size: int | None = _option(None, "side of the square input images in pixels; the spaces, the teacher, "
                                           "the latency profile and the export follow it (default 16 for digits, "
                                           "32 otherwise). Latency grows with the pixel count: measured on this "
                                           "CPU, the teacher costs 4x at 64 px, 9x at 96 px and 51x at 224 px what "
                                           "it costs at 32 px (the mobilenet and shufflenet students take a "
                                           "stride-2 stem above 64 px: 2x and 0.7x at 96 px)", metavar="PX")
    data_dir: str | None = _option(None, "folder of the torchvision data sets (default ~/.cache/karumi/data)",
                                   metavar="DIR")
    download: bool = _option(False, "download a torchvision data set into --data-dir", flag=True)
    teacher: str = _option("builtin", "builtin (a CNN trained on the data once, cached), a TorchScript/.pt2 "
                                      "file, or torchvision:NAME=STATE_DICT (default {default})", metavar="SPEC")
    device: str = _option("local", "local (this CPU via ONNX Runtime, profiled once and cached) or a latency "
                                   "table / saved predictor JSON (default {default})", metavar="SPEC")
    trials: int = _option(40, "number of trials (default {default})", metavar="N", resume=True)
    timeout_min: float | None = _option(7.0, "stop starting trials after M minutes (default {default:g})",
                                        metavar="M", resume=True)
    sampler: str = _option("tpe", "Optuna sampler: {choices} (default {default})", metavar="NAME")
    seed: int = _option(0, "seed of the splits, sampler and training (default {default})", metavar="S")
    out: str | None = _option(None, "output folder, must be new or empty (default runs/<UTC time>)",
                              metavar="DIR", reproduce=False)
    storage: str | None = _option(None, "Optuna storage URL, e.g. postgresql://... (default a SQLite file in "
                                        "the output folder)", metavar="URL")
    study_name: str = _option("karumi", "Optuna study name in the storage (default {default})", metavar="NAME")
    final_epochs: int = _option(15, "distillation epochs of the selected model's final fine-tune "
                                    "(default {default})", metavar="E", resume=True)
    search: tuple[str, ...] = _option(SEARCH_PARTS, "what to search, a comma list of {choices} (default all)",
                                      metavar="PARTS")
    genes: tuple[str, ...] = _option((), "opt-in architecture genes to search as well, a comma list (mobilenet, "
                                         "shufflenet: crelu, CReLU in the first blocks, which pays only where "
                                         "the device runs Neg and Concat cheaply; default none)", metavar="GENES")
    bits: str = _option("auto", "bit widths a layer may get: auto (32 and the widths of 4, 8, 16 the device runs "
                                "faster than float32, read from its latency profile) or a comma list of {choices} "
                                "(4 and 16 save size, not time, on x86 ONNX Runtime; 1 and 2 are binary and "
                                "ternary weights, run as int8: size, not speed) (default {default})", metavar="BITS")
    select: str = _option("fastest-tied", "which front entry ships, among those within the budget and faster than "
                                          "the teacher: fastest-tied (the fastest whose proxy accuracy the validation "
                                          "split cannot tell apart from the most accurate one's: two-proportion test "
                                          "at 5 %%) or most-accurate (default {default})", metavar="RULE", resume=True)
    size: str = _option("dense", "what the size objective counts: dense (the weights at their bit widths) or "
                                 "compressed (stored the Deep Compression way: shared values, Huffman-coded; only "
                                 "with --space prune, whose candidates have the teacher's trained weights before "
                                 "any training) (default {default})", metavar="KIND")
    proxy_epochs: int = _option(4, "distillation epochs of each trial's accuracy proxy (default {default})",
                                metavar="E")
    proxy_samples: int = _option(512, "training images of each trial's accuracy proxy (default {default})",
                                 metavar="N")
    supernet_epochs: int = _option(0, "student spaces (mobilenet, shufflenet, fbnet): train the space's weight-sharing "
                                      "supernet by distillation for E epochs on first use (cached per space, data, "
                                      "teacher and E; resumable), and score each trial by the weights it inherits "
                                      "from it (BatchNorm recalibrated, --supernet-proxy-steps distillation steps) "
                                      "instead of --proxy-epochs from random weights; the final model starts from "
                                      "them too. 0: off (default {default}); the prune space always inherits the "
                                      "teacher's weights", metavar="E")
    supernet_proxy_steps: int = _option(16, "with --supernet-epochs: distillation steps (batch 32, lr 0.05) at the "
                                            "candidate's bits before scoring its inherited weights (default {default})",
                                        metavar="N")
    profile_min: float = _option(3.0, "minutes of profiling for --device local on first use (default "
                                      "{default:g})", metavar="M")
    teacher_epochs: int = _option(12, "training epochs of the built-in teacher on first use (default "
                                      "{default})", metavar="E")
    ray_address: str | None = _option(None, "run the trials on Ray: local (start Ray here), auto (this "
                                            "machine's cluster) or host:port", metavar="ADDR")
    workers: int = _option(1, "with --ray-address: trials running at once, one CPU each (default {default})",
                           metavar="N")

    # ----------------------------------------------------------------- derived views
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option's default."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        """JSON values (tuples as lists): what ``config.json`` records."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "SearchOptions":
        return dataclasses.replace(self, **changes)

    def validate(self, *, resuming: bool = False) -> "SearchOptions":
        """The options with ``search`` normalised and ``out`` chosen; :class:`InputError` for a bad value.

        Checks everything that can be checked without loading anything (files exist, names are known,
        numbers are in range), so that bad input is reported before any data, teacher or profile.
        """
        budget = self.budget_ms
        if budget is None:
            raise InputError("--budget-ms is required (the latency budget on the target device, in milliseconds)")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
            raise InputError(f"--budget-ms {budget!r} must be a positive number of milliseconds")
        if self.space not in list_spaces():
            raise InputError(f"--space {self.space!r} is not a known space; allowed: {', '.join(list_spaces())}")
        check_data_spec(str(self.data))
        if self.input_size is not None:
            _check_int("input_size", self.input_size, low=MIN_INPUT_SIZE)
        if self.data_dir is not None and not self.download and not pathlib.Path(self.data_dir).expanduser().is_dir():
            raise InputError(f"--data-dir {self.data_dir} does not exist (add --download to create it and fetch the data)")
        check_teacher_spec(str(self.teacher))
        check_device_spec(str(self.device))
        if self.sampler not in SAMPLERS:
            raise InputError(f"--sampler {self.sampler!r} is not known; allowed: {', '.join(SAMPLERS)}")
        for key in ("trials", "proxy_samples", "workers"):
            _check_int(key, getattr(self, key), low=1)
        for key in ("final_epochs", "proxy_epochs", "supernet_epochs", "supernet_proxy_steps"):
            _check_int(key, getattr(self, key), low=0)
        _check_int("teacher_epochs", self.teacher_epochs, low=1)
        for key in ("timeout_min", "profile_min"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
                raise InputError(f"{_flag(key)} {v!r} must be a positive number of minutes")
        parse_bits(self.bits)
        if self.select not in SELECTIONS:
            raise InputError(f"--select {self.select!r} is not allowed; allowed: {', '.join(SELECTIONS)}")
        if self.size not in SIZES:
            raise InputError(f"--size {self.size!r} is not allowed; allowed: {', '.join(SIZES)}")
        if self.size == "compressed" and self.space != "prune":
            raise InputError(f"--size compressed needs --space prune (its candidates inherit the teacher's trained "
                             f"weights); the {self.space} students' weights are random until trained: use --size dense")
        parts = tuple(self.search)
        if not parts or any(p not in SEARCH_PARTS for p in parts):
            raise InputError(f"--search {','.join(map(str, parts))!r} must be a non-empty subset of {','.join(SEARCH_PARTS)}")
        genes = tuple(self.genes)
        allowed = opt_in_genes(self.space)
        if any(g not in allowed for g in genes):
            raise InputError(f"--genes {','.join(map(str, genes))!r} is not allowed with --space {self.space}; allowed: "
                             + (f"a comma list of {','.join(allowed)}" if allowed else "none (this space has no opt-in genes)"))
        if genes and "arch" not in parts:
            raise InputError(f"--genes {','.join(genes)} needs 'arch' in --search (they are architecture genes)")
        out = self.out
        if out is None:
            out = str(pathlib.Path("runs") / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S"))
        folder = pathlib.Path(out).expanduser()
        if not resuming and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InputError(f"--out {folder} already exists and is not empty; choose another folder, or continue "
                             f"that run with --resume {folder}")
        return dataclasses.replace(self, search=parts, genes=genes, out=str(out))


def parse_bits(text: str) -> tuple[int, ...] | None:
    """``--bits``: None for ``auto``, else the listed bit widths (sorted); :class:`InputError` if not allowed."""
    if str(text).strip() == "auto":
        return None
    try:
        values = tuple(sorted({int(v) for v in str(text).split(",") if v.strip()}))
    except ValueError:
        values = ()
    if not values or not set(values) <= set(BITS):
        raise InputError(f"--bits {text!r} is not allowed; allowed: auto, or a comma list of {','.join(map(str, BITS))}")
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(key: str, value: Any, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise InputError(f"{_flag(key)} {value!r} must be {what}")


_CHOICES: dict[str, Callable[[], Any]] = {
    "bits": lambda: BITS,
    "space": list_spaces,
    "data": lambda: DATASETS,
    "sampler": lambda: SAMPLERS,
    "search": lambda: SEARCH_PARTS,
    "size": lambda: SIZES,
    "select": lambda: SELECTIONS,
}
_TYPES: dict[str, Callable[[str], Any]] = {"search": _parts, "genes": _parts}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option; every default is None, so ``--resume`` can tell given options apart."""
    for f in dataclasses.fields(SearchOptions):
        meta = f.metadata
        choices = _CHOICES.get(f.name)
        text = meta["help"].format(default=f.default if f.default is not None else "none",
                                   choices=", ".join(map(str, choices())) if choices else "")
        if meta["flag"]:
            parser.add_argument(_flag(f.name), dest=f.name, action="store_const", const=True, help=text)
            continue
        kind = _TYPES.get(f.name) or _scalar_type(f.default, f.type)
        parser.add_argument(_flag(f.name), dest=f.name, type=kind, metavar=meta["metavar"], help=text)


def _scalar_type(default: Any, annotation: Any) -> Callable[[str], Any]:
    text = str(annotation)
    if "float" in text:
        return float
    if "int" in text and "str" not in text:
        return int
    return str


def resolve_options(given: Mapping[str, Any], resume: str | pathlib.Path | None) -> tuple[SearchOptions, bool]:
    """The run's options: saved ones on ``resume`` (with the few ``--resume`` may change), else the given
    ones over the defaults. ``given`` holds only explicitly given options (None means not given)."""
    explicit = {k: v for k, v in given.items() if v is not None}
    unknown = set(explicit) - set(SearchOptions.names())
    if unknown:
        raise TypeError(f"run() got unknown option(s) {sorted(unknown)}")
    for key in ("search", "genes"):
        if key in explicit:
            explicit[key] = tuple(explicit[key])
    if resume is None:
        return SearchOptions(**explicit), False
    folder = pathlib.Path(resume).expanduser()
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise InputError(f"--resume {folder}: no {CONFIG} there; it is not the folder of a karumi run")
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))["options"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--resume {folder}: {CONFIG} is unreadable ({exc})") from None
    may_change = {f.name for f in dataclasses.fields(SearchOptions) if f.metadata["resume"]}
    conflicts = [k for k, v in explicit.items()
                 if k not in may_change and k != "out" and _norm(v) != _norm(saved.get(k))]
    if conflicts:
        k = conflicts[0]
        raise InputError(f"{_flag(k)} {explicit[k]!r} differs from the resumed run's {saved.get(k)!r}; with "
                         f"--resume only {', '.join(_flag(n) for n in sorted(may_change))} may change")
    known = {k: v for k, v in saved.items() if k in SearchOptions.names()}
    for key in ("search", "genes"):
        if key in known:
            known[key] = tuple(known[key])
    opts = SearchOptions(**{**known, **{k: explicit[k] for k in may_change if k in explicit}, "out": str(folder)})
    return opts, True


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def command_line(options: Mapping[str, Any] | SearchOptions) -> str:
    """The ``python -m search ...`` command that reproduces a run with these options (defaults left out)."""
    config = options.to_dict() if isinstance(options, SearchOptions) else dict(options)
    parts = ["python", "-m", "search"]
    for f in dataclasses.fields(SearchOptions):
        if not f.metadata["reproduce"]:
            continue
        value, default = config.get(f.name), f.default
        if isinstance(value, (list, tuple)):
            if tuple(value) == tuple(default or ()):
                continue
            value = ",".join(map(str, value))
        elif value == default or value is None:
            continue
        if f.name == "storage" and isinstance(value, str) and value.startswith("sqlite:///") and \
                value.endswith("/study.db"):
            continue  # the default: a SQLite file in the output folder
        if f.metadata["flag"]:
            if value:
                parts.append(_flag(f.name))
            continue
        parts += [_flag(f.name), shlex.quote(f"{value:g}" if isinstance(value, float) else str(value))]
    return " ".join(parts)
