"""The outside model: whole models unlike the spaces' candidates get a few-parameter fit of their own, blended in."""

from __future__ import annotations

import numpy as np
import pytest

from latency_models import Kernel, LatencyPredictor, LatencyTable, OutsideModel, SegmentPredictor
from latency_models._outside import MIN_OUTSIDE_MODELS
from latency_models._table import device_info


def _alone_ms(k: Kernel) -> float:
    return 0.004 + 2e-8 * k.macs


def _model(rng, channels, hw, n):
    ks = []
    c = int(rng.choice(channels))
    for _ in range(n):
        out = int(rng.choice(channels))
        ks.append(Kernel("conv", (c, hw, hw), out_channels=out, kernel_size=int(rng.choice([1, 3])), activation="relu"))
        c = out
    return ks


def _candidate(rng):  # small models, as a space's random candidates
    return _model(rng, [8, 16, 24], 8, int(rng.integers(4, 9)))


def _other(rng, channels=(64, 96, 128)):  # larger models of another make
    return _model(rng, list(channels), 16, int(rng.integers(6, 13)))


def _candidate_ms(ks):
    return 0.01 + sum(_alone_ms(k) for k in ks)


def _other_ms(ks):  # another law: in these models a kernel takes 1.4x its time alone
    return 0.01 + 1.4 * sum(_alone_ms(k) for k in ks)


def _table(rng, n_other):
    cands = [_candidate(rng) for _ in range(60)]
    others = [_other(rng) for _ in range(n_other)]
    table = LatencyTable(device=device_info(name="synthetic"))
    for k in {k for ks in cands + others for k in ks}:
        table.add_kernel(k, _alone_ms(k))
    for ks in cands:
        table.add_model(ks, _candidate_ms(ks), source="space", candidate={"genes": {}})
    for i, ks in enumerate(others):
        table.add_model(ks, _other_ms(ks), source=f"other{i}")
    return table


def _errors(pred, models, truth):
    p = pred.predict_many(models)
    return p / np.array([truth(ks) for ks in models]) - 1.0


def test_models_of_another_make_are_predicted_from_their_own_fit():
    rng = np.random.default_rng(0)
    table = _table(rng, 12)
    pred = LatencyPredictor.fit(table)
    plain = LatencyPredictor.fit(table, outside_models=False)
    info = pred.fit_info["outside_models"]
    assert pred.outside is not None and info["chosen"] == "blend" and info["models"] == 12, info
    assert plain.outside is None and "outside_models" not in plain.fit_info
    assert not plain.outside_weight([_candidate(rng), _other(rng)]).any()
    # new models of the other make, with channel counts no row had: the blend follows their law
    new_others = [_other(rng, (80, 112)) for _ in range(10)]
    with_blend, without = _errors(pred, new_others, _other_ms), _errors(plain, new_others, _other_ms)
    assert np.sqrt(np.mean(with_blend**2)) < 0.5 * np.sqrt(np.mean(without**2)), (with_blend, without)
    assert np.abs(with_blend).max() < 0.08
    # the candidates keep their prediction
    new_cands = [_candidate(rng) for _ in range(20)]
    np.testing.assert_allclose(pred.predict_many(new_cands), plain.predict_many(new_cands), rtol=0.02)


def test_no_blend_with_few_models_outside_the_spaces_or_no_candidates():
    table = _table(np.random.default_rng(1), MIN_OUTSIDE_MODELS - 1)
    pred = LatencyPredictor.fit(table)
    assert pred.outside is None
    assert pred.fit_info["outside_models"]["chosen"].startswith("no blend: fewer than")
    table = _table(np.random.default_rng(1), 10)
    table.model_rows = [r for r in table.model_rows if not r.candidate]
    pred = LatencyPredictor.fit(table)
    assert pred.outside is None and pred.fit_info["outside_models"]["chosen"] == \
        "no blend: no candidates of the spaces among the rows"


def test_the_blend_is_kept_through_json_segments_and_contributions(tmp_path):
    rng = np.random.default_rng(2)
    pred = LatencyPredictor.fit(_table(rng, 12))
    assert pred.outside is not None
    models = [_candidate(rng) for _ in range(30)] + [_other(rng) for _ in range(30)]
    want = pred.predict_many(models)
    shares = pred.outside_weight(models)
    assert shares[:30].max() < 0.05 and (shares[30:] > 0.5).mean() >= 0.9  # the gate tells the two makes apart
    pred.save(tmp_path / "p.json")
    again = LatencyPredictor.load(tmp_path / "p.json")
    assert isinstance(again.outside, OutsideModel)
    np.testing.assert_allclose(again.predict_many(models), want, rtol=1e-12)
    seg = SegmentPredictor(again)
    segs, lengths = [], []
    for ks in models:  # each model in two segments
        cut = len(ks) // 2
        segs += [ks[:cut], ks[cut:]]
        lengths.append(2)
    np.testing.assert_allclose(seg.predict_many(seg.add_many(segs), lengths), want, rtol=1e-12)
    for ks, w in zip(models[::10], want[::10]):
        _, ms, rest = pred.contributions(ks)
        assert ms.sum() + rest == pytest.approx(w, rel=1e-9)


def test_a_bad_outside_model_is_refused():
    with pytest.raises(ValueError, match="coef must have 4 values"):
        OutsideModel(coef=[1.0, 2.0], gate=[0.0] * 10, z_mean=[0, 0, 0], z_scale=[1, 1, 1])
    with pytest.raises(ValueError, match="missing the field 'gate'"):
        OutsideModel.from_dict({"coef": [1, 0, 0, 0]})


def test_fit_command_says_whether_it_blends_and_can_be_told_not_to(tmp_path, capsys):
    from latency_models._cli import main as cli_main

    _table(np.random.default_rng(3), 12).save(tmp_path / "t.json")
    assert cli_main(["fit", str(tmp_path / "t.json"), "--out", str(tmp_path / "p.json")]) == 0
    line = capsys.readouterr().out.strip()
    assert "12 models outside the spaces: blended in by a gate (cross-validated RMSPE" in line, line
    assert LatencyPredictor.load(tmp_path / "p.json").outside is not None
    assert cli_main(["fit", str(tmp_path / "t.json"), "--out", str(tmp_path / "q.json"), "--no-outside-models"]) == 0
    assert "outside the spaces" not in capsys.readouterr().out
    assert LatencyPredictor.load(tmp_path / "q.json").outside is None


def test_the_gate_converges_on_perfectly_separated_rows():
    from latency_models._outside import _gate_x, _logistic, _sigmoid

    rng = np.random.default_rng(5)
    z = rng.normal(size=(200, 3))
    t = (z[:, 0] > 0.5).astype(float)  # a clean cut: unpenalised, the weights would grow without bound
    for lam in (1e-6, 0.1, 10.0):
        w = _logistic(_gate_x(z), t, lam)
        p = _sigmoid(_gate_x(z) @ w)
        assert np.isfinite(w).all() and ((p > 0.5) == (t > 0.5)).mean() > 0.95
