"""The Optuna study: three objectives, the latency budget as a constraint, resumable storage.

The driver (:func:`run_study`) receives its collaborators: the study (which holds the sampler and the
storage), the search space and the :class:`~search._objective.SearchContext` (predictor, budget, proxy
evaluator). Each finished trial is committed to the storage as it ends, so a run killed outright loses
only the trials that were running; Ctrl-C fails the running trial cleanly and returns (:class:`_CtrlC`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import signal
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

from search._errors import InputError
from search._objective import OBJECTIVES, BudgetConstraint, SearchContext, TrialResult, evaluate_candidate

if TYPE_CHECKING:
    import optuna

    from spaces import SearchSpace

__all__ = ["SAMPLERS", "RUN_ATTR", "StudyOutcome", "make_sampler", "open_study", "owned_trials", "run_study"]

logger = logging.getLogger(__name__)

#: ``--sampler`` choices.
SAMPLERS = ("tpe", "nsga2", "random", "gp")
#: User attribute naming the run that owns a trial (several runs may share one study).
RUN_ATTR = "run_id"
#: Seconds an unclaimed RUNNING trial must have started before a run began to count as an orphan of a killed process.
#: A live process claims its trial right after asking it, but the sampler runs in between (it reads the study from the
#: storage): on a loaded 2-core machine with two processes on one PostgreSQL study that took long enough for the other
#: process, starting, to fail a live trial (whose process then stopped: "Cannot tell a FAIL trial").
ORPHAN_GRACE_S = 60.0


def make_sampler(name: str, *, seed: int | None, budget_ms: float) -> "optuna.samplers.BaseSampler":
    """The sampler called ``name``, seeded, with the budget as its ``constraints_func`` where it takes one.

    ``RandomSampler`` takes no constraints (it ignores them anyway); for it the objective records the
    constraint on the trial itself so the stored study still tells feasible trials apart.
    """
    import optuna

    constraint = BudgetConstraint(float(budget_ms))
    with warnings.catch_warnings():
        # Optuna 5 deprecates constraints_func in favour of Trial.set_constraint (removal planned for 7.0);
        # it is still how a sampler learns constraints from trials told by Ray Tune's searcher.
        warnings.simplefilter("ignore", FutureWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constraints_func=constraint, multivariate=True,
                                              n_startup_trials=8)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraint, population_size=16)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, constraints_func=constraint, n_startup_trials=8)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise InputError(f"--sampler {name!r} is not known; allowed: {', '.join(SAMPLERS)}")


#: Times a storage is opened before a concurrent-creation error is reported.
OPEN_ATTEMPTS = 5

#: Seconds a SQLite connection waits for another connection's lock before failing (SQLite's default, 5 s,
#: is short when a reader, a Ray worker or a second run holds the file on a busy machine).
SQLITE_BUSY_TIMEOUT_S = 120.0


def storage_of(url: str) -> "optuna.storages.BaseStorage | str":
    """The Optuna storage for ``url``: a SQLite file gets a long busy timeout (``SQLITE_BUSY_TIMEOUT_S``),
    so that a trial's commit waits for a concurrent reader instead of ending the run with "database is
    locked"; any other URL is returned as is."""
    import optuna

    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}})
    return url


def _lost_creation_race(exc: BaseException) -> bool:
    """Whether ``exc`` is another process creating the same tables or study first (SQLAlchemy
    IntegrityError / duplicate key / already exists)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(m in text for m in ("integrityerror", "uniqueviolation", "duplicate key", "already exists"))


def open_study(*, storage: str, study_name: str, sampler: "optuna.samplers.BaseSampler") -> "optuna.Study":
    """Create the study in ``storage``, or load it when it exists (resume, or several runs sharing it)."""
    import optuna

    directions = [d for _, d in OBJECTIVES]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            study = optuna.create_study(storage=storage_of(storage), study_name=study_name, sampler=sampler,
                                        directions=directions, load_if_exists=True)
            break
        except (ValueError, ImportError, ModuleNotFoundError) as exc:
            raise InputError(f"--storage {storage!r} cannot be opened: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (SQLAlchemy errors: a bad URL, an unreachable server)
            if attempt < OPEN_ATTEMPTS and _lost_creation_race(exc):
                # Several processes opening one new database create Optuna's tables at once; the losers
                # see a duplicate-key error. The tables exist now: opening again just loads them.
                logger.info("storage tables were being created by another process; opening again (%d)", attempt)
                time.sleep(0.2 * attempt)
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"--storage {storage!r} cannot be opened: {reason}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise InputError(f"--study-name {study_name!r} in {storage} has directions "
                         f"{[d.name.lower() for d in study.directions]}, not this search's {directions}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([name for name, _ in OBJECTIVES])
    return study


def owned_trials(study: "optuna.Study", run_id: str, states: Sequence[Any] | None = None) -> list["optuna.trial.FrozenTrial"]:
    """The trials of ``study`` started by the run ``run_id`` (optionally only in ``states``)."""
    trials = study.get_trials(deepcopy=False, states=states)
    return [t for t in trials if t.user_attrs.get(RUN_ATTR) == run_id]


def fail_stale_trials(study: "optuna.Study", run_id: str, *,
                      unclaimed_before: datetime.datetime | None = None, grace_s: float = ORPHAN_GRACE_S) -> int:
    """Mark this run's trials left RUNNING by a killed process as FAIL; returns how many.

    ``unclaimed_before``: also fail RUNNING trials that no run has claimed (no run id) and that started more than
    ``grace_s`` seconds before this time (naive local time, as Optuna stamps ``datetime_start``). A trial is asked
    first and given its run id by a second write, so a process killed between the two leaves a RUNNING trial that no
    run owns; a live process claims its trial as soon as its sampler has drawn it, well within the grace, so an
    unclaimed trial that started that long before this process began is an orphan (a younger one is left to a later
    run).
    """
    from optuna.trial import TrialState

    def orphan(t: "optuna.trial.FrozenTrial") -> bool:
        return (unclaimed_before is not None and RUN_ATTR not in t.user_attrs and t.datetime_start is not None
                and t.datetime_start < unclaimed_before - datetime.timedelta(seconds=grace_s))

    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.user_attrs.get(RUN_ATTR) == run_id or orphan(t)]  # one read of the running trials
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)  # noqa: SLF001
    return len(stale)


@dataclasses.dataclass(frozen=True)
class StudyOutcome:
    """What :func:`run_study` did: trials finished by this call, whether it was interrupted (Ctrl-C)."""

    finished: int
    interrupted: bool
    seconds: float


class _CtrlC:
    """Ctrl-C (SIGINT) during ``study.optimize``, never in the middle of a storage write.

    A KeyboardInterrupt raised inside Optuna's storage calls (a trial's attributes, the sampler reading the
    study, the tell) can leave a SQLite connection holding its lock; Optuna then fails the trial through
    another connection of the same process, which waits out the busy timeout and ends the run with
    "database is locked" instead of the results so far (seen in ``test_sigint_writes_results_so_far``).
    So: while a candidate is being evaluated (training, no storage call), Ctrl-C interrupts at once and the
    trial is failed cleanly; anywhere else it asks the study to stop and the trial in progress fails at the
    start of its evaluation (or the study ends after it). A second Ctrl-C interrupts at once, wherever it
    lands. Installed only where Ctrl-C is Python's default (the main thread, SIGINT not ignored).

    A Ctrl-C that lands while Python runs a garbage-collection or weak-reference callback (SQLAlchemy's, during
    training) cannot propagate: Python swallows it and prints "Exception ignored in ..." with a traceback (seen
    once in ``test_sigint_writes_results_so_far`` on CI, 2026-12-08). While installed, such a swallowed
    KeyboardInterrupt asks the study to stop instead (the trial in progress ends, the next one does not start)
    and prints nothing; any other unraisable exception goes to the previous ``sys.unraisablehook``.
    """

    def __init__(self, study: "optuna.Study") -> None:
        self.study, self.requested, self.evaluating = study, False, False

    def _handler(self, _signum: int, _frame: Any) -> None:
        again, self.requested = self.requested, True
        if self.evaluating or again:
            raise KeyboardInterrupt
        with contextlib.suppress(RuntimeError):  # outside the optimize loop: nothing to stop
            self.study.stop()

    @contextlib.contextmanager
    def installed(self) -> Any:
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield self
            return
        signal.signal(signal.SIGINT, self._handler)
        previous_hook = sys.unraisablehook

        def swallowed(unraisable: Any) -> None:
            if not isinstance(unraisable.exc_value, KeyboardInterrupt):
                previous_hook(unraisable)
                return
            self.requested = True
            with contextlib.suppress(RuntimeError):  # outside the optimize loop: nothing to stop
                self.study.stop()

        sys.unraisablehook = swallowed
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.unraisablehook = previous_hook

    @contextlib.contextmanager
    def evaluation(self) -> Any:
        """Where Ctrl-C may interrupt at once (no storage call inside); one already requested does so now."""
        if self.requested:
            raise KeyboardInterrupt
        self.evaluating = True
        try:
            yield
        finally:
            self.evaluating = False


class _Objective:
    def __init__(self, *, space: "SearchSpace", context: SearchContext, run_id: str, set_constraint: bool,
                 sample_kwargs: dict[str, Any], evaluate: Callable[..., TrialResult], ctrl_c: _CtrlC) -> None:
        self.space, self.context, self.run_id = space, context, run_id
        self.set_constraint, self.sample_kwargs, self.evaluate = set_constraint, sample_kwargs, evaluate
        self.ctrl_c = ctrl_c

    def __call__(self, trial: "optuna.Trial") -> tuple[float, float, float]:
        trial.set_user_attr(RUN_ATTR, self.run_id)
        candidate = self.space.sample(trial, **self.sample_kwargs)
        trial.set_user_attr("candidate", candidate.to_dict())
        with self.ctrl_c.evaluation():
            result = self.evaluate(candidate, context=self.context)
        for key, value in result.to_dict().items():
            trial.set_user_attr(key, value)
        if self.set_constraint:
            trial.set_constraint("latency_over_budget_ms", result.latency_ms - self.context.budget_ms)
        return result.values


def run_study(study: "optuna.Study", *, space: "SearchSpace", context: SearchContext, run_id: str,
              n_trials: int, timeout_s: float | None = None, sample_kwargs: dict[str, Any] | None = None,
              evaluate: Callable[..., TrialResult] = evaluate_candidate,
              on_trial: Callable[["optuna.trial.FrozenTrial"], None] | None = None) -> StudyOutcome:
    """Run up to ``n_trials`` trials of this run (fewer if ``timeout_s`` runs out).

    A trial that raises ``ValueError``, ``RuntimeError`` or ``FloatingPointError`` (a diverging training)
    is recorded as FAIL, with Optuna's warning naming the error, and does not count as finished.
    Trials of ``run_id`` already finished in the study count towards ``n_trials`` (that is how
    ``--resume`` continues); its trials left RUNNING by a killed process are marked FAIL first.
    ``on_trial(frozen_trial)`` is called after every finished trial (the progress bar). Ctrl-C stops
    after failing the running trial and returns with ``interrupted=True``.
    """
    import optuna
    from optuna.trial import TrialState

    start = time.perf_counter()
    stale = fail_stale_trials(study, run_id, unclaimed_before=datetime.datetime.now())
    if stale:
        logger.info("marked %d trial(s) left running by an interrupted run as failed", stale)
    done = len(owned_trials(study, run_id, states=(TrialState.COMPLETE,)))
    remaining = max(0, n_trials - done)
    ctrl_c = _CtrlC(study)
    objective = _Objective(space=space, context=context, run_id=run_id,
                           set_constraint=not getattr(study.sampler, "_constraints_func", None),
                           sample_kwargs=dict(sample_kwargs or {}), evaluate=evaluate, ctrl_c=ctrl_c)

    def report_failure(_study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> None:
        if trial.state == TrialState.FAIL:
            logger.warning("trial %d failed and is not counted (%s)", trial.number,
                           trial.system_attrs.get("fail_reason", "see the study"))

    callbacks: list[Callable[..., None]] = [report_failure]
    if on_trial is not None:
        callbacks.append(lambda _study, trial: on_trial(trial))
    finished_before = done
    interrupted = False
    if remaining:
        # Optuna logs a failed trial with its traceback (a Ctrl-C too): this run reports failures in one line
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            # a trial whose training diverges (NaN) or fails is recorded as FAIL and the study goes on
            with ctrl_c.installed():
                study.optimize(objective, n_trials=remaining, timeout=timeout_s, callbacks=callbacks,
                               gc_after_trial=False, catch=(ValueError, RuntimeError, FloatingPointError))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            optuna.logging.set_verbosity(verbosity)
        interrupted = interrupted or ctrl_c.requested
    done = len(owned_trials(study, run_id, states=(TrialState.COMPLETE,)))
    return StudyOutcome(finished=done - finished_before, interrupted=interrupted,
                        seconds=time.perf_counter() - start)


def best_feasible_accuracy(trials: Sequence["optuna.trial.FrozenTrial"]) -> float | None:
    """The best proxy accuracy among trained, feasible trials, or None."""
    accs = [t.user_attrs.get("accuracy") for t in trials
            if t.user_attrs.get("trained") and t.user_attrs.get("feasible")]
    accs = [a for a in accs if isinstance(a, (int, float)) and math.isfinite(a)]
    return max(accs) if accs else None
