"""The search's parts on their own: objective, constraint, Pareto front, fastest candidate, data, command line."""

from __future__ import annotations

import types

import numpy as np
import pytest

from spaces import get_space, list_spaces


class MacsPredictor:
    """A stand-in latency model: 0.01 ms plus 1 ms per million MACs (deterministic, monotone in size)."""

    def predict(self, kernels, *, genes=None):
        return float(self.predict_many([kernels])[0])

    def predict_many(self, kernel_lists, *, genes=None):
        return np.array([0.01 + 1e-6 * sum(k.macs for k in kernels) for kernels in kernel_lists])


class ForbiddenEvaluator:
    def __call__(self, model, module_bits):
        raise AssertionError("an over-budget candidate must never be trained")


class CountingEvaluator:
    def __init__(self):
        self.calls = []

    def __call__(self, model, module_bits):
        self.calls.append(dict(module_bits))
        return 0.5


def _space(name="mobilenet"):
    return get_space(name, num_classes=10, input_size=16, in_channels=1)


def test_over_budget_candidate_is_recorded_with_its_latency_and_never_trained():
    from search import SearchContext, evaluate_candidate

    space = _space()
    cand = space.sample(np.random.default_rng(0))
    latency = MacsPredictor().predict_many([_Bound(cand, space)])[0]
    ctx = SearchContext(space=space, predictor=MacsPredictor(), budget_ms=latency / 2, evaluator=ForbiddenEvaluator())
    result = evaluate_candidate(cand, context=ctx)
    assert not result.feasible and not result.trained
    assert result.latency_ms == pytest.approx(latency, rel=1e-12)
    assert result.accuracy == 0.0 and result.size_bytes == space.stats(cand).size_bytes

    counting = CountingEvaluator()
    ctx = SearchContext(space=space, predictor=MacsPredictor(), budget_ms=latency * 2, evaluator=counting)
    result = evaluate_candidate(cand, context=ctx)
    assert result.feasible and result.trained and result.accuracy == 0.5
    assert counting.calls == [space.module_bits(cand)]
    assert result.values == (0.5, pytest.approx(latency, rel=1e-12), float(space.stats(cand).size_bytes))


class TrainingEvaluator:
    """Keeps the model it 'trained' (here: the model it was given, weights zeroed but one row)."""

    def __call__(self, model, module_bits):
        import torch

        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        self.last_model = model
        return 0.5


def _prune_space():
    from tests.spaces.compression_nets import residual_teacher

    return get_space("prune", teacher=residual_teacher(in_channels=1), in_channels=1, input_size=16)


def test_size_objective_dense_or_compressed():
    """The trial records both sizes; the objective is the one asked for; compressed needs no training."""
    from search import SearchContext, evaluate_candidate

    space = _prune_space()
    cand = space.candidate(bits=[4] * len(space.layers(space.candidate())))
    latency = float(MacsPredictor().predict_many([space.kernels(cand)])[0])
    dense = space.stats(cand).size_bytes
    inherited = space.compressed_size_bytes(cand)
    # a real file's size (its JSON header included: on a net this small it outweighs what sharing saves)
    assert inherited > 0 and inherited != dense

    # over budget, never trained: the compressed size of the inherited weights is still the objective
    ctx = SearchContext(space=space, predictor=MacsPredictor(), budget_ms=latency / 2,
                        evaluator=ForbiddenEvaluator(), size="compressed")
    result = evaluate_candidate(cand, context=ctx)
    assert not result.trained and result.size_bytes == dense
    assert result.compressed_size_bytes == inherited and result.values[2] == float(inherited)

    # dense objective, trained: the compressed size is that of the model the proxy trained (all zeros here)
    ctx = SearchContext(space=space, predictor=MacsPredictor(), budget_ms=latency * 2, evaluator=TrainingEvaluator())
    result = evaluate_candidate(cand, context=ctx)
    assert result.values[2] == float(dense)
    assert result.compressed_size_bytes is not None and result.compressed_size_bytes < inherited
    with pytest.raises(ValueError, match="size='huge' is not allowed; allowed: dense, compressed"):
        SearchContext(space=space, predictor=MacsPredictor(), budget_ms=1.0, evaluator=ForbiddenEvaluator(), size="huge")


def _Bound(cand, space):
    return space.kernels(cand)


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), float("inf")])
def test_context_refuses_a_bad_budget(budget):
    from search import SearchContext

    with pytest.raises(ValueError, match="budget_ms"):
        SearchContext(space=_space(), predictor=MacsPredictor(), budget_ms=budget, evaluator=CountingEvaluator())


def test_budget_constraint_reads_the_predicted_latency():
    import optuna

    from search._objective import BudgetConstraint

    trial = optuna.trial.create_trial(values=[0.9, 3.0, 100.0], user_attrs={"latency_ms": 3.0})
    assert BudgetConstraint(2.0)(trial) == [pytest.approx(1.0)]
    assert BudgetConstraint(5.0)(trial) == [pytest.approx(-2.0)]


def _trial(number, acc, lat, size, feasible, trained=True):
    import optuna

    t = optuna.trial.create_trial(values=[acc, lat, size], user_attrs={
        "feasible": feasible, "trained": trained, "candidate": {"space": "x", "genes": {"n": number}}})
    t.number = number
    return t


def test_pareto_front_and_selection():
    from search._pareto import pareto_front

    trials = [
        _trial(0, 0.90, 5.0, 1000, True),
        _trial(1, 0.80, 4.0, 900, True),
        _trial(2, 0.85, 6.0, 2000, True),    # dominated by 0
        _trial(3, 0.00, 30.0, 500, False, trained=False),  # smallest: on the front though infeasible
        _trial(4, 0.95, 8.0, 3000, True),
        _trial(5, 0.00, 40.0, 5000, False, trained=False),  # dominated by everything
    ]
    front = pareto_front(trials, budget_ms=10.0)
    assert [e.trial for e in front.entries] == [1, 0, 4, 3]  # sorted by latency
    assert front.selected is not None and front.selected.trial == 4
    assert front.n_trials == 6 and front.n_feasible == 4
    untrained = next(e for e in front.entries if e.trial == 3)
    assert untrained.accuracy is None and not untrained.feasible


def test_selection_by_measured_latency_skips_entries_measured_over_budget():
    from search._pareto import pareto_front, select

    trials = [
        _trial(0, 0.90, 5.0, 1000, True),
        _trial(1, 0.80, 4.0, 900, True),
        _trial(3, 0.00, 30.0, 500, False, trained=False),
        _trial(4, 0.95, 8.0, 3000, True),
    ]
    front = pareto_front(trials, budget_ms=10.0)
    measured = {0: 9.0, 1: 3.5, 3: 25.0, 4: 14.0}  # trial 4 is predicted at 8 ms, measured over the budget
    assert front.selected.trial == 4  # on predictions
    for e in front.entries:
        e.measured_latency_ms = measured[e.trial]
    assert select(front).trial == 0 and front.selected.trial == 0 and "measured 9.000 ms" in front.selection_reason
    front.entries[1].measured_latency_ms = 10.5  # trial 0 over too: the next most accurate
    assert select(front).trial == 1
    for e in front.entries:
        e.measured_latency_ms = 99.0
    assert select(front) is None and front.selected is None  # nothing within the budget: nothing ships
    assert "within the 10 ms budget" in front.selection_reason


def test_selection_never_ships_a_model_slower_than_the_teacher():
    from search._pareto import ParetoEntry, pareto_front, select

    trials = [_trial(0, 0.90, 5.0, 1000, True), _trial(1, 0.80, 4.0, 900, True), _trial(4, 0.95, 8.0, 3000, True)]
    teacher = ParetoEntry(trial=None, candidate={"teacher": "builtin"}, accuracy=0.97, latency_ms=6.0,
                          size_bytes=5000, feasible=True)
    front = pareto_front(trials, budget_ms=10.0, teacher=teacher)
    assert front.selected.trial == 0  # 4 is more accurate but predicted slower than the teacher
    assert "faster than the teacher (predicted 6.000 ms)" in front.selection_reason
    teacher.measured_latency_ms = 3.0
    for e, m in zip(front.entries, (3.9, 4.5, 7.0)):  # sorted by predicted latency: trials 1, 0, 4
        e.measured_latency_ms = m
    assert select(front) is None and "slower than the teacher" in front.selection_reason
    teacher.measured_latency_ms = 4.0
    assert select(front).trial == 1


def test_trials_the_front_left_out_are_measured_when_no_front_entry_beats_the_teacher():
    from search._pareto import ParetoEntry, left_out, pareto_front, select, widen

    # trials 0, 1 and 2 tie at the predictor's floor (1 ms): 2, the most accurate and smallest, dominates 0 and 1
    trials = [_trial(0, 0.80, 1.0, 900, True), _trial(1, 0.82, 1.0, 950, True), _trial(2, 0.90, 1.0, 800, True),
              _trial(3, 0.70, 2.0, 700, True), _trial(4, 0.00, 30.0, 600, False, trained=False),
              _trial(5, 0.85, 3.0, 2000, True), _trial(6, 0.60, 1.5, 1000, True)]
    teacher = ParetoEntry(trial=None, candidate={"teacher": "builtin"}, accuracy=0.95, latency_ms=5.0,
                          size_bytes=5000, feasible=True)
    front = pareto_front(trials, budget_ms=10.0, teacher=teacher)
    assert [e.trial for e in front.entries] == [2, 3, 4]
    teacher.measured_latency_ms = 4.0
    for e, m in zip(front.entries, (4.5, 6.0, 40.0)):  # the floor hid how far apart the tied trials run
        e.measured_latency_ms = m
    assert select(front) is None
    assert [e.trial for e in left_out(front, trials, limit=1)] == [5, 0]  # the most accurate, the fastest predicted
    assert [e.trial for e in left_out(front, trials, limit=8)] == [5, 1, 0, 6]  # untrained 4 is on the front
    extra = left_out(front, trials, limit=2)
    for e, m in zip(extra, (4.2, 5.0, 2.5)):
        e.measured_latency_ms = m
    assert widen(front, extra).trial == 0 and "measured 2.500 ms" in front.selection_reason
    assert [e.trial for e in front.entries] == [0, 5, 2, 3, 4]  # 1, measured, is dominated by 2


def test_fastest_tied_ships_the_fastest_entry_the_validation_split_cannot_tell_from_the_best():
    from search._pareto import accuracy_margin, pareto_front, select

    # 359 validation images: at 92 % the 5 % margin is about 4 points
    assert accuracy_margin(0.92, 0.92, 359) == pytest.approx(1.96 * (2 * 0.92 * 0.08 / 359) ** 0.5)
    trials = [_trial(0, 0.925, 8.0, 3000, True), _trial(1, 0.905, 2.0, 900, True), _trial(2, 0.86, 1.0, 500, True)]
    front = pareto_front(trials, budget_ms=10.0, n_val=359)
    assert front.selected.trial == 1  # 2 points below the best: within the margin; 6.5 points: not
    assert "cannot tell apart from the most accurate one's (trial 0, 92.50%" in front.selection_reason
    front.n_val = 100_000  # a validation split large enough to resolve 2 points: the most accurate ships
    assert select(front).trial == 0 and "no faster entry's proxy accuracy is within" in front.selection_reason
    front.n_val, front.selection = 359, "most-accurate"
    assert select(front).trial == 0 and front.selection_reason.startswith("the most accurate front entry")
    front.selection = "fastest"
    with pytest.raises(ValueError, match="selection='fastest' is not allowed; allowed: fastest-tied, most-accurate"):
        select(front)


def test_no_feasible_trial_selects_nothing():
    from search._pareto import pareto_front

    front = pareto_front([_trial(0, 0.0, 30.0, 500, False, trained=False)], budget_ms=10.0)
    assert front.selected is None and [e.trial for e in front.entries] == [0]


@pytest.mark.parametrize("name", [n for n in list_spaces() if n != "prune"])
def test_fastest_candidate_beats_random_sampling(name):
    from search._device import fastest_candidate

    space = _space(name)
    pred = MacsPredictor()

    def predict(cands):
        return pred.predict_many([_Bound(c, space) for c in cands])

    cand, lat, params = fastest_candidate(space, predict, seed=0)
    rng = np.random.default_rng(1)
    sampled = predict([space.sample(rng) for _ in range(200)])
    assert lat <= float(sampled.min()) + 1e-12
    assert lat == pytest.approx(float(predict([cand])[0]), rel=1e-12)
    import optuna

    assert space.sample(optuna.trial.FixedTrial(params)) == cand  # enqueue_trial(params) replays it


@pytest.mark.parametrize("name", ["mobilenet", "prune"])
def test_uniform_starts_sweep_the_uniform_compressions_that_meet_the_budget(name):
    import optuna

    from search._device import start_count, uniform_starts

    space = _space(name)
    default = space.candidate()

    def predict(cands):  # a device where narrow widths halve the time and pruning removes it linearly
        return np.array([(1.0 - max(c.prune_ratios)) * (0.5 if min(c.bits) < 32 else 1.0) for c in cands])

    def summary(starts):
        return [(max(c.prune_ratios), min(c.bits)) for c, _, _ in starts]

    starts = uniform_starts(space, predict, budget_ms=0.301, bits=(8, 32), count=4)
    # int8 meets the budget from ratio 0.4 to 0.9 (11 ratios): 4 evenly spaced, the budget's end and the fast end
    # first, then the middles; no float start (int8 is the narrowest width)
    assert summary(starts) == [(0.4, 8), (0.9, 8), (0.55, 8), (0.75, 8)]
    for cand, ms, params in starts:
        layers = space.layers(cand)
        assert dict(cand.genes) == dict(default.genes)  # the default architecture (prune space: the teacher)
        assert set(cand.prune_ratios) == {max(cand.prune_ratios), 0.0} and set(cand.bits) <= {min(cand.bits), 32}
        assert all(r == 0.0 for r, layer in zip(cand.prune_ratios, layers) if not layer.prunable)
        assert ms == pytest.approx(float(predict([cand])[0])) and ms <= 0.301
        study = optuna.create_study()
        study.enqueue_trial(params)  # what search.run does: the enqueued trial draws exactly this candidate
        assert space.sample(study.ask(), bits=(8, 32)).to_json() == cand.to_json()
    # a width below 8 bits: the float hedge at the budget comes second, within the count
    assert summary(uniform_starts(space, predict, budget_ms=0.301, bits=(4, 8, 32), count=4)) == \
        [(0.4, 4), (0.7, 32), (0.9, 4), (0.55, 4)]
    # more starts asked than ratios fit: every fitting ratio once
    assert sorted(summary(uniform_starts(space, predict, budget_ms=0.301, bits=(8, 32), count=50))) == \
        [(round(0.4 + 0.05 * k, 6), 8) for k in range(11)]
    # bits not searched: 32 only; pruning not searched: ratio 0 only, which this budget does not admit
    assert summary(uniform_starts(space, predict, budget_ms=0.301, search=("arch", "prune"), count=2)) == [(0.7, 32), (0.9, 32)]
    assert uniform_starts(space, predict, budget_ms=0.301, search=("arch", "bits"), bits=(8, 32)) == []
    # a budget that does not bind: the sweep spans the whole prune grid
    assert summary(uniform_starts(space, predict, budget_ms=3.0, bits=(8, 32), count=4)) == [(0.0, 8), (0.9, 8), (0.3, 8), (0.6, 8)]
    assert uniform_starts(space, predict, budget_ms=0.301, bits=(8, 32), count=0) == []
    assert [start_count(t) for t in (1, 2, 6, 20, 40)] == [1, 1, 3, 10, 20]


@pytest.mark.parametrize("name", ["mobilenet", "shufflenet", "fbnet"])
def test_uniform_fast_ends_are_the_most_pruned_default_at_each_width(name):
    import optuna

    from search._device import uniform_fast_ends
    from spaces import PRUNE_RATIO_MAX

    space = _space(name)
    default = space.candidate()
    ends = uniform_fast_ends(space, bits=(4, 8, 32))
    assert [min(c.bits) for c, _ in ends] == [4, 8, 32]
    for cand, params in ends:
        layers = space.layers(cand)
        assert dict(cand.genes) == dict(default.genes)
        assert [r for r, layer in zip(cand.prune_ratios, layers) if layer.prunable] == \
            [PRUNE_RATIO_MAX] * sum(layer.prunable for layer in layers)
        study = optuna.create_study()
        study.enqueue_trial(params)  # the trial 0 the search enqueues draws exactly this candidate
        assert space.sample(study.ask(), bits=(4, 8, 32)).to_json() == cand.to_json()
    # bits not searched: 32 only; pruning not searched: unpruned
    assert [min(c.bits) for c, _ in uniform_fast_ends(space, search=("arch", "prune"))] == [32]
    assert all(set(c.prune_ratios) == {0.0} for c, _ in uniform_fast_ends(space, search=("arch", "bits"), bits=(8, 32)))


def _refusing_job(space, measured_ms, echoed):
    """A search job at its refusal step, with a fake side-by-side timing: ``measured_ms`` for the uniform
    candidates it is given, then the teacher's 1.0 ms."""
    from search._run import _Job

    job = _Job.__new__(_Job)
    job.space, job.bits, job.echo = space, (8, 32), echoed.append
    job.opts = types.SimpleNamespace(search=("arch", "prune", "bits"), genes=())
    job.fastest = (space.candidate(), 9.0, {})
    job._predict = lambda cands: np.full(len(cands), 0.5)
    job.timed = []

    def measure(cands):
        job.timed.append([min(c.bits) for c in cands])
        return [measured_ms[min(c.bits)] for c in cands] + [1.0]

    job._measure_against_teacher = measure
    return job


def test_a_space_whose_predicted_fastest_measures_slow_is_refused_only_after_its_uniform_ends():
    """The refusal's false negative: a short profile's predictor can take a candidate for the fastest that
    measures slower than the teacher while the space's most pruned uniform compression is much faster."""
    space = _space("shufflenet")
    echoed: list[str] = []
    job = _refusing_job(space, {8: 1.4, 32: 0.35}, echoed)
    slower, basis = job._try_uniform_fast_ends("its fastest candidate measures 1.2 ms")
    assert not slower and job.timed == [[8, 32]]
    cand, ms, params = job.fastest
    assert min(cand.bits) == 32 and max(cand.prune_ratios) > 0 and ms == 0.5 and params
    assert "0.350 ms" in echoed[-1] and "the search starts from it" in echoed[-1]
    # every uniform end slower too: refused, saying what was measured
    job = _refusing_job(space, {8: 1.4, 32: 1.1}, echoed)
    slower, basis = job._try_uniform_fast_ends("its fastest candidate measures 1.2 ms")
    assert slower and "most pruned uniform compression measures 1.100 ms, the teacher 1.000 ms" in basis
    assert job.fastest[1] == 9.0  # unchanged


def test_digits_splits_are_deterministic_and_disjoint():
    from search._data import DIGITS_SIZE, load_data

    a, b, c = load_data("digits", seed=0), load_data("digits", seed=0), load_data("digits", seed=1)
    assert a.input_shape == (1, DIGITS_SIZE, DIGITS_SIZE) and a.num_classes == 10
    assert (len(a.train), len(a.val), len(a.test)) == (1079, 359, 359)
    assert bool((a.train.x == b.train.x).all()) and not bool((a.train.x == c.train.x).all())
    rows = {tuple(r.flatten().tolist()) for r in a.test.x[:50]}
    assert not rows & {tuple(r.flatten().tolist()) for r in a.train.x}
    assert abs(float(a.train.x.mean())) < 1e-4 and float(a.train.x.std()) == pytest.approx(1.0, abs=1e-3)


def test_imagefolder(tmp_path):
    from PIL import Image

    from search._data import IMAGE_SIZE, load_data

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 9, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_data(f"imagefolder:{tmp_path}", seed=0)
    assert data.num_classes == 2 and data.input_shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert (len(data.train), len(data.val), len(data.test)) == (14, 3, 3)


def test_reproducing_command_parses_back_to_the_same_options():
    from search import SearchOptions, command_line
    from search._cli import build_parser

    cfg = {**SearchOptions.defaults(), "budget_ms": 7.5, "space": "fbnet", "trials": 12, "search": ("arch", "bits"),
           "sampler": "nsga2", "download": True}
    cmd = command_line(cfg).split()
    assert cmd[:3] == ["python", "-m", "search"]
    args = vars(build_parser().parse_args(cmd[3:]))
    assert (args["budget_ms"], args["space"], args["trials"], args["search"], args["sampler"], args["download"]) == \
        (7.5, "fbnet", 12, ("arch", "bits"), "nsga2", True)
    assert args["data"] is None and args["seed"] is None  # defaults are left out


def test_open_study_retries_when_another_process_creates_the_tables_first(monkeypatch, tmp_path):
    import optuna
    from sqlalchemy.exc import IntegrityError

    from search._study import open_study

    real = optuna.create_study
    calls = []

    def racing(**kwargs):
        calls.append(1)
        if len(calls) == 1:  # what the loser of two processes creating one new PostgreSQL schema sees
            raise IntegrityError("CREATE TABLE studies", {}, Exception('duplicate key value violates unique constraint "pg_type_typname_nsp_index"'))
        return real(**kwargs)

    monkeypatch.setattr(optuna, "create_study", racing)
    study = open_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="race", sampler=optuna.samplers.RandomSampler(seed=0))
    assert len(calls) == 2 and study.study_name == "race"


def test_open_study_reports_other_storage_errors_at_once(monkeypatch):
    import optuna

    from search import InputError
    from search._study import open_study

    calls = []

    def broken(**kwargs):
        calls.append(1)
        raise RuntimeError("could not connect to server")

    monkeypatch.setattr(optuna, "create_study", broken)
    with pytest.raises(InputError, match="cannot be opened: could not connect"):
        open_study(storage="postgresql://nowhere/db", study_name="x", sampler=optuna.samplers.RandomSampler(seed=0))
    assert len(calls) == 1


def test_a_large_accuracy_loss_says_what_to_try():
    from search._report import accuracy_hint

    assert accuracy_hint("mobilenet", -0.8) is None and accuracy_hint("prune", -4.9) is None
    hint = accuracy_hint("mobilenet", -61.2)
    assert hint.startswith("The model lost 61.2 points") and "--space prune" in hint
    assert "--space prune" not in accuracy_hint("prune", -12.0) and "--final-epochs" in accuracy_hint("prune", -12.0)


def test_opt_in_genes_reach_every_way_the_search_draws_candidates():
    """--genes crelu: the fastest candidate and the uniform starts draw the gene as the trials do (a start
    enqueued without it would leave the gene to the sampler, and not be the candidate it was chosen as)."""
    import optuna

    from search._device import fastest_candidate, uniform_starts

    space = _space("mobilenet")

    def predict(cands):
        return np.array([1.0 - 0.1 * c.genes.get("crelu", 0) - 0.5 * max(c.prune_ratios) for c in cands])

    cand, _, params = fastest_candidate(space, predict, genes=("crelu",), seed=0)
    assert params["crelu"] == cand.genes.get("crelu", 0) == 3  # the gene is walked like any other
    starts = uniform_starts(space, predict, budget_ms=0.8, genes=("crelu",), bits=(8, 32))
    assert starts and all("crelu" in p for _, _, p in starts)
    study = optuna.create_study()
    study.enqueue_trial(starts[0][2])
    assert space.sample(study.ask(), genes=("crelu",), bits=(8, 32)).to_json() == starts[0][0].to_json()
    with pytest.raises(ValueError, match="genes"):
        space.sample(np.random.default_rng(0), genes=("swish",))


def test_a_sqlite_study_waits_for_a_reader_longer_than_sqlite_s_five_seconds(tmp_path):
    """A trial's commit waits while another connection holds the file (the CI's Ctrl-C test polls the run's
    study.db; under load one poll outlasted SQLite's default 5-second busy timeout: "database is locked")."""
    import sqlite3
    import threading
    import time

    import optuna

    from search._study import open_study

    db = tmp_path / "s.db"
    study = open_study(storage=f"sqlite:///{db}", study_name="busy", sampler=optuna.samplers.RandomSampler(seed=0))
    holder = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(6.5, holder.execute, args=("COMMIT",))
    release.start()
    try:
        start = time.monotonic()
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0, 2.0), n_trials=1)
        waited = time.monotonic() - start
    finally:
        release.join()
        holder.close()
    assert waited > 6.0 and [t.state.name for t in study.trials] == ["COMPLETE"]


def test_seed_study_enqueues_the_fastest_where_tight_then_the_starts_within_the_trials():
    import optuna

    from search import TIGHT_BUDGET, seed_study

    space = _space("mobilenet")

    def predict(cands):
        return np.array([(1.0 - max(c.prune_ratios)) * (0.5 if min(c.bits) < 32 else 1.0) for c in cands])

    fastest = (space.candidate(), 0.05, {"marker": 1})  # only its parameters are enqueued

    def waiting(study):
        return [t.system_attrs["fixed_params"] for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))]

    study = optuna.create_study()
    starts = seed_study(study, space, predict, budget_ms=0.301, trials=6, fastest=fastest, bits=(8, 32))
    assert 0.301 > TIGHT_BUDGET * 0.05 and len(starts) == 3  # not tight: no fastest; start_count(6) = 3 starts
    assert waiting(study) == [p for _, _, p in starts]
    study = optuna.create_study()
    starts = seed_study(study, space, predict, budget_ms=0.301, trials=3, fastest=fastest, held=True, bits=(8, 32))
    assert waiting(study)[0] == {"marker": 1} and len(starts) == 1  # held: fastest first; start_count(3) = 1
    study = optuna.create_study()
    assert seed_study(study, space, predict, budget_ms=0.09, trials=40, fastest=fastest, starts=False) == []
    assert waiting(study) == [{"marker": 1}]  # tight (0.09 < 2 x 0.05), no starts asked


@pytest.mark.parametrize("where", ["evaluation", "storage_call", "gc_callback"])
def test_ctrl_c_fails_the_running_trial_and_never_breaks_into_a_storage_call(tmp_path, monkeypatch, where):
    """Ctrl-C while a candidate trains interrupts at once; Ctrl-C inside one of Optuna's storage calls lets the
    call finish (a KeyboardInterrupt there can leave SQLite locked: the run then died with "database is
    locked") and fails the trial at the start of its evaluation. Either way: one trial complete, one failed,
    none left running, the study reports itself interrupted, Ctrl-C is Python's again afterwards. A Ctrl-C that
    lands in a weak-reference callback (Python swallows it there) lets the trial finish, stops the study after it
    and is not printed; other exceptions swallowed there still reach the previous ``sys.unraisablehook``."""
    import os
    import signal
    import sys
    import time
    import weakref

    import optuna
    from optuna.trial import TrialState

    from search import SearchContext
    from search._objective import TrialResult
    from search._study import RUN_ATTR, open_study, run_study

    study = open_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s",
                       sampler=optuna.samplers.RandomSampler(seed=0))
    ctx = SearchContext(space=_space(), predictor=MacsPredictor(), budget_ms=1e9, evaluator=CountingEvaluator())
    evaluations, storage = [], {"calls": 0, "returned_after_signal": False}

    def evaluate(candidate, *, context):
        evaluations.append(candidate)
        if where == "evaluation" and len(evaluations) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted here
            raise AssertionError("Ctrl-C during an evaluation did not interrupt it")
        if where == "gc_callback" and len(evaluations) == 2:
            class Held:
                pass

            def interrupted_inside(_ref):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler runs between these bytecodes, inside the callback
                    pass

            def failing(_ref):
                raise ValueError("not a Ctrl-C")

            for callback in (interrupted_inside, failing):
                held = Held()
                ref = weakref.ref(held, callback)  # noqa: F841 (kept alive until the object goes)
                del held  # the callback runs now; what it raises is swallowed by Python
        return TrialResult(accuracy=0.5, latency_ms=1.0, size_bytes=10, feasible=True, trained=True, seconds=0.0)

    real = study._storage.set_trial_user_attr

    def set_user_attr(trial_id, key, value):  # the run's id is the first storage call of a trial's objective
        storage["calls"] += key == RUN_ATTR
        if where == "storage_call" and key == RUN_ATTR and storage["calls"] == 2:  # the second trial's
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between these bytecodes
                pass
            real(trial_id, key, value)
            storage["returned_after_signal"] = True
            return
        real(trial_id, key, value)

    unraisable = []  # what reaches the hook in place before the run (Python's prints "Exception ignored in")

    def recorder(u):
        unraisable.append(type(u.exc_value).__name__)

    monkeypatch.setattr(sys, "unraisablehook", recorder)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whoever runs pytest
    try:
        study._storage.set_trial_user_attr = set_user_attr
        outcome = run_study(study, space=ctx.space, context=ctx, run_id="r", n_trials=5, evaluate=evaluate)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert sys.unraisablehook is recorder  # given back
    if where == "gc_callback":  # the trial finished, the study stopped after it, only the ValueError went on
        assert outcome.interrupted and outcome.finished == 2 and len(evaluations) == 2
        assert states == [TrialState.COMPLETE, TrialState.COMPLETE]
        assert unraisable == ["ValueError"]
        return
    assert outcome.interrupted and outcome.finished == 1
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert len(evaluations) == (2 if where == "evaluation" else 1)
    if where == "storage_call":
        assert storage["returned_after_signal"]


def test_float_variant_is_the_same_architecture_at_32_bits():
    from search import fastest_candidate
    from search._device import float_variant

    space = _space()
    predict = lambda cands: MacsPredictor().predict_many([space.kernels(c) for c in cands])  # noqa: E731
    cand, _, params = fastest_candidate(space, predict, search=("arch", "bits"), bits=(8, 32))
    if all(b == 32 for b in cand.bits):  # the MACs stand-in does not see bits: make one layer narrower
        params = {**params, next(k for k in params if k.startswith("bits_")): 8}
    variant, vparams = float_variant(space, params, search=("arch", "bits"), bits=(8, 32))
    assert all(b == 32 for b in variant.bits) and len(variant.bits) == len(cand.bits)
    assert {k: v for k, v in vparams.items() if not k.startswith("bits_")} == \
        {k: v for k, v in params.items() if not k.startswith("bits_")}
    assert [k.macs for k in space.kernels(variant)] == [k.macs for k in space.kernels(cand)]
    assert float_variant(space, params, search=("arch", "bits"), bits=(4, 8)) is None  # 32 not allowed
    assert float_variant(space, vparams, search=("arch", "bits"), bits=(8, 32)) is None  # at 32 already


@pytest.mark.parametrize("with_cutoff", [True, False])
def test_a_trial_asked_but_never_claimed_by_a_killed_run_is_failed(with_cutoff: bool) -> None:
    """A trial is asked, then given its run id by a second write: a process killed between the two leaves a
    RUNNING trial no run owns. Resuming fails it when it started a grace period before the resuming process did,
    and leaves another run's trials and a trial asked since or within the grace (a live process about to claim it)
    running."""
    import datetime
    import time

    import optuna
    from optuna.trial import TrialState

    from search._study import RUN_ATTR, fail_stale_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    orphan = study.ask()
    mine = study.ask()
    mine.set_user_attr(RUN_ATTR, "run-a")
    other = study.ask()
    other.set_user_attr(RUN_ATTR, "run-b")
    time.sleep(0.01)
    cutoff = datetime.datetime.now()
    time.sleep(0.01)
    fresh = study.ask()
    # within the grace, an unclaimed trial may be a live process's, its sampler still drawing it: left running
    assert fail_stale_trials(study, "run-c", unclaimed_before=cutoff) == 0
    assert study.get_trials(deepcopy=False)[orphan.number].state == TrialState.RUNNING
    failed = fail_stale_trials(study, "run-a", unclaimed_before=cutoff if with_cutoff else None, grace_s=0)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert failed == (2 if with_cutoff else 1)
    assert states[mine.number] == TrialState.FAIL
    assert states[orphan.number] == (TrialState.FAIL if with_cutoff else TrialState.RUNNING)
    assert states[other.number] == TrialState.RUNNING
    assert states[fresh.number] == TrialState.RUNNING
