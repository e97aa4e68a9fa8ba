"""`SegmentPredictor`: models given as segment ids predict exactly what their concatenated kernels predict."""

from __future__ import annotations

import numpy as np
import pytest

from latency_models import BITS, Kernel, LatencyPredictor, LatencyTable, SegmentPredictor, SegmentSummary
from latency_models._features import physical
from latency_models._table import device_info


def _conv(rng, bits):
    c = int(rng.choice([8, 16, 24]))
    return Kernel("conv", (c, 8, 8), out_channels=int(rng.choice([8, 16])), kernel_size=int(rng.choice([1, 3])),
                  bits=int(bits))


def _model(rng):
    """A random kernel list: weight layers at random bits, element-wise kernels between them."""
    ks = []
    for _ in range(int(rng.integers(0, 9))):
        r = rng.random()
        if r < 0.6:
            ks.append(_conv(rng, rng.choice(BITS)))
        elif r < 0.8:
            ks.append(Kernel("add", (int(rng.choice([8, 16])), 8, 8)))
        else:
            ks.append(Kernel("channel_shuffle", (16, 8, 8), groups=2))
    if rng.random() < 0.7:
        ks += [Kernel("global_avgpool", (16, 8, 8)), Kernel("linear", (16,), out_channels=10,
                                                            bits=int(rng.choice(BITS)))]
    return ks


def _predictor(seed, *, prior=(), weights=()):
    """A predictor with every term: physical contributions, transitions (with their per-element part) between
    every pair of bits, gene terms and a floor that binds for the smallest models."""
    rng = np.random.default_rng(seed)
    trans = {}
    for a in BITS:
        for b in BITS:
            if a != b:
                trans[f"{a}>{b}"] = float(rng.uniform(-0.01, 0.05))
                trans[f"{a}>{b}:mel"] = float(rng.uniform(-0.5, 1.0))
    return LatencyPredictor(
        device={"name": f"d{seed}"}, protocol={}, mode="models", intercept_ms=float(rng.uniform(-0.2, 0.3)),
        theta0=rng.uniform(0.001, 0.05, 4), family_mult={}, lut_ms={}, transition_ms=trans,
        gene_ms={"ops[0]=a": 0.3, "ops[1]=b": -0.1, "width=2": 0.05}, gene_mean_ms=0.07, min_model_ms=0.12,
        prior=prior, prior_weights=weights, own_weight=0.6, blend_intercept_ms=0.01)


def _split(rng, models):
    """Each model cut into random consecutive segments: (segments, ids and lengths per model)."""
    segs, ids, lengths = [], [], []
    for ks in models:
        cuts = sorted(rng.choice(np.arange(1, len(ks)), size=min(len(ks) - 1, int(rng.integers(0, 4))),
                                 replace=False).tolist()) if len(ks) > 1 else []
        parts = [ks[a:b] for a, b in zip([0, *cuts], [*cuts, len(ks)])] if ks else []
        if rng.random() < 0.2:
            parts.insert(int(rng.integers(0, len(parts) + 1)), [])  # an empty segment changes nothing
        for p in parts:
            segs.append(p)
        lengths.append(len(parts))
    return segs, lengths


@pytest.mark.parametrize("blended", [False, True])
def test_segments_predict_what_the_concatenated_kernels_predict(blended):
    rng = np.random.default_rng(0)
    models = [_model(rng) for _ in range(300)]
    genes = [{"ops": ["a", "b"], "width": 2} if i % 3 == 0 else ({"ops": ["c"]} if i % 3 == 1 else None)
             for i in range(len(models))]
    pred = _predictor(1, prior=[_predictor(2), _predictor(3, prior=[_predictor(4)], weights=[0.5])],
                      weights=[0.3, 0.4]) if blended else _predictor(1)
    seg = SegmentPredictor(pred)
    segs, lengths = _split(rng, models)
    ids = [seg.add(s) if i % 2 else seg.add_many([s])[0] for i, s in enumerate(segs)]
    for g in (genes, None):
        want = pred.predict_many(models, genes=g)
        got = seg.predict_many(ids, lengths, genes=g)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    own = pred.predict_many(models) if not blended else _predictor(1).predict_many(models)
    assert (own == pred.min_model_ms).any() and (own > pred.min_model_ms).any()  # the floor binds, not always
    # a segment used twice, in another order: ids are reusable
    order = rng.permutation(len(ids))
    np.testing.assert_allclose(seg.predict_many(np.array(ids)[order], [1] * len(ids)),
                               pred.predict_many([segs[i] for i in order]), rtol=1e-12)


def test_a_fitted_mixed_precision_predictor_is_reproduced():
    """A predictor fitted on whole models of mixed bits (it learns transition costs) with kernel rows."""
    rng = np.random.default_rng(3)
    models = [m for m in (_model(rng) for _ in range(200)) if m]

    def true_ms(ks):
        t = 0.05 + 0.002 * physical(ks)[:, 0].sum() if ks else 0.05
        w = [k for k in ks if k.op in ("conv", "linear")]
        return t + 0.01 * sum(a.bits != b.bits for a, b in zip(w, w[1:]))

    table = LatencyTable(device=device_info(name="synthetic"))
    for k in {k for ks in models[:15] for k in ks}:
        table.add_kernel(k, true_ms([k]))
    for ks in models[:50]:
        table.add_model(ks, true_ms(ks), source="random")
    pred = LatencyPredictor.fit(table)
    assert pred.mode == "kernels" and pred.transition_ms
    seg = SegmentPredictor(pred)
    segs, lengths = _split(rng, models)
    ids = seg.add_many(segs)
    np.testing.assert_allclose(seg.predict_many(ids, lengths), pred.predict_many(models), rtol=1e-12)


def test_a_summary_says_what_crosses_its_ends():
    pred = _predictor(5)
    a, b = Kernel("conv", (8, 8, 8), out_channels=8, bits=8), Kernel("conv", (16, 4, 4), out_channels=8, bits=4)
    add = Kernel("add", (8, 8, 8))
    seg = SegmentPredictor(pred)
    s = seg.summary(seg.add([add, a, add, b, add]))
    assert isinstance(s, SegmentSummary)
    assert (s.first_bits, s.first_mel, s.last_bits) == (8, 8 * 8 * 8 / 1e6, 4)
    whole = pred.predict([add, a, add, b, add])
    assert whole > pred.min_model_ms
    tr = pred.transition_ms
    ends = tr["32>8"] + tr["32>8:mel"] * 8 * 8 * 8 / 1e6 + tr["4>32"]  # entering at 8 bits, leaving from 4
    assert s.contribution_ms == pytest.approx(whole - pred.intercept_ms - pred.gene_mean_ms - ends, rel=1e-12)
    inner = tr["8>4"] + tr["8>4:mel"] * 16 * 4 * 4 / 1e6
    alone = sum(seg.summary(seg.add([k])).contribution_ms for k in (add, a, add, b, add))
    assert s.contribution_ms == pytest.approx(alone + inner, rel=1e-12)
    empty = seg.summary(seg.add([add]))
    assert (empty.first_bits, empty.last_bits, empty.first_mel) == (0, 0, 0.0)
    assert seg.summary(0) == (0.0, 0, 0.0, 0) and len(seg) == 8


def test_what_cannot_be_compiled_or_predicted_is_refused():
    pred = _predictor(6)

    class Custom(LatencyPredictor):
        def predict_many(self, models, *, genes=None):
            return super().predict_many(models, genes=genes) * 2

    custom = Custom(device={}, protocol={}, mode="models", intercept_ms=0.0, theta0=[0.01, 0, 0, 0])
    assert SegmentPredictor.supports(pred) and not SegmentPredictor.supports(custom)
    assert not SegmentPredictor.supports(_predictor(7, prior=[custom], weights=[1.0]))
    assert not SegmentPredictor.supports("pi4.json")
    with pytest.raises(ValueError, match="predictor="):
        SegmentPredictor(custom)
    seg = SegmentPredictor(pred)
    sid = seg.add([Kernel("conv", (8, 8, 8), out_channels=8)])
    with pytest.raises(ValueError, match="lengths"):
        seg.predict_many([sid, sid], [1])
    with pytest.raises(ValueError, match="segment_ids"):
        seg.predict_many([sid + 1], [1])
    with pytest.raises(ValueError, match="genes"):
        seg.predict_many([sid], [1], genes=[None, None])
    with pytest.raises(ValueError, match="Kernel"):
        seg.add(["conv"])
    with pytest.raises(ValueError, match="segment_id"):
        seg.summary(sid + 1)
    np.testing.assert_allclose(seg.predict_many([], [0, 0]), pred.predict_many([[], []]), rtol=1e-12)
