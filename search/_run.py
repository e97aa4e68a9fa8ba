"""``search.run``: the whole job, from options to a deployable model and a report.

Order of work: every option is checked before anything slow happens; then the data, the teacher, the
device (profiled on first use), the check that the budget is reachable at all; only then is the output
folder created, so bad input never writes over an earlier run. The study runs (resumable), the Pareto
front is written (also after Ctrl-C), and the selected candidate is fine-tuned, exported and re-measured.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import pathlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from search._errors import InputError

if TYPE_CHECKING:
    from search._final import FinalModel
    from search._pareto import ParetoEntry, ParetoFront

__all__ = ["DEFAULTS", "SearchResult", "run"]

logger = logging.getLogger(__name__)

#: Default of every option of :func:`run` (and of the command line).
DEFAULTS: dict[str, Any] = {
    "budget_ms": None,
    "space": "mobilenet",
    "data": "digits",
    "data_dir": None,
    "download": False,
    "teacher": "builtin",
    "device": "local",
    "trials": 40,
    "timeout_min": 7.0,
    "sampler": "tpe",
    "seed": 0,
    "out": None,
    "storage": None,
    "study_name": "karumi",
    "final_epochs": 15,
    "search": ("arch", "prune", "bits"),
    "proxy_epochs": 4,
    "proxy_samples": 512,
    "profile_min": 3.0,
    "teacher_epochs": 12,
    "ray_address": None,
    "workers": 1,
}
#: Options that ``--resume`` may change; the others come from the run's saved ``config.json``.
RESUME_MAY_CHANGE = ("trials", "timeout_min", "final_epochs")
CONFIG = "config.json"
#: Budgets within this factor of the fastest candidate get that candidate as their first trial.
TIGHT_BUDGET = 2.0


@dataclasses.dataclass
class SearchResult:
    """What :func:`run` hands back.

    Attributes:
        out_dir: the run folder.
        pareto: the Pareto front (also in ``out_dir/pareto.json``).
        selected: the most accurate feasible front entry (None when no trial met the budget).
        final: the fine-tuned, exported selected model (None when interrupted or nothing was feasible).
        teacher: the teacher's entry (validation accuracy, predicted and measured latency, size).
        teacher_test_accuracy: the teacher's accuracy on the test split.
        interrupted: the study was stopped by Ctrl-C (results so far were written).
        trials_finished: completed trials of this run (all sessions, with ``--resume``).
        seconds: wall time of this call.
        config: the options of the run.
    """

    out_dir: pathlib.Path
    pareto: "ParetoFront"
    selected: "ParetoEntry | None"
    final: "FinalModel | None"
    teacher: "ParetoEntry"
    teacher_test_accuracy: float
    interrupted: bool
    trials_finished: int
    seconds: float
    config: dict[str, Any]


# ----------------------------------------------------------------------------------- options
def _resolve_options(given: Mapping[str, Any], resume: str | pathlib.Path | None) -> tuple[dict[str, Any], bool]:
    """The run's options: saved ones on resume (with the few changeable ones), else given over defaults."""
    explicit = {k: v for k, v in given.items() if v is not None}
    unknown = set(explicit) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"run() got unknown option(s) {sorted(unknown)}")
    if resume is None:
        opts = {**DEFAULTS, **explicit}
        return opts, False
    folder = pathlib.Path(resume).expanduser()
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise InputError(f"--resume {folder}: no {CONFIG} there; it is not the folder of a karumi run")
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))["options"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--resume {folder}: {CONFIG} is unreadable ({exc})") from None
    conflicts = [k for k, v in explicit.items()
                 if k not in RESUME_MAY_CHANGE and k != "out" and _norm(v) != _norm(saved.get(k))]
    if conflicts:
        k = conflicts[0]
        raise InputError(f"--{k.replace('_', '-')} {explicit[k]!r} differs from the resumed run's "
                         f"{saved.get(k)!r}; with --resume only --trials, --timeout-min and --final-epochs may change")
    opts = {**DEFAULTS, **saved, **{k: explicit[k] for k in RESUME_MAY_CHANGE if k in explicit}}
    opts["out"] = str(folder)
    return opts, True


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _validate(opts: dict[str, Any], resuming: bool) -> pathlib.Path:
    """Check every option that can be checked without loading anything; returns the output folder."""
    from search._data import check_data_spec
    from search._device import check_device_spec
    from search._study import SAMPLERS
    from search._teacher import check_teacher_spec
    from spaces import SEARCH_PARTS, list_spaces

    budget = opts["budget_ms"]
    if budget is None:
        raise InputError("--budget-ms is required (the latency budget on the target device, in milliseconds)")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise InputError(f"--budget-ms {budget!r} must be a positive number of milliseconds")
    if opts["space"] not in list_spaces():
        raise InputError(f"--space {opts['space']!r} is not a known space; allowed: {', '.join(list_spaces())}")
    check_data_spec(str(opts["data"]))
    if opts["data_dir"] is not None and not opts["download"] and not pathlib.Path(opts["data_dir"]).expanduser().is_dir():
        raise InputError(f"--data-dir {opts['data_dir']} does not exist (add --download to create it and fetch the data)")
    check_teacher_spec(str(opts["teacher"]))
    check_device_spec(str(opts["device"]))
    if opts["sampler"] not in SAMPLERS:
        raise InputError(f"--sampler {opts['sampler']!r} is not known; allowed: {', '.join(SAMPLERS)}")
    for key in ("trials", "proxy_samples", "workers"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise InputError(f"--{key.replace('_', '-')} {opts[key]!r} must be a positive integer")
    for key in ("final_epochs", "proxy_epochs", "teacher_epochs"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 0:
            raise InputError(f"--{key.replace('_', '-')} {opts[key]!r} must be a non-negative integer")
    if opts["teacher_epochs"] < 1:
        raise InputError(f"--teacher-epochs {opts['teacher_epochs']!r} must be >= 1")
    for key in ("timeout_min", "profile_min"):
        v = opts[key]
        if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
            raise InputError(f"--{key.replace('_', '-')} {v!r} must be a positive number of minutes")
    parts = tuple(opts["search"])
    if not parts or any(p not in SEARCH_PARTS for p in parts):
        raise InputError(f"--search {','.join(map(str, parts))!r} must be a non-empty subset of {','.join(SEARCH_PARTS)}")
    opts["search"] = parts
    if opts["out"] is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        opts["out"] = str(pathlib.Path("runs") / stamp)
    out = pathlib.Path(opts["out"]).expanduser()
    if not resuming and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} already exists and is not empty; choose another folder, or continue that "
                         f"run with --resume {out}")
    return out


# ----------------------------------------------------------------------------------- the job
def run(*, budget_ms: float | None = None, space: str | None = None, data: str | None = None,
        data_dir: str | None = None, download: bool | None = None, teacher: str | None = None,
        device: str | None = None, trials: int | None = None, timeout_min: float | None = None,
        sampler: str | None = None, seed: int | None = None, out: str | pathlib.Path | None = None,
        resume: str | pathlib.Path | None = None, storage: str | None = None, study_name: str | None = None,
        final_epochs: int | None = None, search: tuple[str, ...] | list[str] | None = None,
        proxy_epochs: int | None = None, proxy_samples: int | None = None, profile_min: float | None = None,
        teacher_epochs: int | None = None, ray_address: str | None = None, workers: int | None = None,
        progress: bool = False,
        echo: Callable[[str], None] | None = None) -> SearchResult:
    """Search the most accurate model under ``budget_ms`` on the device; see the README for every option.

    Options left ``None`` take :data:`DEFAULTS` (or, with ``resume``, the resumed run's saved options).
    ``progress`` shows tqdm progress bars on stderr; ``echo(line)`` receives the one-line status messages
    (the command line prints them). Ctrl-C during the study writes the results so far and returns with
    ``interrupted=True``.

    Raises:
        InputError: bad input (one line naming it); nothing has been written to the output folder then.
    """
    given = dict(budget_ms=budget_ms, space=space, data=data, data_dir=data_dir, download=download, teacher=teacher,
                 device=device, trials=trials, timeout_min=timeout_min, sampler=sampler, seed=seed,
                 out=None if out is None else str(out), storage=storage, study_name=study_name,
                 final_epochs=final_epochs, search=None if search is None else tuple(search),
                 proxy_epochs=proxy_epochs, proxy_samples=proxy_samples, profile_min=profile_min,
                 teacher_epochs=teacher_epochs, ray_address=ray_address, workers=workers)
    opts, resuming = _resolve_options(given, resume)
    out_dir = _validate(opts, resuming)
    return _Job(opts, out_dir, resuming=resuming, progress=progress, echo=echo or (lambda line: None)).run()


class _Job:
    def __init__(self, opts: dict[str, Any], out_dir: pathlib.Path, *, resuming: bool, progress: bool,
                 echo: Callable[[str], None]) -> None:
        self.opts, self.out_dir, self.resuming = opts, out_dir, resuming
        self.progress, self.echo = progress, echo
        self.start = time.perf_counter()

    # ---------------------------------------------------------------- set-up (no writes to out_dir)
    def _load(self) -> None:
        from search._data import load_data

        o = self.opts
        self.data = load_data(str(o["data"]), data_dir=o["data_dir"], download=bool(o["download"]), seed=o["seed"])
        self.echo(f"data     {self.data.describe()}")
        if o["space"] == "prune":  # the space is the teacher: the teacher comes first
            self._load_teacher()
            self._make_space()
            self._resolve_device()
            self._check_budget()
        else:  # a bad teacher file, device file or budget is reported before any profile or training
            if o["teacher"] != "builtin":
                self._load_teacher()
            self._make_space()
            self._resolve_device()
            self._check_budget()
            if o["teacher"] == "builtin":
                self._load_teacher()

    def _load_teacher(self) -> None:
        from search._teacher import load_teacher

        o = self.opts
        bar = self._bar(o["teacher_epochs"], "teacher (first run: training, cached)") if o["teacher"] == "builtin" else None
        try:
            self.teacher = load_teacher(str(o["teacher"]), self.data, seed=o["seed"], epochs=o["teacher_epochs"],
                                        on_epoch=None if bar is None else (lambda e, n: bar.update(1)))
        finally:
            if bar is not None:
                bar.close()
        how = "trained now" if self.teacher.trained_now else "loaded"
        self.echo(f"teacher  {o['teacher']}: validation accuracy {self.teacher.val_accuracy:.2%}, test accuracy "
                  f"{self.teacher.test_accuracy:.2%} ({how} in {self.teacher.seconds:.0f} s)")

    def _make_space(self) -> None:
        from spaces import get_space

        o = self.opts
        c, h, _ = self.data.input_shape
        space_opts: dict[str, Any] = dict(num_classes=self.data.num_classes, input_size=h, in_channels=c)
        if o["space"] == "prune":
            space_opts["teacher"] = self.teacher.model
        try:
            self.space = get_space(o["space"], **space_opts)
        except (ValueError, TypeError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"--space {o['space']} cannot be used with --teacher {o['teacher']} on --data "
                             f"{o['data']}: {reason}") from None

    def _resolve_device(self) -> None:
        from search._device import resolve_device

        o = self.opts
        if o["device"] == "local":
            self.echo(f"device   this machine: reading the cached latency profile for {self.space.name}, or "
                      f"profiling it now (up to {o['profile_min']:g} min, once)")
        self.device = resolve_device(str(o["device"]), self.space, profile_min=float(o["profile_min"]),
                                     progress=self.progress)
        self.echo(f"device   {self.device.description}")

    def _predict(self, cands: list[Any]) -> Any:
        import warnings

        from search._objective import BoundCandidate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.device.predictor.predict_many([BoundCandidate(c, self.space) for c in cands])

    def _check_budget(self) -> None:
        from search._device import fastest_candidate

        budget = float(self.opts["budget_ms"])
        cand, lat, params = fastest_candidate(self.space, self._predict, search=tuple(self.opts["search"]),
                                              seed=int(self.opts["seed"]))
        self.fastest = (cand, lat, params)
        if budget < lat:
            raise InputError(f"--budget-ms {budget:g} is below the fastest model the {self.space.name} space can "
                             f"produce on this device: {lat:.3f} ms predicted")
        self.echo(f"budget   {budget:g} ms; the fastest {self.space.name} candidate is predicted at {lat:.3f} ms")

    def _bar(self, total: int | None, desc: str, initial: int = 0) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="trial" if "search" in desc else "epoch",
                    dynamic_ncols=True, leave=True)

    # ---------------------------------------------------------------- the run
    def run(self) -> SearchResult:
        self._load()
        self._write_config()
        self._profile_teacher()
        study = self._open_study()
        outcome = self._search(study)
        front = self._front(study)
        final = None
        if not outcome.interrupted and front.selected is not None:
            final = self._finalize(front)
        return self._report(study, front, final, outcome.interrupted)

    def _write_config(self) -> None:
        cfg_path = self.out_dir / CONFIG
        if self.resuming:
            self.run_id = json.loads(cfg_path.read_text(encoding="utf-8"))["run_id"]
            saved = json.loads(cfg_path.read_text(encoding="utf-8"))
            saved["options"] = _jsonable(self.opts)
            saved.setdefault("resumed_utc", []).append(_now())
            cfg_path.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex
        if self.opts["storage"] is None:
            self.opts["storage"] = f"sqlite:///{(self.out_dir / 'study.db').resolve()}"
        cfg = {"format_version": 1, "run_id": self.run_id, "created_utc": _now(), "options": _jsonable(self.opts)}
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    def _open_study(self) -> Any:
        from search._study import make_sampler, open_study

        sampler = make_sampler(str(self.opts["sampler"]), seed=int(self.opts["seed"]), budget_ms=float(self.opts["budget_ms"]))
        study = open_study(storage=str(self.opts["storage"]), study_name=str(self.opts["study_name"]), sampler=sampler)
        cand, lat, params = self.fastest
        if not study.trials and float(self.opts["budget_ms"]) < TIGHT_BUDGET * lat:
            study.enqueue_trial(params, skip_if_exists=True)
        return study

    def _search(self, study: Any) -> Any:
        from optuna.trial import TrialState

        from search._objective import SearchContext
        from search._proxy import ProxyEvaluator
        from search._study import best_feasible_accuracy, owned_trials, run_study

        o = self.opts
        evaluator = ProxyEvaluator(self.data.train.subset(int(o["proxy_samples"])), self.data.val, self.teacher.model,
                                   epochs=int(o["proxy_epochs"]), seed=int(o["seed"]))
        context = SearchContext(space=self.space, predictor=self.device.predictor,
                                budget_ms=float(o["budget_ms"]), evaluator=evaluator)
        done = owned_trials(study, self.run_id, states=(TrialState.COMPLETE,))
        bar = self._bar(int(o["trials"]), "search", initial=min(len(done), int(o["trials"])))
        finished = list(done)

        def on_trial(trial: Any) -> None:
            if trial.state != TrialState.COMPLETE:
                return
            finished.append(trial)
            if bar is not None:
                best = best_feasible_accuracy(finished)
                bar.set_postfix_str(f"best feasible acc {best:.3f}" if best is not None else "no feasible yet")
                bar.update(1)

        if done:
            self.echo(f"resume   {len(done)} finished trial(s) of this run found in the study")
        timeout_s = None if o["timeout_min"] is None else 60.0 * float(o["timeout_min"])
        try:
            if o["ray_address"]:  # the same trials as Ray Tune trials on a Ray cluster (search/_ray.py)
                from search._ray import run_ray_study

                outcome = run_ray_study(study, space=self.space, context=context, run_id=self.run_id,
                                        n_trials=int(o["trials"]), storage=str(o["storage"]), out_dir=self.out_dir,
                                        address=str(o["ray_address"]), workers=int(o["workers"]),
                                        resume=self.resuming, timeout_s=timeout_s,
                                        sample_kwargs={"search": tuple(o["search"])}, on_trial=on_trial)
            else:
                outcome = run_study(study, space=self.space, context=context, run_id=self.run_id,
                                    n_trials=int(o["trials"]), timeout_s=timeout_s,
                                    sample_kwargs={"search": tuple(o["search"])}, on_trial=on_trial)
        finally:
            if bar is not None:
                bar.close()
        if outcome.interrupted:
            self.echo("stopped  Ctrl-C: writing the results so far (continue with --resume "
                      f"{self.out_dir})")
        return outcome

    def _teacher_onnx(self) -> pathlib.Path:
        from spaces import export_onnx

        path = self.out_dir / "teacher.onnx"
        if not path.is_file():
            export_onnx(self.teacher.model, self.data.input_shape, str(path))
        return path

    def _profile_teacher(self) -> None:
        """Local device: time the teacher's kernels and the teacher itself into the cached profile, once."""
        from search._device import add_models, model_name

        if not self.device.local:
            return
        path = self._teacher_onnx()
        self.device = add_models(self.device, [path], names=[model_name(path, "teacher")], progress=self.progress)

    def _teacher_entry(self) -> "ParetoEntry":
        import warnings

        from latency_models import kernels_from_onnx
        from search._pareto import ParetoEntry

        path = self._teacher_onnx()
        kernels, _unknown = kernels_from_onnx(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latency = float(self.device.predictor.predict(str(path)))
        measured = self._measure(path) if self.device.local else None
        return ParetoEntry(trial=None, candidate={"teacher": str(self.opts["teacher"]), "onnx": path.name},
                           accuracy=float(self.teacher.val_accuracy), latency_ms=latency,
                           size_bytes=int(round(sum(k.weight_bytes for k in kernels))),
                           feasible=latency <= float(self.opts["budget_ms"]), trained=True,
                           measured_latency_ms=measured)

    def _measure(self, path: pathlib.Path) -> float:
        from latency_models import measure_onnx

        return float(measure_onnx(str(path), threads=self.device.threads))

    def _front(self, study: Any) -> "ParetoFront":
        from search._pareto import pareto_front, write_pareto
        from search._study import owned_trials
        from spaces import Candidate, export_onnx_quantized

        trials = owned_trials(study, self.run_id)
        front = pareto_front(trials, budget_ms=float(self.opts["budget_ms"]), teacher=self._teacher_entry())
        if self.device.local and front.entries:
            folder = self.out_dir / "pareto_onnx"
            folder.mkdir(exist_ok=True)
            calib = [self.data.train.x[:64]]
            for e in front.entries:
                path = folder / f"trial{e.trial}.onnx"
                if not path.is_file():
                    cand = Candidate.from_dict(e.candidate)
                    export_onnx_quantized(self.space.build(cand), self.space.module_bits(cand), self.space.input_shape,
                                          str(path), calibration=calib)
                e.measured_latency_ms = self._measure(path)
            self._select_measured(front)
        write_pareto(front, self.out_dir)
        return front

    def _select_measured(self, front: "ParetoFront") -> None:
        """Ship what meets the budget when measured: replace a selection measured over the budget."""
        from search._pareto import select_measured

        sel = front.selected
        if sel is None or sel.measured_latency_ms is None or sel.measured_latency_ms <= front.budget_ms:
            return
        alt = select_measured(front)
        if alt is None:
            self.echo(f"warning  no front entry measures within the budget on this machine; keeping trial {sel.trial} "
                      f"(predicted {sel.latency_ms:.3f} ms, measured {sel.measured_latency_ms:.3f} ms)")
            return
        self.echo(f"select   trial {sel.trial} is predicted at {sel.latency_ms:.3f} ms but measured at "
                  f"{sel.measured_latency_ms:.3f} ms, over the budget: trial {alt.trial} instead (measured "
                  f"{alt.measured_latency_ms:.3f} ms)")
        front.selected = alt

    def _finalize(self, front: "ParetoFront") -> "FinalModel":
        from search._final import finalize
        from spaces import Candidate

        sel = front.selected
        assert sel is not None
        self.echo(f"final    fine-tuning trial {sel.trial} by distillation for {self.opts['final_epochs']} epoch(s), "
                  f"exporting best/model.onnx")
        return finalize(Candidate.from_dict(sel.candidate), space=self.space, data=self.data, teacher=self.teacher.model,
                        out_dir=self.out_dir, epochs=int(self.opts["final_epochs"]), latency_ms=sel.latency_ms,
                        measure=self.device.local, seed=int(self.opts["seed"]), threads=self.device.threads)

    def _report(self, study: Any, front: "ParetoFront", final: "FinalModel | None", interrupted: bool) -> SearchResult:
        from search._report import write_report

        result = SearchResult(out_dir=self.out_dir, pareto=front, selected=front.selected, final=final,
                              teacher=front.teacher, teacher_test_accuracy=float(self.teacher.test_accuracy),
                              interrupted=interrupted, trials_finished=front.n_trials,
                              seconds=time.perf_counter() - self.start, config=_jsonable(self.opts))
        write_report(result, device=self.device.description)
        return result


def _jsonable(opts: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
