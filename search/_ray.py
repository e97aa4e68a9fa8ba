"""Ray Tune sweeps: the search's objective run as Ray Tune trials, on one machine or a Ray cluster.

The driver keeps what the single-machine search does and changes only where trials run:

- Ray Tune's Optuna searcher (``OptunaSearch``) proposes candidates with the same Optuna sampler, on the
  same three objectives (maximise accuracy, minimise latency, minimise size) given as metric and mode
  lists, under a ``ConcurrencyLimiter`` of ``workers`` trials, each trial holding its CPUs.
- The search space is sampled once on the driver (define-by-run); each trial carries the sampled
  parameters in its config and replays them into the same candidate on the worker through
  ``optuna.trial.FixedTrial``.
- The evaluation context (data, cached teacher logits, latency predictor) is put into Ray's object store
  once (``ray.put``) and its reference handed to every trial through ``tune.with_parameters``: workers read
  it from the store; it is not shipped once per trial.
- Fault tolerance: a trial that dies with its node is retried (``FailureConfig(max_failures=...)``); the
  experiment is checkpointed under ``<out>/ray/sweep`` and continues with :func:`ray_sweep` (``resume=True``),
  which calls ``Tuner.restore``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils import flatten_dict

from search._errors import InputError
from search._objective import OBJECTIVES, evaluate_candidate
from search._study import RUN_ATTR, StudyOutcome, fail_stale_trials, owned_trials, storage_of
from spaces import Candidate

if TYPE_CHECKING:
    from spaces import SearchSpace

__all__ = ["EXPERIMENT", "METRICS", "MODES", "RaySweep", "RayTrial", "ray_experiment_dir", "ray_sweep", "run_ray_study"]

logger = logging.getLogger(__name__)

#: The objectives (:data:`search._objective.OBJECTIVES`) as Ray Tune metric names and modes.
METRICS = tuple(name for name, _ in OBJECTIVES)
MODES = tuple("max" if direction == "maximize" else "min" for _, direction in OBJECTIVES)
#: Name of the Ray Tune experiment folder under ``<out>/ray``.
EXPERIMENT = "sweep"
#: Config key carrying the Optuna trial number from the driver to the trial.
TRIAL_KEY = "karumi_trial"
#: What each trial reports besides the objectives.
_EXTRA = ("feasible", "trained", "seconds", "compressed_size_bytes")
#: The reported dense size when the size objective (metric ``size_bytes``) is the compressed one; stored as
#: the trial's ``size_bytes`` user attribute, as the single-machine objective stores it.
DENSE = "dense_size_bytes"
#: Constraint name (predicted latency minus the budget, feasible when <= 0), as the single-machine study.
CONSTRAINT = "latency_over_budget_ms"


@dataclasses.dataclass(frozen=True)
class RayTrial:
    """One finished Ray Tune trial, in the units of the single-machine search.

    Attributes:
        number: the Optuna trial number given by the searcher (0, 1, ... in the order proposed).
        params: the sampled Optuna parameters, flat, as the single-machine study records them.
        candidate: the candidate the worker evaluated (replayed from ``params``).
        accuracy: validation accuracy of the proxy, a fraction in [0, 1].
        latency_ms: predicted latency in milliseconds.
        size_bytes: stored weights in bytes.
        feasible: within the latency budget.
        trained: whether the proxy trained it (over-budget candidates are not trained).
        seconds: wall seconds the evaluation took on the worker.
    """

    number: int
    params: dict[str, Any]
    candidate: Candidate
    accuracy: float
    latency_ms: float
    size_bytes: float
    feasible: bool
    trained: bool
    seconds: float

    @property
    def values(self) -> tuple[float, float, float]:
        """The objective values in :data:`METRICS` order."""
        return (self.accuracy, self.latency_ms, self.size_bytes)


@dataclasses.dataclass(frozen=True)
class RaySweep:
    """What :func:`ray_sweep` hands back.

    Attributes:
        trials: every finished trial, ordered by ``number``.
        errors: ``(number, message)`` of each trial that still failed after its retries.
        path: the Ray Tune experiment folder (what ``resume=True`` restores from).
    """

    trials: list[RayTrial]
    errors: list[tuple[int, str]]
    path: pathlib.Path


def ray_experiment_dir(out_dir: str | pathlib.Path) -> pathlib.Path:
    """The Ray Tune experiment folder of a run written to ``out_dir``."""
    return pathlib.Path(out_dir).resolve() / "ray" / EXPERIMENT


# --------------------------------------------------------------------------------------------- pieces
class _DefineByRun:
    """Ray's define-by-run search space: samples the candidate on the real Optuna trial.

    A plain class (not a closure) because Ray Tune pickles the searcher, and this with it, into its
    experiment checkpoint.
    """

    def __init__(self, space: "SearchSpace", sample_kwargs: Mapping[str, Any], trial_attrs: Mapping[str, Any]) -> None:
        self.space = space
        self.sample_kwargs = dict(sample_kwargs)
        self.trial_attrs = dict(trial_attrs)

    def __call__(self, captor: Any) -> dict[str, Any]:
        # Ray hands a wrapper that records ``suggest_*`` calls; sample on the Optuna trial it wraps so the
        # space sees a genuine ``optuna.Trial``, then report everything that trial suggested.
        trial = getattr(captor, "ot_trial", captor)
        for key, value in self.trial_attrs.items():
            trial.set_user_attr(key, value)
        candidate = self.space.sample(trial, **self.sample_kwargs)
        trial.set_user_attr("candidate", candidate.to_dict())
        return {**trial.params, TRIAL_KEY: trial.number}


class _Searcher(OptunaSearch):
    """``OptunaSearch`` that stores each finished trial's reported results as Optuna user attributes
    before telling the study, so a sampler's ``constraints_func`` reads them exactly as it does in the
    single-machine study (where the objective sets them)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if result and ot_trial is not None and trial_id not in self._completed_trials:
            for key in (*METRICS, *_EXTRA):
                if key in result:
                    ot_trial.set_user_attr(key, result[key])
            if DENSE in result:
                ot_trial.set_user_attr("size_bytes", result[DENSE])
            # a sampler without constraints_func (random) still gets feasibility recorded, as the
            # single-machine objective does
            if CONSTRAINT in result and not getattr(self._sampler, "_constraints_func", None):
                ot_trial.set_constraint(CONSTRAINT, float(result[CONSTRAINT]))
        super().on_trial_complete(trial_id, result=result, error=error)


class _Progress(tune.Callback):
    """Calls ``hook(metrics)`` on the driver for each completed trial. The hook is not saved with the
    experiment (it may hold a progress bar); a restored experiment is given a fresh one."""

    def __init__(self, hook: Callable[[dict[str, Any]], None] | None) -> None:
        self.hook = hook

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.hook = None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.hook is not None and trial.last_result:
            self.hook(dict(trial.last_result))


def _run_trial(config: dict[str, Any], *, space: "SearchSpace", sample_kwargs: dict[str, Any],
               evaluate: Callable[..., Any], context: Any) -> None:
    """The Ray Tune trainable: replay the config into the candidate, evaluate it, report the results.

    ``context`` arrives already fetched from the object store by ``tune.with_parameters``.
    """
    params = flatten_dict(dict(config), delimiter="/")
    number = int(params.pop(TRIAL_KEY))
    candidate = space.sample(optuna.trial.FixedTrial(params), **sample_kwargs)
    result = evaluate(candidate, context=context)
    report = {
        **{key: float(value) for key, value in zip(METRICS, result.values)},
        "feasible": bool(result.feasible),
        "trained": bool(result.trained),
        "seconds": float(result.seconds),
        DENSE: int(result.size_bytes),
        "compressed_size_bytes": result.compressed_size_bytes,
        "candidate": candidate.to_json(),
        TRIAL_KEY: number,
    }
    budget_ms = getattr(context, "budget_ms", None)
    if budget_ms is not None:
        report[CONSTRAINT] = float(result.latency_ms) - float(budget_ms)
    tune.report(report)


# --------------------------------------------------------------------------------------------- driver
def _connect(address: str, *, workers: int, cpus_per_trial: float) -> bool:
    """Connect to (or start) Ray. True when this call started a session that the caller must shut down."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=max(1, math.ceil(workers * cpus_per_trial)), **kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(
                f"--ray-address {address!r}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); "
                "start one with 'ray start --head', or use --ray-address local"
            ) from exc
    return True


def _check(*, trials: int, workers: int, cpus_per_trial: float, max_failures: int, address: str,
           timeout_s: float | None) -> None:
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials={trials!r} must be a positive integer")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    if not cpus_per_trial > 0:
        raise ValueError(f"cpus_per_trial={cpus_per_trial!r} must be > 0")
    if not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"max_failures={max_failures!r} must be an integer >= 0")
    if not isinstance(address, str) or not address:
        raise ValueError(f"address={address!r} must be 'local', 'auto' or a Ray cluster address such as host:6379")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be > 0 or None")


def ray_sweep(*, space: "SearchSpace", evaluate: Callable[..., Any], context: Any,
              sampler: optuna.samplers.BaseSampler, trials: int, workers: int, out_dir: str | pathlib.Path,
              address: str = "local", resume: bool = False, storage: str | None = None,
              study_name: str = "karumi", trial_attrs: Mapping[str, Any] | None = None,
              sample_kwargs: Mapping[str, Any] | None = None, cpus_per_trial: float = 1.0, max_failures: int = 3, timeout_s: float | None = None,
              on_trial: Callable[[dict[str, Any]], None] | None = None) -> RaySweep:
    """Run ``trials`` candidates of ``space`` as Ray Tune trials, ``workers`` at a time.

    Args:
        space: the search space; ``space.sample(trial, **sample_kwargs)`` draws a candidate.
        evaluate: ``evaluate(candidate, *, context)`` returning an object with ``accuracy``, ``latency_ms``,
            ``size_bytes``, ``feasible``, ``trained`` and ``seconds`` (the search's objective). It runs on
            the workers, so it must be importable there (a module-level function).
        context: what ``evaluate`` needs (data, teacher logits, predictor); put in the object store once.
        sampler: the Optuna sampler proposing candidates (multi-objective; its ``constraints_func``, if
            any, reads the user attributes named in :data:`METRICS` and ``feasible``).
        trials: number of trials in the whole sweep (a resumed sweep runs only the missing ones).
        workers: trials running at once.
        out_dir: the run's output folder; Ray Tune's experiment goes to ``<out_dir>/ray/sweep``.
        address: ``local`` (start Ray in this process), ``auto`` (the cluster this machine belongs to) or
            a cluster address. Ignored when Ray is already initialised in this process.
        resume: continue the experiment found under ``out_dir`` with ``Tuner.restore``.
        storage: Optuna storage URL of the study the searcher asks and tells (created or loaded, with the
            three directions); ``None``: an in-memory study inside the searcher.
        study_name: the study's name in ``storage``.
        trial_attrs: user attributes set on every trial when it is asked (such as the run id).
        sample_kwargs: keyword options for ``space.sample`` (such as ``search=``).
        cpus_per_trial: CPUs each trial holds.
        max_failures: retries of a trial whose worker or node dies.
        timeout_s: stop proposing trials after this many seconds (``None``: no limit).
        on_trial: called on the driver with each completed trial's reported results (progress).

    Returns:
        The finished trials and the errors, see :class:`RaySweep`.
    """
    _check(trials=trials, workers=workers, cpus_per_trial=cpus_per_trial, max_failures=max_failures,
           address=address, timeout_s=timeout_s)
    sample_kwargs = dict(sample_kwargs or {})
    path = ray_experiment_dir(out_dir)
    started = _connect(address, workers=workers, cpus_per_trial=cpus_per_trial)
    try:
        # One copy in the object store; with_parameters hands the reference on as is (no second put) and
        # each trial reads the object from its node's store.
        context_ref = ray.put(context)
        trainable = tune.with_resources(
            tune.with_parameters(_run_trial, space=space, sample_kwargs=sample_kwargs, evaluate=evaluate,
                                 context=context_ref),
            {"cpu": cpus_per_trial},
        )
        if resume:
            if not tune.Tuner.can_restore(str(path)):
                raise InputError(f"--resume {pathlib.Path(out_dir)}: no Ray Tune experiment under {path}")
            logger.info("restoring the Ray Tune experiment at %s", path)
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
            _rehook(tuner, on_trial)
        else:
            searcher = _Searcher(
                space=_DefineByRun(space, sample_kwargs, trial_attrs or {}), metric=list(METRICS), mode=list(MODES),
                sampler=sampler, storage=None if storage is None else optuna.storages.get_storage(storage_of(storage)),
                study_name=study_name,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=workers),
                    num_samples=trials,
                    time_budget_s=timeout_s,
                    trial_dirname_creator=_trial_dirname,
                    reuse_actors=True,  # a worker process imports torch once, not once per trial
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=str(path.parent),
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                    callbacks=[_Progress(on_trial)],
                    verbose=0,
                ),
            )
        with _quiet_tune():
            grid = tuner.fit()
        return _collect(grid, space=space, sample_kwargs=sample_kwargs, path=path)
    finally:
        if started:
            ray.shutdown()


def _trial_dirname(trial: Any) -> str:
    """Short trial folder names (Ray's default spells out every parameter)."""
    return f"trial-{trial.config.get(TRIAL_KEY, 'x')}-{trial.trial_id}"


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's console output off (its classic reporter honours ``verbose=0``; the newer one prints tables
    regardless), and its warning that sampling a large space on the driver takes a moment."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument")
            yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved


def _rehook(tuner: Any, on_trial: Callable[[dict[str, Any]], None] | None) -> None:
    """Give a restored experiment's progress callback its hook back (hooks are not saved)."""
    if on_trial is None:
        return
    run_config = tuner._local_tuner.get_run_config()
    callbacks = [cb for cb in (run_config.callbacks or []) if not isinstance(cb, _Progress)]
    run_config.callbacks = [*callbacks, _Progress(on_trial)]


def _collect(grid: Any, *, space: "SearchSpace", sample_kwargs: dict[str, Any], path: pathlib.Path) -> RaySweep:
    trials: list[RayTrial] = []
    errors: list[tuple[int, str]] = []
    for result in grid:
        params = flatten_dict(dict(result.config or {}), delimiter="/")
        number = int(params.pop(TRIAL_KEY, -1))
        metrics = result.metrics or {}
        if result.error is not None or not all(key in metrics for key in METRICS):
            errors.append((number, str(result.error).splitlines()[0] if result.error else "no result reported"))
            continue
        candidate = Candidate.from_json(metrics["candidate"])
        if candidate != space.sample(optuna.trial.FixedTrial(params), **sample_kwargs):
            raise RuntimeError(f"trial {number}: the worker evaluated another candidate than its config describes")
        trials.append(RayTrial(
            number=number, params=params, candidate=candidate,
            accuracy=float(metrics["accuracy"]), latency_ms=float(metrics["latency_ms"]),
            size_bytes=float(metrics["size_bytes"]), feasible=bool(metrics["feasible"]),
            trained=bool(metrics["trained"]), seconds=float(metrics["seconds"]),
        ))
    trials.sort(key=lambda t: t.number)
    errors.sort()
    return RaySweep(trials=trials, errors=errors, path=path)


# --------------------------------------------------------------------------------------------- the run's study
def run_ray_study(study: optuna.Study, *, space: "SearchSpace", context: Any, run_id: str, n_trials: int,
                  storage: str, out_dir: str | pathlib.Path, address: str, workers: int, resume: bool = False,
                  timeout_s: float | None = None, sample_kwargs: Mapping[str, Any] | None = None,
                  evaluate: Callable[..., Any] | None = None, max_failures: int = 3,
                  on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> Any:
    """The Ray counterpart of :func:`search._study.run_study`: the same study, the same trial records.

    The searcher asks and tells the run's own study in ``storage`` (the SQLite file in the output folder
    by default), so its trials carry the same user attributes (run id, candidate, accuracy, latency_ms,
    size_bytes, feasible, trained, seconds) as single-machine trials and the Pareto front, report and
    ``--resume`` read them the same way. With ``resume`` and a Ray experiment under ``out_dir``, that
    experiment is restored (``Tuner.restore``): its unfinished and errored trials run again.

    Returns:
        A :class:`search._study.StudyOutcome`.
    """
    from optuna.trial import TrialState

    start = time.perf_counter()
    started_at = datetime.datetime.now()  # Optuna's clock: trials asked before it and never claimed are orphans
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as run_study: no line per trial
    done = len(owned_trials(study, run_id, states=(TrialState.COMPLETE,)))
    restore = resume and tune.Tuner.can_restore(str(ray_experiment_dir(out_dir)))
    if not restore:
        fail_stale_trials(study, run_id, unclaimed_before=started_at)
    remaining = max(0, n_trials - done)
    if remaining == 0 and not restore:
        return StudyOutcome(finished=0, interrupted=False, seconds=time.perf_counter() - start)

    def hook(metrics: dict[str, Any]) -> None:
        if on_trial is None or not all(key in metrics for key in METRICS):
            return
        attrs = {key: metrics[key] for key in (*METRICS, *_EXTRA) if key in metrics}
        if DENSE in metrics:
            attrs["size_bytes"] = metrics[DENSE]
        on_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[metrics[k] for k in METRICS],
                                           user_attrs=attrs))

    sweep = ray_sweep(space=space, evaluate=evaluate or evaluate_candidate, context=context, sampler=study.sampler,
                      trials=max(1, remaining), workers=workers, out_dir=out_dir, address=address, resume=restore,
                      storage=storage, study_name=study.study_name, trial_attrs={RUN_ATTR: run_id},
                      sample_kwargs=sample_kwargs, max_failures=max_failures, timeout_s=timeout_s, on_trial=hook)
    for number, message in sweep.errors:
        logger.warning("trial %d failed after %d retries: %s", number, max_failures, message)
    # asked but never told (their Ray trial did not finish), or asked and never claimed by a killed process
    fail_stale_trials(study, run_id, unclaimed_before=started_at)
    after = len(owned_trials(study, run_id, states=(TrialState.COMPLETE,)))
    seconds = time.perf_counter() - start
    timed_out = timeout_s is not None and seconds >= timeout_s
    interrupted = after + len(sweep.errors) < n_trials and not timed_out
    return StudyOutcome(finished=after - done, interrupted=interrupted, seconds=seconds)
