"""`CompiledLatency` (``space.latency_evaluator``): the slow path's milliseconds, for every space and predictor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from latency_models import BITS, LatencyPredictor, LatencyTable
from latency_models._table import device_info
from spaces import Candidate, CompiledLatency, FBNetSpace, MobileNetSpace, ShuffleNetSpace, get_space, list_spaces

#: Options that keep each built-in space small and quick (the prune space exports its teacher per structure).
OPTIONS = {"prune": {"input_size": 16}, "mobilenet": {"input_size": 96}, "shufflenet": {"input_size": 96}}


def _space(name):
    return get_space(name, **OPTIONS.get(name, {}))


def _physical(seed, *, gene_ms=None, prior=(), weights=()):
    """A model-rows predictor with every term: transitions between all bits, gene terms, a floor."""
    rng = np.random.default_rng(seed)
    trans = {f"{a}>{b}{u}": float(rng.uniform(-0.01, 0.05)) for a in BITS for b in BITS if a != b for u in ("", ":mel")}
    return LatencyPredictor(device={"name": f"d{seed}"}, protocol={}, mode="models",
                            intercept_ms=float(rng.uniform(-0.1, 0.1)), theta0=rng.uniform(0.001, 0.02, 4),
                            transition_ms=trans, gene_ms=gene_ms, gene_mean_ms=0.05 if gene_ms else 0.0,
                            min_model_ms=0.05, prior=prior, prior_weights=weights, own_weight=0.7,
                            blend_intercept_ms=0.02)


def _predictors():
    genes = {"ops[0]=k3_e6": 0.2, "ops[3]=skip": -0.05, "width=0.5": 0.1, "crelu=2": 0.03, "stem_stride=2": 1.0}
    return {
        "physical": _physical(0),
        "genes": _physical(1, gene_ms=genes),
        "blended": _physical(2, prior=[_physical(3, gene_ms=genes), _physical(4)], weights=[0.4, 0.0]),
    }


@pytest.fixture(scope="module")
def fitted():
    """A kernels-mode predictor fitted on kernel rows and mixed-precision model rows of the student spaces."""
    table = LatencyTable(device=device_info(name="synthetic"))
    rng = np.random.default_rng(7)
    seen = set()
    for name in ("fbnet", "mobilenet"):
        space = _space(name)
        for _ in range(12):
            ks = space.kernels(space.sample(rng))
            w = [k for k in ks if k.op in ("conv", "linear")]
            true = 0.05 + sum(1e-5 * k.macs ** 0.9 + 0.002 for k in ks) + 0.01 * sum(
                a.bits != b.bits for a, b in zip(w, w[1:]))
            table.add_model(ks, true, source=name)
            for k in ks[::4]:
                if k not in seen:
                    seen.add(k)
                    table.add_kernel(k, 1e-5 * k.macs ** 0.9 + 0.004)
    pred = LatencyPredictor.fit(table)
    assert pred.mode == "kernels" and pred.transition_ms
    return pred


def _candidates(space, n, seed):
    """Random candidates with mixed bits (1 to 32) and every opt-in gene, their JSON round trips (not yet
    validated by the space) and the default candidate."""
    rng = np.random.default_rng(seed)
    cands = [space.sample(rng, genes=space.OPT_IN_GENES, bits=BITS) for _ in range(n)]
    if space.name == "prune":  # a few structures (each is one ONNX export), many bit and rank settings
        shapes = [c.prune_ratios for c in cands[:3]]
        cands = [space.candidate(**dict(c.genes), prune_ratios=list(shapes[i % 3]), bits=list(c.bits))
                 for i, c in enumerate(cands)]
    return [*cands, *(Candidate.from_json(c.to_json()) for c in cands[:3]), space.candidate()]


def _slow(pred, space, cands, genes):
    return pred.predict_many([space.kernels(c) for c in cands], genes=[c.genes for c in cands] if genes else None)


@pytest.mark.parametrize("name", list_spaces())
def test_compiled_latency_equals_the_kernel_lists(name, fitted):
    space = _space(name)
    cands = _candidates(space, 12 if name == "prune" else 60, seed=1)
    for label, pred in {**_predictors(), "fitted": fitted}.items():
        ev = space.latency_evaluator(pred)
        assert ev.compiled, label
        for genes in (True, False):
            want = _slow(pred, space, cands, genes)
            np.testing.assert_allclose(ev.predict_many(cands, genes=genes), want, rtol=1e-12, err_msg=label)
        # a second batch reuses the memo: new candidates and repeated ones
        more = _candidates(space, 8 if name == "prune" else 30, seed=2) + cands[:5]
        np.testing.assert_allclose(ev.predict_many(more), _slow(pred, space, more, True), rtol=1e-12, err_msg=label)
        for genes in (True, False):
            one = float(_slow(pred, space, cands[:1], genes)[0])
            assert ev.predict(cands[0], genes=genes) == pytest.approx(one, rel=1e-12)
    assert space.latency_evaluator(fitted) is ev
    assert 0 < ev.segments


def test_other_options_of_the_student_spaces_compile_exactly(fitted):
    """Stride-2 stems (max pool), another fbnet setting, odd channel multiples: shapes enter every key."""
    for space in (get_space("fbnet", setting="imagenet", input_size=64, num_classes=10),
                  get_space("mobilenet", input_size=32, channel_multiple=3),
                  get_space("shufflenet", input_size=64, stem_stride=2, channel_multiple=4)):
        cands = _candidates(space, 40, seed=3)
        pred = _predictors()["blended"]
        np.testing.assert_allclose(space.latency_evaluator(pred).predict_many(cands), _slow(pred, space, cands, True),
                                   rtol=1e-12, err_msg=space.name)


class WiderFBNet(FBNetSpace):
    """A user's space that changes how FBNet's plan is made: the segments it inherits no longer describe it."""

    def _block(self, i, op, r, b):
        return super()._block(i, "k5_e6" if op == "k3_e6" else op, r, b)

    def _plan(self, arch, ratios, bits):
        return super()._plan(arch, ratios, bits)


class PartlyCompiledMobileNet(MobileNetSpace):
    """A user's space that compiles only some candidates (its own ``_latency_segments`` declines the rest)."""

    def _latency_segments(self, arch, ratios, bits):
        return None if arch["width"] == 0.5 else super()._latency_segments(arch, ratios, bits)


def test_spaces_that_cannot_be_compiled_take_the_slow_path():
    pred = _predictors()["blended"]
    wide = WiderFBNet()
    cands = _candidates(wide, 20, seed=4)
    ev = CompiledLatency(wide, pred)
    assert not ev.compiled
    np.testing.assert_allclose(ev.predict_many(cands), _slow(pred, wide, cands, True), rtol=1e-12)
    # the same genes in the plain space predict otherwise: the fallback is not the inherited fast path
    plain = FBNetSpace()
    other = plain.latency_evaluator(pred).predict_many([plain.candidate(**dict(c.genes), prune_ratios=list(c.prune_ratios),
                                                                        bits=list(c.bits)) for c in cands])
    assert not np.allclose(other, ev.predict_many(cands))

    partly = PartlyCompiledMobileNet()
    cands = _candidates(partly, 40, seed=5)
    assert {c.genes["width"] for c in cands} >= {0.5, 1.0}
    ev = partly.latency_evaluator(pred)
    assert ev.compiled
    np.testing.assert_allclose(ev.predict_many(cands), _slow(pred, partly, cands, True), rtol=1e-12)

    class Doubling:  # any object with predict_many works, the slow way
        def predict_many(self, lists, *, genes=None):
            return np.array([2.0 * len(ks) for ks in lists])

    ev = get_space("fbnet").latency_evaluator(Doubling())
    assert not ev.compiled
    c = get_space("fbnet").candidate()
    assert ev.predict(c) == 2.0 * len(get_space("fbnet").kernels(c))


def test_bad_candidates_are_refused_as_the_slow_path_refuses_them():
    ev = get_space("fbnet").latency_evaluator(_predictors()["physical"])
    with pytest.raises(ValueError, match="candidate.space"):
        ev.predict_many([get_space("mobilenet").candidate()])
    bad = Candidate("fbnet", {"ops": ["k3_e6"] * 22}, bits=[3] * 25)
    with pytest.raises(ValueError, match="bits"):
        ev.predict_many([bad])
    assert ev.predict_many([]).shape == (0,)


def test_a_failed_summary_leaves_a_consistent_memo(monkeypatch):
    space, pred = get_space("fbnet"), _predictors()["physical"]
    ev = CompiledLatency(space, pred)
    cands = _candidates(space, 10, seed=6)

    def fail(segments):
        raise MemoryError("no room")

    monkeypatch.setattr(ev._seg, "add_many", fail)
    with pytest.raises(MemoryError):
        ev.predict_many(cands)
    np.testing.assert_allclose(ev.predict_many(cands), _slow(pred, space, cands, True), rtol=1e-12)


def test_a_pickled_evaluator_predicts_the_same_in_another_process_without_its_memo() -> None:
    """A space goes to Ray workers by pickle with its evaluators; the memo (tables linked by ``id()``) must
    not travel: the copy starts empty and predicts the same."""
    import pickle

    space, pred = _space("mobilenet"), _physical(0)
    rng = np.random.default_rng(7)
    cands = [space.sample(rng) for _ in range(30)]
    more = [space.sample(rng) for _ in range(30)]
    ev = space.latency_evaluator(pred)
    want = ev.predict_many(cands)
    assert ev.segments > 0
    space2, pred2 = pickle.loads(pickle.dumps((space, pred)))
    copy = space2.latency_evaluator(pred2)
    assert copy is space2.__dict__["_latency_evaluators"][0] and copy.segments == 0  # the cached one, emptied
    np.testing.assert_allclose(copy.predict_many(cands + more), np.concatenate([want, ev.predict_many(more)]),
                               rtol=1e-12)


def _coded(space) -> bool:
    return CompiledLatency(space, _physical(0))._codes_of is not None


#: Options under which the coded spaces' channel arithmetic and spatial sizes differ (odd and unit channel
#: multiples, stride-2 stems, a max pool, larger inputs).
CODE_OPTIONS = ({}, {"channel_multiple": 1}, {"channel_multiple": 3}, {"channel_multiple": 4, "input_size": 64},
                {"input_size": 96, "stem_stride": 2}, {"input_size": 17, "num_classes": 7})
#: fbnet's macro is fixed by its setting (no stem_stride option)
CODE_OPTIONS_OF = {"fbnet": ({}, {"channel_multiple": 1}, {"channel_multiple": 3},
                             {"setting": "imagenet", "input_size": 64, "num_classes": 10},
                             {"input_size": 17, "num_classes": 7})}


@pytest.mark.parametrize("name", list_spaces())
def test_segment_codes_list_exactly_the_candidates_kernels(name):
    """A batch's codes, decoded and concatenated per candidate, are ``space.kernels(candidate)``: the
    numpy channel arithmetic of the batch equals the plan's, kernel for kernel."""
    if not _coded(get_space(name, **OPTIONS.get(name, {}))):
        pytest.skip(f"space {name!r} does not code batches")
    for options in CODE_OPTIONS_OF.get(name, CODE_OPTIONS):
        space = get_space(name, **options)
        cands = _candidates(space, 80, seed=11)
        parts = [space._decode(c) for c in cands]
        codes, lengths = space._segment_codes(*zip(*parts))
        assert codes.dtype == np.int64 and len(lengths) == len(cands) and lengths.sum() == len(codes)
        pos = 0
        for c, n in zip(cands, lengths):
            listed = [k for code in codes[pos:pos + n].tolist() for k in space._code_kernels(code)]
            assert listed == space.kernels(c), (options, c)
            pos += n


@pytest.mark.parametrize("name", list_spaces())
def test_coded_batches_with_known_new_and_repeated_candidates(name, fitted):
    """Batches mixing candidates already predicted, new ones and duplicates within the batch, with and
    without genes, predict the kernel lists' milliseconds; the codes path is the one taken."""
    space = _space(name)
    if not _coded(space):
        pytest.skip(f"space {name!r} does not code batches")
    for label, pred in {**_predictors(), "fitted": fitted}.items():
        ev = CompiledLatency(space, pred)
        assert ev._codes_of is not None
        first = _candidates(space, 40, seed=21)
        np.testing.assert_allclose(ev.predict_many(first), _slow(pred, space, first, True), rtol=1e-12, err_msg=label)
        known = ev._codes._n
        new = _candidates(space, 40, seed=22)
        mixed = [*first[:10], *new, *new[:7], first[3], new[5]]
        for genes in (True, False):
            np.testing.assert_allclose(ev.predict_many(mixed, genes=genes), _slow(pred, space, mixed, genes),
                                       rtol=1e-12, err_msg=label)
        assert ev._codes._n > known
        assert ev.predict(new[0]) == pytest.approx(float(_slow(pred, space, new[:1], True)[0]), rel=1e-12)


def test_a_batch_that_does_not_fit_the_codes_takes_the_keys():
    """A classifier too wide for a code's channel field: the batch is cut by keys instead, as exactly."""
    pred = _predictors()["genes"]
    for name in ("fbnet", "mobilenet", "shufflenet"):
        space = get_space(name, num_classes=20000)
        cands = _candidates(space, 20, seed=31)
        assert space._segment_codes(*zip(*[space._decode(c) for c in cands])) is None
        ev = space.latency_evaluator(pred)
        np.testing.assert_allclose(ev.predict_many(cands), _slow(pred, space, cands, True), rtol=1e-12)
        assert ev._codes._n == 0 and ev.segments > 0


class Int8DepthwiseShuffleNet(ShuffleNetSpace):
    """A user's space that changes a helper the plan and the keys share, not the segment methods: the
    depthwise convolutions of its later units run at 8 bits."""

    def _unit(self, j, branch, k, r, b):
        unit = super()._unit(j, branch, k, r, b)
        pw1, dw, pw2 = unit.branch.children
        return dataclasses.replace(unit, branch=dataclasses.replace(unit.branch, children=(
            pw1, dataclasses.replace(dw, bits=8), pw2)))


def test_a_subclass_is_cut_by_keys_not_by_codes_it_did_not_write():
    assert not _coded(PartlyCompiledMobileNet()) and _coded(MobileNetSpace())
    space, pred = Int8DepthwiseShuffleNet(), _predictors()["physical"]
    ev = space.latency_evaluator(pred)
    assert ev.compiled and ev._codes_of is None
    cands = _candidates(space, 20, seed=32)
    want = _slow(pred, space, cands, True)
    np.testing.assert_allclose(ev.predict_many(cands), want, rtol=1e-12)
    plain = ShuffleNetSpace()  # the same genes predict otherwise there: the subclass's numbers are its own
    same = [plain.candidate(**dict(c.genes), prune_ratios=list(c.prune_ratios), bits=list(c.bits)) for c in cands]
    assert not np.allclose(plain.latency_evaluator(pred).predict_many(same), want)


def test_code_table_finds_every_code_it_holds_and_no_other():
    from spaces._compiled import _CodeTable

    rng = np.random.default_rng(41)
    table, held = _CodeTable(), {}
    for size in (5, 300, 3000, 1, 20000):  # grows past its first sizes; ids are not in code order
        codes = np.unique(rng.integers(0, 1 << 60, size=size * 2))
        codes = np.array([c for c in codes.tolist() if c not in held][:size], dtype=np.int64)
        ids = rng.permutation(len(codes)) + len(held)
        table.add(codes, ids)
        held.update(zip(codes.tolist(), ids.tolist()))
        queries = np.concatenate([np.array(list(held), dtype=np.int64), rng.integers(0, 1 << 60, size=500)])
        want = np.array([held.get(q, -1) for q in queries.tolist()])
        np.testing.assert_array_equal(table.get(queries), want)
    # codes that hash to the same slot probe on, when added together and when looked up
    crowded = _CodeTable()
    pool = rng.integers(0, 1 << 60, size=200_000)
    slots = crowded._slots(pool)
    same = np.unique(pool[slots == np.bincount(slots).argmax()])[:50]
    assert len(same) == 50 and len(set(crowded._slots(same).tolist())) == 1
    crowded.add(same[:30], np.arange(30))
    crowded.add(same[30:], np.arange(30, 50))
    np.testing.assert_array_equal(crowded.get(same[::-1]), np.arange(50)[::-1])
    strangers = np.setdiff1d(pool[slots == crowded._slots(same[:1])[0]], same)[:5]  # the same slot, not held
    assert len(strangers) == 5 and (crowded.get(strangers) == -1).all()


def test_negative_codes_are_refused():
    """-1 marks an empty slot of the code table: a space's negative code must not find a segment."""

    class Negative(MobileNetSpace):
        def _segment_codes(self, arch, prune_ratios, bits):
            codes, lengths = super()._segment_codes(arch, prune_ratios, bits)
            return codes - (1 << 62), lengths

        _code_kernels = MobileNetSpace._code_kernels

    ev = Negative().latency_evaluator(_predictors()["physical"])
    assert ev._codes_of is not None
    with pytest.raises(ValueError, match="non-negative"):
        ev.predict_many([Negative().candidate()])
