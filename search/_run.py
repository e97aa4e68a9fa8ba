"""``search.run``: the whole job, from options to a deployable model and a report.

Order of work: every option is checked before anything slow happens; then the data, the teacher, the
device (profiled on first use), the check that the budget is reachable at all; only then is the output
folder created, so bad input never writes over an earlier run. The study runs (resumable), the Pareto
front is written (also after Ctrl-C), and the selected candidate is fine-tuned, exported and re-measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import pathlib
import time
import uuid
from typing import Any, Callable

from latency_models import Progress, kernels_from_onnx, measure_onnx
from search._data import load_data
from search._device import add_models, fastest_candidate, model_name, resolve_device
from search._errors import InputError
from search._final import FinalModel, finalize
from search._objective import SearchContext, predict_latency
from search._options import CONFIG, SearchOptions, resolve_options
from search._pareto import ParetoEntry, ParetoFront, pareto_front, select_measured, write_pareto
from search._proxy import ProxyEvaluator
from search._report import SearchResult, write_report
from search._study import best_feasible_accuracy, make_sampler, open_study, owned_trials, run_study
from search._teacher import load_teacher
from spaces import Candidate, get_space
from spaces.compress import export_onnx

__all__ = ["SearchResult", "TIGHT_BUDGET", "run"]

logger = logging.getLogger(__name__)

#: Budgets within this factor of the fastest candidate get that candidate as their first trial.
TIGHT_BUDGET = 2.0


def run(options: SearchOptions | None = None, *, resume: str | pathlib.Path | None = None, progress: bool = False,
        echo: Callable[[str], None] | None = None, **fields: Any) -> SearchResult:
    """Search, fine-tune, export and report; returns a :class:`SearchResult` (also written to the run folder).

    Options are the fields of :class:`SearchOptions`, given as keyword arguments (``budget_ms=5.0,
    space="shufflenet"``) or as a ``SearchOptions``; with ``resume`` (a run folder) they come from its
    ``config.json`` and only ``trials``, ``timeout_min`` and ``final_epochs`` may be given anew.
    ``progress`` shows progress (a bar on a terminal, plain lines otherwise) and ``echo(line)`` receives one
    status line per phase.

    Raises:
        InputError: bad input, reported before anything is written to the output folder.
    """
    given = {**(options.to_dict() if options is not None else {}), **fields}
    opts, resuming = resolve_options(given, resume)
    opts = opts.validate(resuming=resuming)
    out_dir = pathlib.Path(opts.out).expanduser()
    return _Job(opts, out_dir, resuming=resuming, progress=progress, echo=echo or (lambda line: None)).run()


class _Job:
    def __init__(self, opts: SearchOptions, out_dir: pathlib.Path, *, resuming: bool, progress: bool,
                 echo: Callable[[str], None]) -> None:
        self.opts, self.out_dir, self.resuming = opts, out_dir, resuming
        self.progress, self.echo = progress, echo
        self.start = time.perf_counter()

    def _bar(self, total: float | None, desc: str, *, unit: str, initial: float = 0) -> Progress:
        return Progress(total, desc, unit=unit, initial=initial, enabled=self.progress)

    # ---------------------------------------------------------------- set-up (no writes to out_dir)
    def _load(self) -> None:
        o = self.opts
        self.data = load_data(str(o.data), data_dir=o.data_dir, download=bool(o.download), seed=o.seed)
        self.echo(f"data     {self.data.describe()}")
        if o.space == "prune":  # the space is the teacher: the teacher comes first
            self._load_teacher()
            self._make_space()
            self._resolve_device()
            self._check_budget()
        else:  # a bad teacher file, device file or budget is reported before any profile or training
            if o.teacher != "builtin":
                self._load_teacher()
            self._make_space()
            self._resolve_device()
            self._check_budget()
            if o.teacher == "builtin":
                self._load_teacher()

    def _load_teacher(self) -> None:
        o = self.opts
        training = o.teacher == "builtin"
        with self._bar(o.teacher_epochs if training else None, "teacher (first run: training, cached)",
                       unit="epoch") as bar:
            self.teacher = load_teacher(str(o.teacher), self.data, seed=o.seed, epochs=o.teacher_epochs,
                                        on_epoch=(lambda e, n: bar.update(1)) if training else None)
        how = "trained now" if self.teacher.trained_now else "loaded"
        self.echo(f"teacher  {o.teacher}: validation accuracy {self.teacher.val_accuracy:.2%}, test accuracy "
                  f"{self.teacher.test_accuracy:.2%} ({how} in {self.teacher.seconds:.0f} s)")

    def _make_space(self) -> None:
        o = self.opts
        c, h, _ = self.data.input_shape
        space_opts: dict[str, Any] = dict(num_classes=self.data.num_classes, input_size=h, in_channels=c)
        if o.space == "prune":
            space_opts["teacher"] = self.teacher.model
        try:
            self.space = get_space(o.space, **space_opts)
        except (ValueError, TypeError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"--space {o.space} cannot be used with --teacher {o.teacher} on --data "
                             f"{o.data}: {reason}") from None

    def _resolve_device(self) -> None:
        o = self.opts
        if o.device == "local":
            self.echo(f"device   this machine: reading the cached latency profile for {self.space.name}, or "
                      f"profiling it now (up to {o.profile_min:g} min, once)")
        with self._bar(60.0 * o.profile_min, "profiling this machine", unit="s") as bar:
            self.device = resolve_device(str(o.device), self.space, profile_min=float(o.profile_min),
                                         on_progress=bar.report)
        self.echo(f"device   {self.device.description}")

    def _predict(self, cands: list[Candidate]) -> Any:
        return predict_latency(self.device.predictor, self.space, cands)

    def _check_budget(self) -> None:
        budget = float(self.opts.budget_ms)
        cand, lat, params = fastest_candidate(self.space, self._predict, search=tuple(self.opts.search),
                                              seed=int(self.opts.seed))
        self.fastest = (cand, lat, params)
        if budget < lat:
            raise InputError(f"--budget-ms {budget:g} is below the fastest model the {self.space.name} space can "
                             f"produce on this device: {lat:.3f} ms predicted")
        self.echo(f"budget   {budget:g} ms; the fastest {self.space.name} candidate is predicted at {lat:.3f} ms")

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
        return self._report(front, final, outcome.interrupted)

    def _write_config(self) -> None:
        cfg_path = self.out_dir / CONFIG
        if self.resuming:
            saved = json.loads(cfg_path.read_text(encoding="utf-8"))
            self.run_id = saved["run_id"]
            saved["options"] = self.opts.to_dict()
            saved.setdefault("resumed_utc", []).append(_now())
            cfg_path.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex
        if self.opts.storage is None:
            self.opts = self.opts.replace(storage=f"sqlite:///{(self.out_dir / 'study.db').resolve()}")
        cfg = {"format_version": 1, "run_id": self.run_id, "created_utc": _now(), "options": self.opts.to_dict()}
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    def _open_study(self) -> Any:
        o = self.opts
        sampler = make_sampler(str(o.sampler), seed=int(o.seed), budget_ms=float(o.budget_ms))
        study = open_study(storage=str(o.storage), study_name=str(o.study_name), sampler=sampler)
        cand, lat, params = self.fastest
        if not study.trials and float(o.budget_ms) < TIGHT_BUDGET * lat:
            study.enqueue_trial(params, skip_if_exists=True)
        return study

    def _search(self, study: Any) -> Any:
        from optuna.trial import TrialState

        o = self.opts
        evaluator = ProxyEvaluator(self.data.train.subset(int(o.proxy_samples)), self.data.val, self.teacher.model,
                                   epochs=int(o.proxy_epochs), seed=int(o.seed))
        context = SearchContext(space=self.space, predictor=self.device.predictor,
                                budget_ms=float(o.budget_ms), evaluator=evaluator)
        done = owned_trials(study, self.run_id, states=(TrialState.COMPLETE,))
        finished = list(done)
        if done:
            self.echo(f"resume   {len(done)} finished trial(s) of this run found in the study")
        timeout_s = None if o.timeout_min is None else 60.0 * float(o.timeout_min)
        with self._bar(int(o.trials), "search", unit="trial", initial=min(len(done), int(o.trials))) as bar:
            def on_trial(trial: Any) -> None:
                if trial.state != TrialState.COMPLETE:
                    return
                finished.append(trial)
                best = best_feasible_accuracy(finished)
                bar.update(1, postfix=f"best feasible acc {best:.3f}" if best is not None else "no feasible yet")

            if o.ray_address:  # the same trials as Ray Tune trials on a Ray cluster (ray is an optional import)
                from search._ray import run_ray_study

                outcome = run_ray_study(study, space=self.space, context=context, run_id=self.run_id,
                                        n_trials=int(o.trials), storage=str(o.storage), out_dir=self.out_dir,
                                        address=str(o.ray_address), workers=int(o.workers),
                                        resume=self.resuming, timeout_s=timeout_s,
                                        sample_kwargs={"search": tuple(o.search)}, on_trial=on_trial)
            else:
                outcome = run_study(study, space=self.space, context=context, run_id=self.run_id,
                                    n_trials=int(o.trials), timeout_s=timeout_s,
                                    sample_kwargs={"search": tuple(o.search)}, on_trial=on_trial)
        if outcome.interrupted:
            self.echo(f"stopped  Ctrl-C: writing the results so far (continue with --resume {self.out_dir})")
        return outcome

    def _teacher_onnx(self) -> pathlib.Path:
        path = self.out_dir / "teacher.onnx"
        if not path.is_file():
            export_onnx(self.teacher.model, self.data.input_shape, str(path))
        return path

    def _profile_teacher(self) -> None:
        """Local device: time the teacher's kernels and the teacher itself into the cached profile, once."""
        if not self.device.local:
            return
        path = self._teacher_onnx()
        with self._bar(None, "profiling the teacher", unit="graph") as bar:
            self.device = add_models(self.device, [path], names=[model_name(path, "teacher")], on_progress=bar.report)

    def _teacher_entry(self) -> ParetoEntry:
        path = self._teacher_onnx()
        kernels, _unknown = kernels_from_onnx(str(path))
        latency = float(self.device.predictor.predict(kernels))
        measured = self._measure(path) if self.device.local else None
        return ParetoEntry(trial=None, candidate={"teacher": str(self.opts.teacher), "onnx": path.name},
                           accuracy=float(self.teacher.val_accuracy), latency_ms=latency,
                           size_bytes=int(round(sum(k.weight_bytes for k in kernels))),
                           feasible=latency <= float(self.opts.budget_ms), trained=True,
                           measured_latency_ms=measured)

    def _measure(self, path: pathlib.Path) -> float:
        return float(measure_onnx(str(path), threads=self.device.threads))

    def _front(self, study: Any) -> ParetoFront:
        trials = owned_trials(study, self.run_id)
        front = pareto_front(trials, budget_ms=float(self.opts.budget_ms), teacher=self._teacher_entry())
        if self.device.local and front.entries:
            folder = self.out_dir / "pareto_onnx"
            folder.mkdir(exist_ok=True)
            calib = [self.data.train.x[:64]]
            for e in front.entries:
                path = folder / f"trial{e.trial}.onnx"
                if not path.is_file():
                    cand = Candidate.from_dict(e.candidate)
                    self.space.onnx(cand, calibration=calib, path=str(path))
                e.measured_latency_ms = self._measure(path)
            self._select_measured(front)
        write_pareto(front, self.out_dir)
        return front

    def _select_measured(self, front: ParetoFront) -> None:
        """Ship what meets the budget when measured: replace a selection measured over the budget."""
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

    def _finalize(self, front: ParetoFront) -> FinalModel:
        sel = front.selected
        assert sel is not None
        self.echo(f"final    fine-tuning trial {sel.trial} by distillation for {self.opts.final_epochs} epoch(s), "
                  f"exporting best/model.onnx")
        return finalize(Candidate.from_dict(sel.candidate), space=self.space, data=self.data, teacher=self.teacher.model,
                        out_dir=self.out_dir, epochs=int(self.opts.final_epochs), latency_ms=sel.latency_ms,
                        measure=self.device.local, seed=int(self.opts.seed), threads=self.device.threads)

    def _report(self, front: ParetoFront, final: FinalModel | None, interrupted: bool) -> SearchResult:
        result = SearchResult(out_dir=self.out_dir, pareto=front, selected=front.selected, final=final,
                              teacher=front.teacher, teacher_test_accuracy=float(self.teacher.test_accuracy),
                              interrupted=interrupted, trials_finished=front.n_trials,
                              seconds=time.perf_counter() - self.start, config=self.opts.to_dict())
        write_report(result, device=self.device.description)
        return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
