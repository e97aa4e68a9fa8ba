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
from typing import Any, Callable, Sequence

import onnx

from latency_models import Progress, kernels_from_onnx
from search._data import load_data
from search._device import (TIGHT_BUDGET, add_models, fastest_candidate, float_variant, model_name, resolve_device,
                            seed_study, uniform_fast_ends)
from search._errors import InputError
from search._deploy import preprocess_contract, with_preprocessing
from search._final import FinalModel, deployable_onnx, finalize, measure_side_by_side, measurement_description, onnx_accuracy
from search._objective import SearchContext, predict_latency, rewarded_bits
from search._options import CONFIG, SearchOptions, parse_bits, resolve_options
from search._pareto import ParetoEntry, ParetoFront, left_out, pareto_front, select, widen, write_pareto
from search._proxy import ProxyEvaluator, SupernetProxy
from search._report import SearchResult, write_report
from search._study import best_feasible_accuracy, make_sampler, open_study, owned_trials, run_study
from search._supernet import load_supernet
from search._teacher import load_teacher
from spaces import Candidate, get_space, supports_supernet
from spaces.compress import export_onnx

__all__ = ["SearchResult", "TIGHT_BUDGET", "run"]

logger = logging.getLogger(__name__)

#: Trials are held to this factor of the teacher's predicted latency when the teacher meets the budget:
#: room for the predictor's error, since what ships is chosen by measurement.
TEACHER_MARGIN = 1.25
#: Most accurate trained trials off the front measured when no measured front entry beats the teacher (with
#: the one predicted fastest; see :func:`search._pareto.left_out`).
LEFT_OUT = 8
#: Study user attribute recording the bit widths its trials sample.
BITS_ATTR = "karumi_bits"


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
        #: the predictor and bits the fastest candidate was found under (see :meth:`_update_fastest`)
        self._fastest_for: tuple[Any, Any] | None = None

    def _bar(self, total: float | None, desc: str, *, unit: str, initial: float = 0) -> Progress:
        return Progress(total, desc, unit=unit, initial=initial, enabled=self.progress)

    # ---------------------------------------------------------------- set-up (no writes to out_dir)
    def _load(self) -> None:
        o = self.opts
        self.data = load_data(str(o.data), data_dir=o.data_dir, download=bool(o.download), seed=o.seed,
                              input_size=o.input_size)
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
        self._profile_teacher()
        self._set_search_budget()
        self._load_supernet()

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

    def _load_supernet(self) -> None:
        """The space's supernet (``--supernet-epochs``): read from the cache, or trained now (resumable)."""
        o = self.opts
        self.supernet = None
        if int(o.supernet_epochs) <= 0:
            return
        if not supports_supernet(self.space):
            self.echo(f"supernet the {self.space.name} space has none (it inherits the teacher's weights): "
                      "--supernet-epochs is ignored")
            return
        epochs = int(o.supernet_epochs)
        self.echo(f"supernet {self.space.name}: reading the cached supernet, or training it now by distillation from "
                  f"the teacher ({epochs} epochs, once; resumable)")
        with self._bar(epochs, "supernet (first run: training, cached)", unit="epoch") as bar:
            # trained alone, before any trial: on all of torch's threads (1.37x faster on 2 cores than on one,
            # experiments/supernet_threads.py)
            res = load_supernet(self.space, self.data, self.teacher.model, epochs=epochs, seed=int(o.seed), threads=None,
                                on_epoch=lambda e, n: bar.set(e + 1))  # epochs done in all (a resumed training jumps)
        how = (f"trained now ({res.trained_epochs} epoch(s) in {res.seconds:.0f} s"
               + (f", resumed after epoch {res.resumed_from}" if res.resumed_from else "") + ")"
               if res.trained_epochs else f"loaded from the cache (trained in {res.train_seconds:.0f} s)")
        self.echo(f"supernet {how}: {res.path}")
        self.supernet = res.supernet

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
        self._choose_bits()

    def _choose_bits(self) -> None:
        """The bit widths trials draw from: ``--bits`` as listed, or those the device rewards (``auto``)."""
        o = self.opts
        given = parse_bits(o.bits)
        self.bits = given if given is not None else rewarded_bits(self.device.predictor, self.space)
        if given is None and "bits" in o.search:
            narrow = [b for b in self.bits if b != 32]
            self.echo("bits     " + (f"{', '.join(map(str, narrow))} and 32: the narrower widths this device runs faster "
                                     "than float32 (its latency profile)" if narrow else
                                     "32 only: no narrower width runs faster than float32 on this device (its latency "
                                     "profile)") + "; --bits 4,8,16,32 also searches those that save size only")

    @property
    def sample_kwargs(self) -> dict[str, Any]:
        """How trials draw candidates: the searched parts, the allowed bit widths and the opt-in genes."""
        return {"search": tuple(self.opts.search), "bits": self.bits, "genes": tuple(self.opts.genes)}

    def _predict(self, cands: list[Candidate]) -> Any:
        return predict_latency(self.device.predictor, self.space, cands)

    def _update_fastest(self) -> tuple[Candidate, float, dict[str, Any]]:
        """``self.fastest``: the space's fastest candidate under the current predictor and bits, found again
        only when either changed (timing the teacher into the table refits the predictor; a resumed study
        may bring other bits)."""
        found_for = self._fastest_for
        if found_for is None or found_for[0] is not self.device.predictor or found_for[1] != self.bits:
            self.fastest = fastest_candidate(self.space, self._predict, **self.sample_kwargs, seed=int(self.opts.seed))
            self._fastest_for = (self.device.predictor, self.bits)
        return self.fastest

    def _check_budget(self) -> None:
        budget = float(self.opts.budget_ms)
        _, lat, _ = self._update_fastest()
        if budget < lat:
            raise InputError(f"--budget-ms {budget:g} is below the fastest model the {self.space.name} space can "
                             f"produce on this device: {lat:.3f} ms predicted")
        self.echo(f"budget   {budget:g} ms; the fastest {self.space.name} candidate is predicted at {lat:.3f} ms")

    # ---------------------------------------------------------------- the run
    def _set_search_budget(self) -> None:
        """The budget trials are held to, and whether the teacher's latency on the device is known.

        A compressed model slower than the teacher is never shipped, so when the teacher's latency on the
        device is known (timed into its table: always so for this machine) and lower than the budget, trials
        are held to it, with :data:`TEACHER_MARGIN` for the predictor's error (the front is then measured:
        what ships must measure faster than the teacher). A teacher the table has never timed is predicted by
        extrapolation, which can be far off: it then bounds nothing, and the comparison with it is marked
        as predicted."""
        budget = float(self.opts.budget_ms)
        graph = self._teacher_graph()
        teacher_ms = self._teacher_ms(kernels_from_onnx(graph)[0])
        self.teacher_known = model_name(graph, "teacher") in self.device.model_sources
        self.search_budget_ms = budget
        if not self.teacher_known:
            self.echo(f"teacher  its latency on this device is not in the latency table (extrapolated to "
                      f"{teacher_ms:.3f} ms): it bounds nothing; time it on the device with "
                      "latency_models.profile_models([teacher.onnx], out=TABLE) to compare with it")
            return
        cand, fastest_ms, params = self._update_fastest()  # under the predictor refitted on the teacher
        if self.device.local:  # this machine: settle it by measurement, not by the predictor
            # the fastest candidate and the same at 32 bits, timed beside the teacher: a predictor from a short
            # profile can prefer low bits this CPU does not reward at this size; the faster one is trial 0
            variant = float_variant(self.space, params, **self.sample_kwargs)
            options = [cand] + ([variant[0]] if variant is not None else [])
            *measured, teacher_measured = self._measure_against_teacher(options)
            if len(measured) == 2 and measured[1] < measured[0]:
                fastest_ms = float(self._predict([variant[0]])[0])
                self.fastest = (variant[0], fastest_ms, variant[1])
                self.echo(f"fastest  the fastest candidate measures {measured[0]:.3f} ms here, the same at 32 bits "
                          f"{measured[1]:.3f} ms: the search starts from the 32-bit one")
            fastest_measured = min(measured)
            slower = fastest_measured >= teacher_measured
            basis = (f"its fastest candidate measures {fastest_measured:.3f} ms here, the teacher {teacher_measured:.3f} "
                     "ms (side by side)")
            if slower:  # before refusing the space: its uniform compressions, which follow no predictor
                slower, basis = self._try_uniform_fast_ends(basis)
                fastest_ms = self.fastest[1]
        else:
            slower = fastest_ms >= TEACHER_MARGIN * teacher_ms
            basis = f"its fastest candidate is predicted at {fastest_ms:.3f} ms, the teacher at {teacher_ms:.3f} ms"
        if slower:
            raise InputError(f"--space {self.space.name} cannot produce a model faster than the teacher on this device: "
                             f"{basis} (try another --space or a smaller --input-size)")
        if TEACHER_MARGIN * teacher_ms < budget:
            # never below the fastest candidate's prediction: it is trial 0, and always trained
            self.search_budget_ms = min(budget, TEACHER_MARGIN * max(teacher_ms, fastest_ms))
            self.echo(f"budget   the teacher meets the {budget:g} ms budget (predicted {teacher_ms:.3f} ms): trials are "
                      f"held to {self.search_budget_ms:.3f} ms ({TEACHER_MARGIN:g}x, for the predictor's error), "
                      "since a model slower than the teacher is never shipped")

    def _try_uniform_fast_ends(self, basis: str) -> tuple[bool, str]:
        """When the fastest candidate under the predictor measured slower than the teacher: the most pruned
        uniform compression at each searched width (:func:`~search._device.uniform_fast_ends`), timed beside
        the teacher. The predictor of a short profile can lead its fastest candidate astray (to widths this
        device does not reward); a uniform one that measures faster becomes trial 0. Returns whether the space
        is still slower than the teacher, and what the refusal says."""
        ends = uniform_fast_ends(self.space, **self.sample_kwargs)
        if not ends:
            return True, basis
        *measured, teacher_measured = self._measure_against_teacher([c for c, _ in ends])
        i = min(range(len(ends)), key=measured.__getitem__)
        if measured[i] >= teacher_measured:
            return True, (f"{basis}; its most pruned uniform compression measures {measured[i]:.3f} ms, the teacher "
                          f"{teacher_measured:.3f} ms")
        candidate, params = ends[i]
        self.fastest = (candidate, float(self._predict([candidate])[0]), params)
        self.echo(f"fastest  {basis}: slower, but its most pruned uniform compression at {min(candidate.bits)} bits "
                  f"measures {measured[i]:.3f} ms beside the teacher's {teacher_measured:.3f} ms: the search starts from it")
        return False, basis

    def _measure_against_teacher(self, candidates: list[Candidate]) -> list[float]:
        """Milliseconds of each of ``candidates`` (untrained weights: latency does not depend on them), then of
        the teacher, all exported as deployed and timed side by side here (nothing written to the run folder)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="karumi-") as tmp:
            paths = [pathlib.Path(tmp) / f"candidate{i}.onnx" for i in range(len(candidates))]
            for candidate, path in zip(candidates, paths):
                deployable_onnx(self.space, candidate, self.data, path, calibration=[self.data.train.x[:64]])
            teacher_path = pathlib.Path(tmp) / "teacher.onnx"
            self._teacher_onnx(teacher_path)
            return list(measure_side_by_side([*paths, teacher_path], threads=self.device.threads))

    def run(self) -> SearchResult:
        self._load()
        self._write_config()
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
        cfg = {"format_version": 1, "run_id": self.run_id, "created_utc": _now(), "options": self.opts.to_dict()}
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    @property
    def storage(self) -> str:
        """The study's storage URL: ``--storage`` as given, else the SQLite file of the run folder where it
        is now (a moved or copied run folder resumes its own study)."""
        return self.opts.storage or f"sqlite:///{(self.out_dir / 'study.db').resolve()}"

    def _open_study(self) -> Any:
        o = self.opts
        sampler = make_sampler(str(o.sampler), seed=int(o.seed), budget_ms=self.search_budget_ms)
        study = open_study(storage=self.storage, study_name=str(o.study_name), sampler=sampler)
        self._agree_on_bits(study)
        if study.trials:  # a resumed study keeps its own history
            return study
        # the fastest candidate first where the budget is tight or held to the teacher's latency, then the
        # uniform compressions within the budget: the search starts from the hand-made trade-off curve and
        # refines it per layer; its front holds those points or better ones
        starts = seed_study(study, self.space, self._predict, budget_ms=self.search_budget_ms, trials=int(o.trials),
                            fastest=self.fastest, held=self.search_budget_ms < float(o.budget_ms), **self.sample_kwargs)
        for width in sorted({min(c.bits) for c, _, _ in starts}):
            at = sorted((max(c.prune_ratios), ms) for c, ms, _ in starts if min(c.bits) == width)
            ratios, times = f"{at[0][0]:g}", f"{at[0][1]:.3f}"
            if len(at) > 1:
                ratios, times = f"{ratios} to {at[-1][0]:g}", f"{times} to {at[-1][1]:.3f}"
            self.echo(f"start    {len(at)} uniform compression{'s' if len(at) > 1 else ''} at {width} bits, every layer "
                      f"pruned alike by {ratios} ({times} ms predicted): the hand-made trade-off within the budget, "
                      "tried first")
        return study

    def _agree_on_bits(self, study: Any) -> None:
        """Every run of one study samples the same bit widths (Optuna refuses a parameter whose choices
        change): the first run records its widths in the study; a later run with ``--bits auto`` takes them,
        one that lists other widths is refused."""
        stored = study.user_attrs.get(BITS_ATTR)
        if stored is None:
            study.set_user_attr(BITS_ATTR, list(self.bits))
            return
        stored = tuple(int(b) for b in stored)
        if stored == self.bits:
            return
        if parse_bits(self.opts.bits) is not None:
            raise InputError(f"--bits {self.opts.bits} differs from the bit widths {','.join(map(str, stored))} "
                             f"that study {self.opts.study_name!r} was searched with; use the same --bits")
        self.echo(f"bits     {', '.join(map(str, stored))}: the widths this study was started with")
        self.bits = stored
        self._update_fastest()

    def _search(self, study: Any) -> Any:
        from optuna.trial import TrialState

        o = self.opts
        train = self.data.train.subset(int(o.proxy_samples))
        if self.supernet is not None:
            proxy = SupernetProxy(self.supernet, train, self.data.val, self.teacher.model,
                                  steps=int(o.supernet_proxy_steps), seed=int(o.seed))
            evaluator, build = proxy, proxy.build
        else:
            evaluator = ProxyEvaluator(train, self.data.val, self.teacher.model, epochs=int(o.proxy_epochs),
                                       seed=int(o.seed))
            build = None
        context = SearchContext(space=self.space, predictor=self.device.predictor,
                                budget_ms=self.search_budget_ms, evaluator=evaluator, size=str(o.size),
                                build=build)
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
                                        n_trials=int(o.trials), storage=self.storage, out_dir=self.out_dir,
                                        address=str(o.ray_address), workers=int(o.workers),
                                        resume=self.resuming, timeout_s=timeout_s,
                                        sample_kwargs=self.sample_kwargs, on_trial=on_trial)
            else:
                outcome = run_study(study, space=self.space, context=context, run_id=self.run_id,
                                    n_trials=int(o.trials), timeout_s=timeout_s,
                                    sample_kwargs=self.sample_kwargs, on_trial=on_trial)
        if outcome.interrupted:
            self.echo(f"stopped  Ctrl-C: writing the results so far (continue with --resume {self.out_dir})")
        return outcome

    def _teacher_onnx(self, path: pathlib.Path | None = None) -> pathlib.Path:
        """``teacher.onnx`` (of the run folder unless ``path``): the teacher as deployed (images in [0, 1],
        standardisation inside, dynamic batch)."""
        path = self.out_dir / "teacher.onnx" if path is None else path
        if not path.is_file():
            graph = export_onnx(self.teacher.model, self.data.input_shape, dynamic_batch=True)
            onnx.save(with_preprocessing(graph, self.data.mean, self.data.std), str(path))
        return path

    def _teacher_graph(self) -> Any:
        """The teacher's ONNX graph as it reads standardised images: the kernels the latency model knows."""
        if getattr(self, "_teacher_proto", None) is None:
            self._teacher_proto = export_onnx(self.teacher.model, self.data.input_shape)
        return self._teacher_proto

    def _profile_teacher(self) -> None:
        """Local device: time the teacher's kernels and the teacher itself into the cached profile, once."""
        if not self.device.local:
            return
        graph = self._teacher_graph()
        with self._bar(None, "profiling the teacher", unit="graph") as bar:
            self.device = add_models(self.device, [graph], names=[model_name(graph, "teacher")],
                                     on_progress=bar.report)

    def _teacher_ms(self, kernels: Sequence[Any]) -> float:
        """The teacher's latency on the device: its measurement when the table timed it whole (what the
        predictor returns for its ONNX graph), else the fit's extrapolation."""
        pred = self.device.predictor
        measured = pred.measured_models.get(tuple(kernels))
        return float(measured) if measured is not None else float(pred.predict(kernels))

    def _teacher_entry(self) -> ParetoEntry:
        path = self._teacher_onnx()
        kernels, _unknown = kernels_from_onnx(self._teacher_graph())
        latency = self._teacher_ms(kernels)
        return ParetoEntry(trial=None, candidate={"teacher": str(self.opts.teacher), "onnx": path.name},
                           accuracy=float(self.teacher.val_accuracy), latency_ms=latency,
                           size_bytes=int(round(sum(k.weight_bytes for k in kernels))),
                           feasible=latency <= float(self.opts.budget_ms), trained=True)

    def _front(self, study: Any) -> ParetoFront:
        """The front, measured here side by side with the teacher when the device is this machine, and the
        entry to ship (:func:`search._pareto.select`). When no measured front entry is faster than the teacher,
        up to :data:`LEFT_OUT` trained trials the front left out are measured too (:func:`search._pareto.left_out`)
        and the front is taken again on the measured latencies."""
        trials = owned_trials(study, self.run_id)
        front = pareto_front(trials, budget_ms=float(self.opts.budget_ms), teacher=self._teacher_entry(),
                             search_budget_ms=self.search_budget_ms, beat_teacher=self.teacher_known,
                             selection=str(self.opts.select), n_val=len(self.data.val))
        if self.device.local and front.entries:
            self.echo(f"measure  the {len(front.entries)} front entries and the teacher, side by side on this machine")
            self._measure_entries(front, front.entries)
            select(front)
            extra = left_out(front, trials, limit=LEFT_OUT) if front.selected is None and front.beat_teacher else []
            if extra:
                self.echo(f"measure  no front entry measured faster than the teacher: the front again, with {len(extra)} "
                          "trained trial(s) it left out (it is taken on predicted latencies), side by side")
                self._measure_entries(front, [*front.entries, *extra])
                widen(front, extra)
        self.echo(f"select   " + (f"trial {front.selected.trial}: " if front.selected is not None else "nothing: ")
                  + front.selection_reason)
        write_pareto(front, self.out_dir)
        return front

    def _measure_entries(self, front: ParetoFront, entries: Sequence[ParetoEntry]) -> None:
        """Export ``entries`` as deployed (into ``pareto_onnx/``) and time them beside the teacher, side by side."""
        folder = self.out_dir / "pareto_onnx"
        folder.mkdir(exist_ok=True)
        calib = [self.data.train.x[:64]]
        paths = []
        for e in entries:
            path = folder / f"trial{e.trial}.onnx"
            if not path.is_file():
                deployable_onnx(self.space, Candidate.from_dict(e.candidate), self.data, path, calibration=calib)
            paths.append(path)
        *ms, teacher_ms = measure_side_by_side([*paths, self._teacher_onnx()], threads=self.device.threads)
        for e, m in zip(entries, ms):
            e.measured_latency_ms = m
        assert front.teacher is not None
        front.teacher.measured_latency_ms = teacher_ms

    def _finalize(self, front: ParetoFront) -> FinalModel:
        sel = front.selected
        assert sel is not None
        if self.supernet is not None:
            start = "its supernet weights"
        else:
            start = "the teacher's weights" if self.space.name == "prune" else "random weights"
        self.echo(f"final    fine-tuning trial {sel.trial} from {start} by distillation for {self.opts.final_epochs} "
                  f"epoch(s), exporting best/")
        cand = Candidate.from_dict(sel.candidate)
        final = finalize(cand, space=self.space, data=self.data,
                         initial=self.supernet.extract(cand) if self.supernet is not None else None,
                         teacher=self.teacher.model, out_dir=self.out_dir, epochs=int(self.opts.final_epochs),
                         measure=self.device.local, predictor=self.device.predictor,
                         teacher_onnx=self._teacher_onnx(), seed=int(self.opts.seed), threads=self.device.threads,
                         train_threads=None)
        self.echo(f"ship     best/model.onnx is the {final.shipped} export: {final.shipped_reason}")
        write_pareto(front, self.out_dir, final=final.to_dict())
        return final

    def _report(self, front: ParetoFront, final: FinalModel | None, interrupted: bool) -> SearchResult:
        measured = self.device.local and (final is not None or front.teacher.measured_latency_ms is not None)
        result = SearchResult(out_dir=self.out_dir, pareto=front, selected=front.selected, final=final,
                              teacher=front.teacher, teacher_test_accuracy=float(self.teacher.test_accuracy),
                              teacher_onnx_test_accuracy=onnx_accuracy(self._teacher_onnx(), self.data.test, self.data),
                              interrupted=interrupted, trials_finished=front.n_trials,
                              seconds=time.perf_counter() - self.start, config=self.opts.to_dict(),
                              device=self.device.description,
                              measurement=measurement_description(self.device) if measured else None,
                              preprocess=preprocess_contract(self.data))
        write_report(result)
        return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
