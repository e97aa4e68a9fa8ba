from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from latency_models import Kernel, LatencyPredictor, LatencyTable, UnknownOperatorWarning, evaluate, kernel_graph
from latency_models._evaluate import spearman
from latency_models._features import family, physical
from latency_models._table import device_info

spaces = pytest.importorskip("spaces")


def _measured(device, space, cands, latencies_ms):
    """A model-rows table of candidates of ``space``: their kernels and genes, as a benchmark would give them."""
    return LatencyTable.from_measurements(device=device, kernels=[space.kernels(c) for c in cands],
                                          candidates=[c.to_dict() for c in cands], latencies_ms=list(latencies_ms))


def _predict(pred, space, cands):
    return pred.predict_many([space.kernels(c) for c in cands], genes=[c.genes for c in cands])


def _true_ms(kernels):
    """A synthetic device: a physical cost with per-family efficiency and a per-kernel overhead."""
    phi = physical(kernels)
    eff = np.array([1.6 if family(k).startswith("conv_dw") else 1.0 for k in kernels])
    return float(0.05 + (0.004 * phi[:, 0] * eff + 0.2 * phi[:, 1] + 0.004).sum())


@pytest.fixture(scope="module")
def synthetic():
    space = spaces.get_space("mobilenet")
    rng = np.random.default_rng(0)
    cands = [space.sample(rng) for _ in range(260)]
    kernels = [space.kernels(c) for c in cands]
    y = np.array([_true_ms(ks) for ks in kernels])
    return cands, kernels, y


def test_model_rows_only_fit_learns_a_synthetic_device(synthetic):
    cands, kernels, y = synthetic
    table = _measured("synthetic", spaces.get_space("mobilenet"), cands[:160], y[:160])
    pred = LatencyPredictor.fit(table)
    p = pred.predict_many(kernels[160:])
    rel = np.abs(p / y[160:] - 1)
    assert np.mean(rel <= 0.05) >= 0.95, f"within 5%: {np.mean(rel <= 0.05):.3f}"
    assert pred.predict(kernels[170]) == pytest.approx(p[10], rel=1e-12)
    assert pred.predict(kernels[170], genes=cands[170].genes) == pytest.approx(
        _predict(pred, spaces.get_space("mobilenet"), [cands[170]])[0], rel=1e-12)


def test_kernel_and_model_rows_fit_and_json_round_trip(synthetic, tmp_path):
    cands, kernels, y = synthetic
    table = LatencyTable(device=device_info(name="synthetic"))
    seen = {}
    for ks in kernels[:40]:
        for k in ks:
            seen.setdefault(k, _true_ms([k]) + 0.006)  # stand-alone time: includes per-graph overhead
    for k, t in seen.items():
        table.add_kernel(k, t)
    for c, ks, t in zip(cands[:60], kernels[:60], y[:60]):
        table.add_model(ks, t, candidate=c.to_dict(), source="mobilenet")
    pred = LatencyPredictor.fit(table)
    assert pred.mode == "kernels"
    p = pred.predict_many(kernels[200:])
    assert np.mean(np.abs(p / y[200:] - 1) <= 0.10) >= 0.95
    pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json")
    assert back.device["name"] == "synthetic" and back.protocol == table.protocol
    np.testing.assert_array_equal(back.predict_many(kernels[200:]), p)
    space = spaces.get_space("mobilenet")
    np.testing.assert_array_equal(_predict(back, space, cands[200:]), _predict(pred, space, cands[200:]))


def test_evaluate_reports_the_metrics(synthetic):
    cands, kernels, y = synthetic
    pred = LatencyPredictor.fit(LatencyTable.from_measurements(device="s", kernels=kernels[:100],
                                                               latencies_ms=y[:100].tolist()))
    held = _measured("s", spaces.get_space("mobilenet"), cands[100:150], y[100:150])
    res = evaluate(pred, held)
    assert set(res) == {"n", "within_5", "within_10", "rmspe", "spearman"} and res["n"] == 50
    assert res["within_10"] >= 0.9 and res["spearman"] >= 0.9 and res["rmspe"] < 0.1


def test_spearman_matches_the_definition():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy's value


def _hwnas(shared_dir):
    with open(shared_dir / "data" / "hwnasbench-fbnet" / "latency.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    space = spaces.get_space("fbnet")
    return rows, [space.candidate(ops=r["ops"].split()) for r in rows[:1200]]


@pytest.mark.slow
def test_model_rows_only_on_hw_nas_bench(shared_dir):
    rows, cands = _hwnas(shared_dir)
    y = np.array([float(r["gold_6240_ms"]) for r in rows[:1200]])
    space = spaces.get_space("fbnet")
    p = _predict(LatencyPredictor.fit(_measured("gold_6240", space, cands[:100], y[:100])), space, cands[100:])
    # measured on this slice: Spearman 0.95, 99% within 10%; a per-layer one-hot LUT gets ~0.57 / ~74%
    assert spearman(p, y[100:]) >= 0.90
    assert np.mean(np.abs(p / y[100:] - 1) <= 0.10) >= 0.95
    lut = np.array([float(r["raspi4_ms"]) for r in rows[:1200]])
    rel = np.abs(_predict(LatencyPredictor.fit(_measured("raspi4", space, cands[:200], lut[:200])), space, cands[200:])
                 / lut[200:] - 1)
    assert rel.max() < 0.005  # the lookup-table device is additive over blocks: recovered


def test_onnx_path_and_proto_predict_like_the_candidate(tmp_path, synthetic):
    cands, kernels, y = synthetic
    pred = LatencyPredictor.fit(LatencyTable.from_measurements(device="s", kernels=kernels[:80],
                                                               latencies_ms=y[:80].tolist()))
    space = spaces.get_space("mobilenet")
    cand = space.candidate(**dict(cands[0].genes))
    proto = space.onnx(cand, path=str(tmp_path / "m.onnx"))
    want = pred.predict(space.kernels(cand))
    assert pred.predict(str(tmp_path / "m.onnx")) == pytest.approx(want, rel=1e-9)
    assert pred.predict(proto) == pytest.approx(want, rel=1e-9)
    assert pred.predict_many([proto, tmp_path / "m.onnx"]) == pytest.approx([want, want], rel=1e-9)


def test_unknown_operator_warns_and_falls_back(synthetic):
    import onnx
    from onnx import helper

    cands, kernels, y = synthetic
    pred = LatencyPredictor.fit(LatencyTable.from_measurements(device="s", kernels=kernels[:80],
                                                               latencies_ms=y[:80].tolist()))
    k = Kernel("conv", (8, 16, 16), out_channels=16, kernel_size=3, activation="relu")
    model = kernel_graph(k)
    out = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Softmax", [out], ["probs"], axis=1))
    model.graph.output[0].name = "probs"
    onnx.checker.check_model(model)
    with pytest.warns(UnknownOperatorWarning, match="Softmax"):
        got = pred.predict(model)
    assert math.isfinite(got)
    assert got == pytest.approx(pred.predict([k]), rel=1e-9)  # documented fallback: unknown ops count 0 ms


def test_bad_inputs_are_value_errors(synthetic):
    cands, kernels, y = synthetic
    pred = LatencyPredictor.fit(LatencyTable.from_measurements(device="s", kernels=kernels[:30],
                                                               latencies_ms=y[:30].tolist()))
    with pytest.raises(ValueError, match="cannot predict int"):
        pred.predict(42)
    with pytest.raises(ValueError, match="does not exist"):
        pred.predict("/nonexistent/model.onnx")
    with pytest.raises(ValueError, match="no rows"):
        LatencyPredictor.fit(LatencyTable(device={"name": "empty"}))


def test_predictions_are_floored_at_half_the_fastest_measured_model(synthetic, tmp_path):
    cands, kernels, y = synthetic
    table = _measured("synthetic", spaces.get_space("mobilenet"), cands[:40], y[:40])
    pred = LatencyPredictor.fit(table)
    assert pred.min_model_ms == pytest.approx(0.5 * y[:40].min())
    # an empty model is just the fitted intercept, which may extrapolate below zero: it gets the floor
    assert pred.predict([]) == pytest.approx(max(pred.intercept_ms, pred.min_model_ms))
    assert pred.predict([]) > 0
    assert np.all(pred.predict_many(kernels) >= pred.min_model_ms)
    pred.save(tmp_path / "p.json")
    assert LatencyPredictor.load(tmp_path / "p.json").min_model_ms == pred.min_model_ms


def test_cached_predictions_equal_fresh_ones_across_instances_and_predictors(synthetic):
    """The records a predictor leaves on kernel instances are its own: equal kernels built anew, a second
    predictor and repeated calls all give the same milliseconds as a predictor that never saw them."""
    cands, kernels, y = synthetic
    space = spaces.get_space("mobilenet")
    table = _measured("synthetic", space, cands[:120], y[:120])
    first, second = LatencyPredictor.fit(table), LatencyPredictor.fit(_measured("other", space, cands[:120], 2 * y[:120]))
    a = first.predict_many(kernels[120:])
    assert np.array_equal(first.predict_many(kernels[120:]), a)  # the same instances, now tagged
    assert np.array_equal(first.predict_many([space.kernels(c) for c in cands[120:]]), a)  # new, equal instances
    b = second.predict_many(kernels[120:])  # the instances carry the first predictor's records: not used here
    assert np.allclose(b, 2 * a, rtol=0.05)
    fresh = LatencyPredictor.fit(table)
    assert np.array_equal(fresh.predict_many([space.kernels(c) for c in cands[120:]]), a)


def _quirky_ms(kernels):
    """Another synthetic device: the same physics plus a penalty for channel counts that are not a multiple
    of 16 (vector width), which 8 end-to-end models cannot teach a physical fit."""
    extra = sum(0.03 for k in kernels if k.op == "conv" and k.output_shape[1] % 16)
    return _true_ms(kernels) + extra


def test_a_prior_of_related_devices_carries_a_device_with_eight_models(synthetic, tmp_path):
    cands, kernels, y = synthetic
    space = spaces.get_space("mobilenet")
    quirky = np.array([_quirky_ms(ks) for ks in kernels])
    related = LatencyPredictor.fit(_measured("related", space, cands[:160], quirky[:160]))
    noise = np.random.default_rng(1).uniform(0.5, 1.5, 160) * float(np.median(y))
    unrelated = LatencyPredictor.fit(_measured("unrelated", space, cands[:160], noise))
    new = 1.7 * quirky + 0.2  # a slower device of the same kind
    table = _measured("new", space, cands[160:168], new[160:168])
    alone = LatencyPredictor.fit(table)
    blended = LatencyPredictor.fit(table, prior=[unrelated, related])
    held = slice(168, None)
    rel_alone = np.abs(_predict(alone, space, cands[held]) / new[held] - 1)
    rel = np.abs(_predict(blended, space, cands[held]) / new[held] - 1)
    assert np.sqrt(np.mean(rel**2)) < 0.5 * np.sqrt(np.mean(rel_alone**2)), (rel.mean(), rel_alone.mean())
    assert np.mean(rel <= 0.10) >= 0.95 > np.mean(rel_alone <= 0.10)  # measured: 100 % against 86 %
    info = blended.fit_info["transfer"]
    assert info["prior_devices"] == ["unrelated", "related"]
    assert info["prior_weights"][1] == pytest.approx(1.7, rel=0.15)
    assert spearman(_predict(blended, space, cands[held]), new[held]) > spearman(_predict(alone, space, cands[held]),
                                                                                  new[held])
    # saved with its prior inside, loaded to the same predictions
    blended.save(tmp_path / "p.json")
    again = LatencyPredictor.load(tmp_path / "p.json")
    assert _predict(again, space, cands[held]) == pytest.approx(_predict(blended, space, cands[held]), rel=1e-12)


def test_a_prior_needs_predictors_and_enough_model_rows(synthetic):
    cands, _, y = synthetic
    space = spaces.get_space("mobilenet")
    prior = LatencyPredictor.fit(_measured("a", space, cands[:40], y[:40]))
    with pytest.raises(ValueError, match="at least 5 model rows"):
        LatencyPredictor.fit(_measured("b", space, cands[40:44], y[40:44]), prior=[prior])
    with pytest.raises(ValueError, match=r"prior\[0\] is a str; allowed: LatencyPredictor"):
        LatencyPredictor.fit(_measured("b", space, cands[40:50], y[40:50]), prior=["a.json"])


def test_fit_command_blends_a_prior_and_says_so(synthetic, tmp_path, capsys):
    from latency_models._cli import main as cli_main

    cands, kernels, y = synthetic
    space = spaces.get_space("mobilenet")
    LatencyPredictor.fit(_measured("related", space, cands[:160], y[:160])).save(tmp_path / "related.json")
    _measured("new", space, cands[160:170], 2.0 * y[160:170]).save(tmp_path / "new.json")
    _measured("new", space, cands[170:], 2.0 * y[170:]).save(tmp_path / "held.json")
    assert cli_main(["fit", str(tmp_path / "new.json"), "--out", str(tmp_path / "p.json"),
                     "--prior", str(tmp_path / "related.json")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'p.json'}: models mode, 10 model rows") and "blended: own" in line
    pred = LatencyPredictor.load(tmp_path / "p.json")
    assert pred.fit_info["transfer"]["prior_devices"] == ["related"]
    assert cli_main(["evaluate", "--predictor", str(tmp_path / "new.json"), "--prior", str(tmp_path / "related.json"),
                     "--measured", str(tmp_path / "held.json")]) == 0
    assert "within ±10%: 100.0%" in capsys.readouterr().out
    # a fitted predictor cannot take a prior: one error line, exit 2
    assert cli_main(["fit", str(tmp_path / "p.json"), "--out", str(tmp_path / "q.json"),
                     "--prior", str(tmp_path / "related.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prior applies to a table being fitted" in err[0]


def test_nnls_meets_the_optimality_conditions():
    """The transfer's non-negative least squares: x >= 0, zero gradient on the positive weights, and no
    descent direction into the zero ones (Karush-Kuhn-Tucker), on random problems."""
    from latency_models._predictor import _nnls

    rng = np.random.default_rng(0)
    for _ in range(100):
        a, b = rng.normal(size=(20, 6)), rng.normal(size=20)
        x = _nnls(a, b)
        w = a.T @ (b - a @ x)
        assert (x >= 0).all() and (w[x == 0] <= 1e-8).all() and np.allclose(w[x > 0], 0.0, atol=1e-8)


def _drifting_table(kernels, y, *, exponent, batches, seed=0):
    """A kernel-and-model-rows table of a machine whose speed drifts between batches of four models: every
    latency in a batch is multiplied by the batch's state ``s`` and the reference timed beside them by
    ``s ** (1 / exponent)`` (whole models follow the reference ``exponent`` times as strongly, in log)."""
    rng = np.random.default_rng(seed)
    table = LatencyTable(device=device_info(name="drifting"))
    ref0 = 0.25
    distinct = list(dict.fromkeys(k for ks in kernels[:40] for k in ks))
    for start in range(0, len(distinct), 40):  # kernels are timed in batches of forty
        s = float(np.exp(rng.normal(0.0, 0.15)))
        for k in distinct[start:start + 40]:
            table.add_kernel(k, (_true_ms([k]) + 0.006) * s, reference_ms=ref0 * s ** (1 / exponent))
    for b in range(batches):
        s = float(np.exp(rng.normal(0.0, 0.15)))
        for ks, t in zip(kernels[4 * b:4 * b + 4], y[4 * b:4 * b + 4]):
            table.add_model(ks, t * s, source="mobilenet", reference_ms=ref0 * s ** (1 / exponent))
    return table


def test_the_machine_state_exponent_is_learned_and_measurements_are_put_on_the_predictors_scale(synthetic, tmp_path):
    cands, kernels, y = synthetic
    table = _drifting_table(kernels, y, exponent=3.0, batches=40)  # 160 model rows, 40 states
    pred = LatencyPredictor.fit(table)
    assert pred.reference_exponent == 3.0 and pred.reference_ms == pytest.approx(table.reference_ms)
    assert set(pred.fit_info["loo_rmspe_by_exponent"]) >= {"0", "1", "2", "3", "4"}
    as_measured = LatencyPredictor.fit(table, reference_exponent=0)
    assert as_measured.reference_exponent == 0.0 and "loo_rmspe_by_exponent" not in as_measured.fit_info
    # held-out models timed at other states, each beside its reference: on the predictor's scale they agree
    rng = np.random.default_rng(1)
    s = np.exp(rng.normal(0.0, 0.15, size=60))
    measured, refs = y[200:] * s, 0.25 * s ** (1 / 3)
    on_scale = pred.on_scale(measured, refs)
    within = np.mean(np.abs(pred.predict_many(kernels[200:]) / on_scale - 1) <= 0.10)
    within_raw = np.mean(np.abs(as_measured.predict_many(kernels[200:]) / measured - 1) <= 0.10)
    assert within >= 0.95 > within_raw + 0.2, (within, within_raw)
    held = LatencyTable(device=device_info(name="drifting"))
    for ks, t, r in zip(kernels[200:], measured, refs):
        held.add_model(ks, float(t), reference_ms=float(r))
    assert evaluate(pred, held)["within_10"] == pytest.approx(within)  # measured rows put on the predictor's scale
    assert evaluate(pred, held, on_scale=False)["within_10"] < within - 0.2
    assert pred.on_scale(2.0, pred.reference_ms) == pytest.approx(2.0)
    assert pred.on_scale(2.0, pred.reference_ms * 2) == pytest.approx(2.0 / 8)
    assert pred.on_scale(2.0, None) == 2.0 and as_measured.on_scale(2.0, 0.5) == 2.0
    pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json")
    assert (back.reference_ms, back.reference_exponent) == (pred.reference_ms, pred.reference_exponent)
    np.testing.assert_array_equal(back.predict_many(kernels[200:]), pred.predict_many(kernels[200:]))


def test_evaluate_says_when_the_measurements_ran_outside_the_tables_states(synthetic, tmp_path, capsys):
    """A calm table cannot test its exponent far from its own states: evaluate reports where the measured rows' state
    lies against the table's model rows' and the CLI says so in one line when it lies outside."""
    from latency_models._cli import main as cli_main
    from latency_models._evaluate import state_gap_note

    cands, kernels, y = synthetic
    pred = LatencyPredictor.fit(_drifting_table(kernels, y, exponent=3.0, batches=40))
    lo, hi = pred.fit_info["model_reference_ms"]  # the 5th and 95th percentile of the model rows' references
    assert 0.85 * pred.reference_ms < lo < pred.reference_ms < hi < 1.15 * pred.reference_ms

    def held(state: float) -> LatencyTable:  # timed in a state `state` times the table's reference
        t = LatencyTable(device=device_info(name="drifting"))
        for ks, ms in zip(kernels[200:230], y[200:230]):
            t.add_model(ks, float(ms) * state ** 3, reference_ms=pred.reference_ms * state)
        return t

    inside = evaluate(pred, held(1.0))
    assert inside["state_ratio"] == pytest.approx(1.0) and inside["state_outside"] is False
    assert state_gap_note(inside, pred.reference_exponent) is None
    faster = evaluate(pred, held(0.75))
    assert faster["state_outside"] is True and faster["state_ratio"] == pytest.approx(0.75)
    assert faster["table_state_range"] == pytest.approx([lo / pred.reference_ms, hi / pred.reference_ms])
    note = state_gap_note(faster, pred.reference_exponent)
    assert "0.750x" in note and "faster" in note and "exponent 3" in note
    assert "exponent 0" in state_gap_note(faster, 0.0) and evaluate(pred, held(1.3))["state_outside"] is True
    pred.save(tmp_path / "p.json")
    held(0.75).save(tmp_path / "held.json")
    assert cli_main(["evaluate", "--predictor", str(tmp_path / "p.json"), "--measured", str(tmp_path / "held.json")]) == 0
    assert "the measured rows ran in another machine state than the table" in capsys.readouterr().out
    # a predictor fitted before it kept its table's states, and measurements without references: nothing said
    info = {k: v for k, v in pred.fit_info.items() if k != "model_reference_ms"}
    assert "state_outside" not in evaluate(LatencyPredictor.from_dict({**pred.to_dict(), "fit_info": info}), held(0.75))
    bare = LatencyTable(device=device_info(name="drifting"))
    bare.add_model(kernels[200], float(y[200]))
    assert "state_outside" not in evaluate(pred, bare)


def test_no_state_correction_without_references_and_bad_exponents_are_refused(synthetic):
    cands, kernels, y = synthetic
    plain = _measured("synthetic", spaces.get_space("mobilenet"), cands[:60], y[:60])
    pred = LatencyPredictor.fit(plain)
    assert pred.reference_exponent == 0.0 and pred.reference_ms is None
    with pytest.raises(ValueError, match="needs every row of the table to carry its reference_ms"):
        LatencyPredictor.fit(plain, reference_exponent=2.0)
    few = _drifting_table(kernels, y, exponent=3.0, batches=5)  # 5 states: too few to learn from
    assert LatencyPredictor.fit(few).reference_exponent == 0.0
    assert LatencyPredictor.fit(few, reference_exponent=3).reference_exponent == 3.0
    for bad in (-1.0, "fast", True, float("nan")):
        with pytest.raises(ValueError, match="allowed: 'auto' or a number >= 0"):
            LatencyPredictor.fit(few, reference_exponent=bad)
    data = pred.to_dict()
    del data["reference_ms"], data["reference_exponent"]  # a predictor saved before the state correction
    assert LatencyPredictor.from_dict(data).reference_exponent == 0.0


def test_a_costly_activation_has_its_own_family_and_falls_back_to_the_plain_convolution():
    from latency_models._kernel_model import KernelModel

    plain = [Kernel("conv", (c, 8, 8), out_channels=c, kernel_size=3, groups=c) for c in (8, 16, 24, 32, 48)]
    swish = Kernel("conv", (40, 8, 8), out_channels=40, kernel_size=3, groups=40, activation="hardswish")
    assert family(swish) == "conv_dw_k3/b32+hardswish" and family(plain[0]) == "conv_dw_k3/b32"
    assert family(Kernel("act", (8, 4, 4), activation="swish", bits=1)) == "act_swish/b8"
    assert family(Kernel("scale", (8, 4, 4))) == "scale/b32"
    other = [Kernel("add", (c, 8, 8)) for c in (8, 16, 24, 32)]
    model = KernelModel(plain + other, [0.01 * c for c in (8, 16, 24, 32, 48)] + [0.001 * c for c in (8, 16, 24, 32)])
    assert model._group_of(swish) == "conv_dw_k3/b32"  # not all convolutions, nor every row
    assert model.predict([swish])[0] == pytest.approx(0.40, rel=0.15)
    # a scale reads its input and the (C, 1, 1) factors, and writes its output
    assert physical([Kernel("scale", (8, 4, 4))])[0, 1] == pytest.approx((2 * 8 * 16 + 8) * 4 / 1e6)



def test_a_family_short_of_rows_is_predicted_from_its_kind_at_other_kernel_sizes():
    """A 4-bit 7x7 depthwise convolution with one row (a profile cut short, a sampler that never chose it):
    predicted from the 4-bit depthwise ones at 3x3 and 5x5, whose time per MAC it shares, not from every
    convolution (dense 1x1 ones here run 20x faster per MAC)."""
    from latency_models._kernel_model import KernelModel

    def law(k):  # ms: depthwise 4-bit convolutions run a slow path
        macs = k.input_shape[0] * k.input_shape[1] * k.input_shape[2] * k.kernel_size**2 * \
            (k.out_channels // k.groups) / k.stride**2
        return macs * (2e-7 if k.groups > 1 else 1e-8)

    dw = [Kernel("conv", (c, h, h), out_channels=c, kernel_size=ks, groups=c, bits=4, stride=s)
          for c in (16, 48, 112) for h in (8, 32) for ks in (3, 5) for s in (1, 2)]
    dense = [Kernel("conv", (c, h, h), out_channels=2 * c, kernel_size=1, bits=4) for c in (8, 24, 64, 96) for h in (8, 32)]
    one = Kernel("conv", (8, 16, 16), out_channels=8, kernel_size=7, groups=8, bits=4)
    train = dw + dense + [one]
    km = KernelModel(train, [law(k) for k in train])
    query = Kernel("conv", (112, 8, 8), out_channels=112, kernel_size=7, groups=112, bits=4)
    assert km._group_of(query) == "size:conv_dw/b4"
    assert km.predict([query])[0] == pytest.approx(law(query), rel=0.25)
    # with enough rows of its own, the family is fitted on them
    sevens = [Kernel("conv", (c, 8, 8), out_channels=c, kernel_size=7, groups=c, bits=4) for c in (16, 32, 64, 96)]
    assert KernelModel(train + sevens, [law(k) for k in train + sevens])._group_of(query) == "conv_dw_k7/b4"
    assert KernelModel.from_dict(km.to_dict()).predict([query])[0] == pytest.approx(km.predict([query])[0])


def test_an_onnx_model_timed_whole_outside_the_spaces_is_predicted_at_its_measurement(synthetic, tmp_path):
    """profile_models times a teacher whole: the predictor returns its measured latency (the median of its
    rows) for that ONNX model, in predict and predict_many, after a JSON round trip too; its kernel list, and
    the space's candidates, keep the fitted value (which the spaces' compiled path reproduces)."""
    pytest.importorskip("torch")
    from latency_models import kernels_from_onnx
    from spaces.compress import export_onnx

    cands, kernels, y = synthetic
    table = _measured("synthetic", spaces.get_space("mobilenet"), cands[:60], y[:60])
    teacher = export_onnx(spaces.builtin_teacher(in_channels=3, num_classes=10), (3, 32, 32))
    outside = kernels_from_onnx(teacher)[0]
    truth = 1.7 * _true_ms(outside)  # runs slower than the space's models suggest
    for f in (1.0, 1.1, 0.9):
        table.add_model(outside, f * truth, source="teacher:x")
    pred = LatencyPredictor.fit(table)
    fitted = pred.predict(outside)
    assert fitted != pytest.approx(truth, rel=1e-6)  # the fit alone does not give it
    assert pred.predict(teacher) == pytest.approx(truth, rel=1e-12)
    path = tmp_path / "teacher.onnx"
    path.write_bytes(teacher.SerializeToString())
    np.testing.assert_allclose(pred.predict_many([kernels[61], str(path), outside]),
                               [pred.predict(kernels[61]), truth, fitted], rtol=1e-12)
    pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json")
    assert back.predict(str(path)) == pytest.approx(truth, rel=1e-12)
    np.testing.assert_array_equal(back.predict_many(kernels[100:140]), pred.predict_many(kernels[100:140]))
    assert tuple(kernels[0]) not in pred.measured_models  # the space's candidates are never looked up


def test_an_onnx_model_heavier_than_the_fitted_models_is_flagged(synthetic, tmp_path):
    """A model given as ONNX with more megabytes of weights than all but a few of the fitted whole models gets
    one CalibrationRangeWarning naming it and the numbers; a light one, a model the table timed whole, kernel
    lists and a predictor saved before the field was recorded get none."""
    pytest.importorskip("torch")
    import warnings

    import onnx

    from latency_models import CalibrationRangeWarning, kernels_from_onnx
    from spaces.compress import export_onnx

    cands, kernels, y = synthetic
    space = spaces.get_space("mobilenet")
    pred = LatencyPredictor.fit(_measured("synthetic", space, cands[:60], y[:60]))
    heaviest = pred.heaviest_weight_mb
    assert len(heaviest) == 5 and heaviest == sorted(heaviest)
    assert heaviest[-1] == pytest.approx(max(physical(k)[:, 2].sum() for k in kernels[:60]))
    light = space.onnx(min(cands[60:], key=lambda c: physical(space.kernels(c))[:, 2].sum()))
    heavy = export_onnx(spaces.builtin_teacher(in_channels=3, num_classes=10), (3, 32, 32))
    heavy_mb = physical(kernels_from_onnx(heavy)[0])[:, 2].sum()
    assert heavy_mb > heaviest[0]  # the test's premise: the teacher is heavier than the 5th heaviest model
    path = tmp_path / "heavy.onnx"
    onnx.save(heavy, str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred.predict_many([light, kernels[0]])
        pred.predict(kernels_from_onnx(heavy)[0])  # a kernel list: the spaces' hot path, never checked
    assert not [w for w in caught if issubclass(w.category, CalibrationRangeWarning)]
    with pytest.warns(CalibrationRangeWarning) as caught:
        pred.predict_many([str(path), light])
    [warning] = [w for w in caught if issubclass(w.category, CalibrationRangeWarning)]
    message = str(warning.message)
    assert str(path) in message and f"{heavy_mb:.1f} MB of weights" in message and "extrapolates" in message
    assert "models[1]" not in message
    assert pred.beyond_range(str(path)) in message and pred.beyond_range(kernels_from_onnx(heavy)[0]) in message
    assert pred.beyond_range(light) is None and pred.beyond_range(kernels[0]) is None
    # the field survives JSON; a predictor saved without it flags nothing
    pred.save(tmp_path / "p.json")
    assert LatencyPredictor.load(tmp_path / "p.json").heaviest_weight_mb == heaviest
    data = pred.to_dict()
    del data["heaviest_weight_mb"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LatencyPredictor.from_dict(data).predict(str(path))
    assert not [w for w in caught if issubclass(w.category, CalibrationRangeWarning)]
    # a model the table timed whole is its own measurement: not flagged
    table = _measured("synthetic", space, cands[:60], y[:60])
    table.add_model(kernels_from_onnx(heavy)[0], 1.0, source="teacher:x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert LatencyPredictor.fit(table).predict(heavy) == pytest.approx(1.0)
    assert not [w for w in caught if issubclass(w.category, CalibrationRangeWarning)]


@pytest.mark.parametrize("nchwc", [None, [16, 4]])
def test_kernel_rows_only_predict_their_sum_with_or_without_a_blocked_layout(nchwc):
    # a profile cut short before any whole model (a tiny --profile-min): the stand-alone times, summed
    t = LatencyTable(device={**device_info(name="x"), "nchwc": nchwc})
    kernels = [Kernel("conv", (c, 16, 16), out_channels=c, kernel_size=3) for c in (8, 16, 24, 32, 40, 48)]
    for k in kernels:
        t.add_kernel(k, 0.01 * k.input_shape[0])
    pred = LatencyPredictor.fit(t)
    got = pred.predict(kernels[1:3])
    assert got == pytest.approx(float(pred.kernel_model.predict(kernels[1:3]).sum()))
    assert got > 0


def test_a_depthwise_convolution_takes_neighbours_of_its_own_map_size():
    """A depthwise convolution's output channels and groups repeat its input channels: counted three times in the
    distance between neighbours, they outweigh the map size: here a layer on an 8x8 map takes its correction from
    the same width on 4x4 and 16x16 maps (on a 128-px profile of this CPU, a 4-bit 7x7 one at 320 channels took
    all four of its neighbours from other map sizes or strides: -28 %). Counted once
    (``depthwise_channels_once=True``), its own map size at other widths is nearer. Off by default: the committed
    tables' whole held-out models did not gain (``experiments/depthwise_channels.py``)."""
    from latency_models._kernel_model import KernelModel

    def dw(c, hw):
        return Kernel(op="conv", input_shape=(c, hw, hw), out_channels=c, kernel_size=5, groups=c, bits=8)

    def law(k):  # 8x8 maps run 1.3x what MACs and bytes say (a regime of their own)
        return (1e-6 * k.macs + 0.002) * (1.3 if k.input_shape[1] == 8 else 1.0)

    train = [dw(c, 8) for c in (48, 64, 192, 256)] + [dw(c, hw) for c in (96, 128) for hw in (4, 16)]
    times = [law(k) for k in train]
    query = dw(128, 8)
    once = KernelModel(train, times, depthwise_channels_once=True)
    assert once.predict([query])[0] == pytest.approx(law(query), rel=0.05)
    thrice = KernelModel(train, times)
    assert not thrice.depthwise_channels_once
    assert thrice.predict([query])[0] < 0.9 * law(query)
    # saved and read back either way; a kernel model saved before the option counted them three times
    assert KernelModel.from_dict(once.to_dict()).predict([query])[0] == pytest.approx(once.predict([query])[0])
    old = {k: v for k, v in once.to_dict().items() if k != "depthwise_channels_once"}
    assert not KernelModel.from_dict(old).depthwise_channels_once
    # the predictor passes it on and saves it with its kernel model
    table = LatencyTable(device={"name": "t"})
    for k, t in zip(train, times):
        table.add_kernel(k, t)
    pred = LatencyPredictor.fit(table, depthwise_channels_once=True)
    assert pred.kernel_model.depthwise_channels_once
    assert LatencyPredictor.from_dict(pred.to_dict()).kernel_model.depthwise_channels_once
    # a dense convolution's descriptors are unchanged
    dense = Kernel(op="conv", input_shape=(64, 8, 8), out_channels=128, kernel_size=1, bits=8)
    assert (once._shape([dense]) == thrice._shape([dense])).all()


def test_kernel_model_takes_neighbours_of_its_own_channel_alignment():
    """int8 depthwise convolutions here step through 16 channels at a time: 24 or 40 channels is not between
    16 and 32 or 32 and 48. A kernel model whose neighbours mixed the two kinds missed both by ~25 % on this
    CPU; an unmeasured unaligned kernel now follows the unaligned ones."""
    from latency_models._kernel_model import CHANNEL_ALIGNMENT, KernelModel

    def dw(c, hw):
        return Kernel(op="conv", input_shape=(c, hw, hw), out_channels=c, kernel_size=5, groups=c, bits=8)

    def law(k):  # unaligned channel counts cost 1.6x per MAC
        c = k.input_shape[0]
        return 1e-6 * k.macs * (1.6 if c % CHANNEL_ALIGNMENT else 1.0) + 0.002

    train = [dw(c, hw) for c in (16, 24, 32, 48, 56, 64, 80, 88, 96, 112, 120) for hw in (8, 16, 32)]
    km = KernelModel(train, [law(k) for k in train])
    unseen = [dw(40, 16), dw(72, 32), dw(104, 8), dw(40, 32)]
    for k in unseen:
        assert km.predict([k])[0] == pytest.approx(law(k), rel=0.1), k
    mixed = KernelModel(train, [law(k) for k in train], channel_alignment=None)  # any neighbour: pulled to aligned
    assert all(mixed.predict([k])[0] < 0.85 * law(k) for k in unseen)
    again = KernelModel.from_dict(mixed.to_dict())
    assert again.channel_alignment is None and list(again.predict(unseen)) == list(mixed.predict(unseen))
    with pytest.raises(ValueError, match="channel_alignment=0 must be a positive integer or None"):
        KernelModel(train, [law(k) for k in train], channel_alignment=0)


@pytest.mark.parametrize("nchwc", [None, [16, 4]])
def test_the_weight_term_learns_what_whole_models_pay_per_megabyte_of_weights(synthetic, tmp_path, nchwc, capsys):
    # a device where a kernel timed alone keeps its weights in the cache, and a whole model reads them again on
    # every run: 0.3 ms per MB of stored weights beyond the kernels' stand-alone times
    cands, kernels, y = synthetic
    per_mb = 0.3
    heavy = y + per_mb * np.array([physical(ks)[:, 2].sum() for ks in kernels])
    table = LatencyTable(device={**device_info(name="synthetic"), "nchwc": nchwc})
    seen = {}
    for ks in kernels[:200]:
        for k in ks:
            seen.setdefault(k, _true_ms([k]))
    for k, t in seen.items():
        table.add_kernel(k, t)
    for c, ks, t in zip(cands[:120], kernels[:120], heavy[:120]):
        table.add_model(ks, t, candidate=c.to_dict(), source="mobilenet")
    errors = {}
    for weight_term in (False, True):
        pred = LatencyPredictor.fit(table, weight_term=weight_term)
        assert pred.weight_term is weight_term and len(pred.theta0) == 2 + bool(nchwc) + pred.io_term + weight_term
        errors[weight_term] = np.abs(pred.predict_many(kernels[200:]) / heavy[200:] - 1)
    assert pred.theta0[-1] == pytest.approx(per_mb, rel=0.05)  # the cost per MB, learnt from the model rows
    assert np.sqrt(np.mean(errors[True] ** 2)) < 0.5 * np.sqrt(np.mean(errors[False] ** 2))
    assert np.mean(errors[True] <= 0.05) >= 0.95
    pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json")
    assert back.weight_term is True
    np.testing.assert_array_equal(back.predict_many(kernels[200:]), pred.predict_many(kernels[200:]))
    auto = LatencyPredictor.fit(table)  # the default, "auto": both fits, the lower leave-one-out error wins
    info = auto.fit_info["weight_term"]
    assert auto.weight_term is True and info["chosen"] is True
    assert info["loo_rmspe_with"] < 0.5 * info["loo_rmspe_without"]
    np.testing.assert_allclose(auto.predict_many(kernels[200:]), pred.predict_many(kernels[200:]), rtol=1e-12)
    light = LatencyTable(device=table.device, kernel_rows=table.kernel_rows)  # the same models, no cost per MB
    for c, ks, t in zip(cands[:120], kernels[:120], y[:120]):
        light.add_model(ks, t, candidate=c.to_dict(), source="mobilenet")
    auto = LatencyPredictor.fit(light)
    info = auto.fit_info["weight_term"]
    assert info["chosen"] is auto.weight_term is (info["loo_rmspe_with"] < 0.95 * info["loo_rmspe_without"])
    same = LatencyPredictor.fit(light, weight_term=auto.weight_term)
    np.testing.assert_allclose(auto.predict_many(kernels[200:]), same.predict_many(kernels[200:]), rtol=1e-12)
    assert auto.fit_info["loo_rmspe"] <= info["loo_rmspe_with" if auto.weight_term else "loo_rmspe_without"]
    with pytest.raises(ValueError, match="weight_term='yes'; allowed: 'auto', True or False"):
        LatencyPredictor.fit(light, weight_term="yes")
    old = {k: v for k, v in LatencyPredictor.fit(table, weight_term=False).to_dict().items() if k != "weight_term"}
    assert LatencyPredictor.from_dict(old).weight_term is False  # saved before the option: without it
    only_kernels = LatencyTable(device=table.device, kernel_rows=table.kernel_rows)
    summed = LatencyPredictor.fit(only_kernels, weight_term=True)  # no model rows: the stand-alone times, summed
    assert summed.predict(kernels[0]) == pytest.approx(float(summed.kernel_model.predict(kernels[0]).sum()))
    from latency_models._cli import main as cli_main

    table.save(tmp_path / "t.json")
    assert cli_main(["fit", str(tmp_path / "t.json"), "--out", str(tmp_path / "q.json"), "--weight-term"]) == 0
    assert LatencyPredictor.load(tmp_path / "q.json").weight_term is True
    line = capsys.readouterr().out  # a profile's table: no models outside the spaces, said (this raised before)
    assert "0 models outside the spaces: no blend" in line and "ms per MB of weights" in line, line
    assert "a cost per MB of weights" not in line  # asked for, not chosen: nothing to explain
    assert cli_main(["fit", str(tmp_path / "t.json"), "--out", str(tmp_path / "q.json"), "--weight-term", "off"]) == 0
    assert LatencyPredictor.load(tmp_path / "q.json").weight_term is False
    capsys.readouterr()
    assert cli_main(["fit", str(tmp_path / "t.json"), "--out", str(tmp_path / "q.json")]) == 0  # auto
    line = capsys.readouterr().out
    assert LatencyPredictor.load(tmp_path / "q.json").weight_term is True
    assert "a cost per MB of weights on (leave-one-out RMSPE" in line, line
    assert "ms per MB a kernel's stand-alone graph takes in and gives out" in line, line


def test_a_profiled_predictor_prices_kernels_not_gene_values(synthetic):
    # a device where models with one block in stage 1 pay a cost that no kernel shows: only a cost per gene value
    # (depths[1]=1) can learn it. From model rows alone that is the way; with kernel rows a model given as kernels
    # or ONNX has no genes and was predicted with the gene costs' training mean, so they are off unless asked for
    cands, kernels, y = synthetic
    hidden = np.array([0.2 * y.mean() if c.genes["depths"][1] == 1 else 0.0 for c in cands])
    assert 0.2 < np.mean(hidden > 0) < 0.8
    table = LatencyTable(device=device_info(name="synthetic"))
    seen = {k: _true_ms([k]) for ks in kernels[:120] for k in ks}
    for k, t in seen.items():
        table.add_kernel(k, t)
    for c, ks, t in zip(cands[:120], kernels[:120], y[:120] + hidden[:120]):
        table.add_model(ks, t, candidate=c.to_dict(), source="mobilenet")
    genes = [c.genes for c in cands[120:]]
    default = LatencyPredictor.fit(table)
    assert default.gene_ms == {} and default.gene_mean_ms == 0.0 and default.fit_info["lambda_gene"] == 1e6
    np.testing.assert_array_equal(default.predict_many(kernels[120:], genes=genes), default.predict_many(kernels[120:]))
    asked = LatencyPredictor.fit(table, gene_terms=True)  # as before 2026-12-05: the cost is learnt per gene value
    assert any(g.startswith("depths[1]=") for g in asked.gene_ms) and asked.gene_mean_ms != 0.0
    truth = y[120:] + hidden[120:]
    err = {name: np.sqrt(np.mean((p / truth - 1) ** 2)) for name, p in (
        ("asked, genes given", asked.predict_many(kernels[120:], genes=genes)),
        ("default", default.predict_many(kernels[120:])))}
    assert err["asked, genes given"] < err["default"], err
    models_only = LatencyTable(device=table.device, model_rows=table.model_rows)
    assert LatencyPredictor.fit(models_only).gene_ms  # a benchmark's rows alone: the genes are all there is
    assert LatencyPredictor.fit(table, gene_terms=False).gene_ms == {}
    with pytest.raises(ValueError, match="gene_terms='yes'; allowed: None"):
        LatencyPredictor.fit(table, gene_terms="yes")


def _bits_table(seed: int, alternate: bool) -> tuple[LatencyTable, list[list[Kernel]], np.ndarray]:
    """A device without a blocked layout whose whole models cost their kernels alone plus 0.01 ms per change of bit
    width (5 % noise on the timed rows): models with one run of 8-bit layers, and held-out ones alternating 8 and 32
    bits (many more changes per layer than the table saw)."""
    rng = np.random.default_rng(seed)
    table = LatencyTable(device=device_info(name="synthetic", nchwc=None))
    widths = (16, 24, 32, 48, 64)

    def alone(k: Kernel) -> float:
        return 2e-9 * k.macs + 0.004

    for c in widths:
        for size in (1, 3, 5, 7):
            for b in (8, 32):
                k = Kernel(op="conv", input_shape=(c, 16, 16), out_channels=c, kernel_size=size, bits=b)
                table.add_kernel(k, alone(k))

    def model(alt: bool) -> list[Kernel]:
        n = int(rng.integers(4, 9))
        lo = int(rng.integers(0, n))
        hi = int(rng.integers(lo, n + 1))
        return [Kernel(op="conv", input_shape=(int(c), 16, 16), out_channels=int(c),
                       kernel_size=int(rng.choice([1, 3, 5, 7])),
                       bits=(8 if i % 2 else 32) if alt else (8 if lo <= i < hi else 32))
                for i, c in enumerate(rng.choice(widths, size=n))]

    def truth(ks: list[Kernel]) -> float:
        changes = sum(a.bits != b.bits for a, b in zip([Kernel(op="conv", input_shape=(3, 16, 16), out_channels=3,
                                                               kernel_size=1)] + ks[:-1], ks))
        return sum(alone(k) for k in ks) + 0.01 * (changes + (ks[-1].bits != 32))

    for _ in range(40):
        ks = model(False)
        table.add_model(ks, truth(ks) * float(np.exp(rng.normal(0, 0.05))), source="synthetic")
    held = [model(alternate) for _ in range(30)]
    return table, held, np.array([truth(ks) for ks in held])


def test_transitions_get_a_penalty_of_their_own():
    """The costs of the bit-width (and layout) transitions are penalised apart from the families' per-kernel costs,
    each strength chosen by leave-one-out; ``transition_penalty=False`` shares one, as before 2026-12-06. In this
    table the per-kernel costs are noise (shrunk away) and the transitions are real (kept)."""
    table, held, truth = _bits_table(0, alternate=True)
    own = LatencyPredictor.fit(table, reference_exponent=0)
    shared = LatencyPredictor.fit(table, reference_exponent=0, transition_penalty=False)
    assert shared.fit_info["lambda_transition"] == shared.fit_info["lambda_overhead"]
    assert own.fit_info["lambda_transition"] < own.fit_info["lambda_overhead"]
    assert own.fit_info["loo_rmspe"] < shared.fit_info["loo_rmspe"]
    assert own.transition_ms.get("32>8", 0.0) > 0.005  # the 0.01 ms of a change, seen
    errors = {name: float(np.sqrt(np.mean((p.predict_many(held) / truth - 1) ** 2)))
              for name, p in (("own", own), ("shared", shared))}
    assert errors["own"] < errors["shared"], errors


def test_a_table_without_transitions_fits_the_same_with_or_without_their_own_penalty():
    table, _, _ = _bits_table(1, alternate=False)
    float_only = LatencyTable(device=table.device)
    for r in table.kernel_rows:
        if r.kernel.bits == 32:
            float_only.add_kernel(r.kernel, r.latency_ms)
    for r in table.model_rows:
        ks = [k if k.bits == 32 else Kernel(op="conv", input_shape=k.input_shape, out_channels=k.out_channels,
                                            kernel_size=k.kernel_size) for k in r.kernels]
        float_only.add_model(ks, r.latency_ms, source="synthetic")
    models = [r.kernels for r in float_only.model_rows]
    a = LatencyPredictor.fit(float_only, reference_exponent=0).predict_many(models)
    b = LatencyPredictor.fit(float_only, reference_exponent=0, transition_penalty=False).predict_many(models)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kernel", [
    Kernel("conv", (16, 12, 12), out_channels=24, kernel_size=3, stride=2),
    Kernel("conv", (16, 12, 12), out_channels=16, kernel_size=3, groups=16, bits=8),
    Kernel("linear", (64,), out_channels=10),
    Kernel("add", (8, 6, 6)),
    Kernel("scale", (8, 6, 6)),
    Kernel("concat", (12, 6, 6)),
    Kernel("split", (12, 6, 6), groups=2),
    Kernel("channel_shuffle", (12, 6, 6), groups=2),
    Kernel("channel_shuffle", (12, 6, 6), groups=2, bits=8),
    Kernel("global_avgpool", (12, 6, 6)),
    Kernel("maxpool", (12, 6, 6), kernel_size=3, stride=2),
])
def test_standalone_io_megabytes_are_the_one_kernel_graphs_inputs_and_outputs(kernel):
    from latency_models._microgen import standalone_io_mbytes

    graph = kernel_graph(kernel).graph
    elements = sum(math.prod(d.dim_value for d in v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.output])
    assert all(v.type.tensor_type.elem_type == 1 for v in [*graph.input, *graph.output])  # float32 in and out
    assert standalone_io_mbytes(kernel) == pytest.approx(4.0 * elements / 1e6, rel=1e-12)


@pytest.mark.parametrize("nchwc", [None, [16, 4]])
def test_the_io_term_takes_out_what_a_kernel_alone_pays_for_its_input_and_output(synthetic, tmp_path, nchwc):
    # a device where a one-kernel graph's session run pays 0.05 ms per MB of its input and output, which a layer
    # inside a whole model does not: the families' multipliers cannot take it out, it varies with the shape
    from latency_models._microgen import standalone_io_mbytes

    cands, kernels, y = synthetic
    per_mb = 0.05
    table = LatencyTable(device={**device_info(name="synthetic"), "nchwc": nchwc})
    seen = {}
    for ks in kernels[:200]:
        for k in ks:
            seen.setdefault(k, _true_ms([k]) - 0.05 + per_mb * standalone_io_mbytes(k))
    for k, t in seen.items():
        table.add_kernel(k, t)
    for c, ks, t in zip(cands[:120], kernels[:120], y[:120]):
        table.add_model(ks, t, candidate=c.to_dict(), source="mobilenet")
    preds, errors = {}, {}
    for io_term in (False, True):
        preds[io_term] = pred = LatencyPredictor.fit(table, io_term=io_term, weight_term=False)
        assert pred.io_term is io_term and len(pred.theta0) == 2 + bool(nchwc) + io_term
        errors[io_term] = float(np.sqrt(np.mean((pred.predict_many(kernels[200:]) / y[200:] - 1) ** 2)))
    theta = preds[True].theta0
    assert theta[0] == pytest.approx(1.0, rel=0.05) and theta[-1] == pytest.approx(-per_mb, rel=0.1), theta
    assert preds[True].io_ms_per_mb == theta[-1] and preds[False].io_ms_per_mb is None
    # with a blocked layout the reorder column (a blocked kernel's input and output, padded) carries much of it
    assert errors[True] < (0.5 if nchwc is None else 0.8) * errors[False], errors
    preds[True].save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json")
    assert back.io_term is True
    np.testing.assert_array_equal(back.predict_many(kernels[200:]), preds[True].predict_many(kernels[200:]))
    old = {k: v for k, v in preds[False].to_dict().items() if k != "io_term"}
    back = LatencyPredictor.from_dict(old)  # saved before the option: without it
    assert back.io_term is False
    np.testing.assert_array_equal(back.predict_many(kernels[200:]), preds[False].predict_many(kernels[200:]))
    assert LatencyPredictor.fit(table, weight_term=False).io_term is True  # the default


def test_a_family_in_fewer_than_three_models_gets_no_terms_of_its_own(synthetic, monkeypatch):
    """Two whole models share a 7x7 stem no other model has and run 2 ms slower than their kernels say (their
    weights, say): a multiplier fitted on that stem's family would be their whole residual, and a third model with
    the same stem would inherit it. The family keeps its stand-alone estimate (multiplier 1), and the third model is
    predicted near its time; with the rule off (a family from one model up) it is not."""
    import latency_models._predictor as lp

    cands, kernels, y = synthetic
    stem = Kernel("conv", (3, 32, 32), out_channels=32, kernel_size=7, stride=2)
    table = LatencyTable(device=device_info(name="synthetic"))
    seen = {stem: _true_ms([stem]) + 0.006}
    for ks in kernels[:40] + kernels[100:103]:
        for k in ks:
            seen.setdefault(k, _true_ms([k]) + 0.006)
    for k, t in seen.items():
        table.add_kernel(k, t)
    for c, ks, t in zip(cands[:60], kernels[:60], y[:60]):
        table.add_model(ks, t, candidate=c.to_dict(), source="mobilenet")
    for j in (100, 101):
        table.add_model([stem, *kernels[j]], _true_ms([stem, *kernels[j]]) + 2.0, source=f"other{j}")
    third = [stem, *kernels[102]]
    truth = _true_ms(third)

    pred = LatencyPredictor.fit(table)
    assert "conv_dense_k7/b32" in pred.fit_info["families_without_terms"]
    assert "conv_dense_k7/b32" not in pred.family_mult and "conv_dense_k7/b32" not in pred.family_count_ms
    assert pred.predict(third) == pytest.approx(truth, rel=0.15)
    monkeypatch.setattr(lp, "MIN_FAMILY_MODELS", 1)
    loose = LatencyPredictor.fit(table)
    assert loose.fit_info["families_without_terms"] == [] and "conv_dense_k7/b32" in loose.family_mult
    assert loose.predict(third) > 1.3 * truth


def _timed_alone(models):
    """A table of the synthetic device (no blocked layout) with every distinct kernel of ``models`` timed alone, and
    those times by kernel."""
    table = LatencyTable(device=device_info(name="synthetic", nchwc=None))
    alone = {}
    for ks in models:
        for k in ks:
            alone.setdefault(k, _true_ms([k]) - 0.05)
    for k, t in alone.items():
        table.add_kernel(k, t)
    return table, alone


def test_a_family_the_free_fit_makes_negative_is_held_at_zero(synthetic):
    # a device on which the model rows say an add costs less than nothing (-0.6 times its time alone): the free fit
    # follows them to a negative multiplier, the non-negative one holds the family at 0 and fits the rest again
    cands, kernels, _ = synthetic
    table, alone = _timed_alone(kernels[:200])
    rng = np.random.default_rng(1)
    for c, ks in zip(cands[:120], kernels[:120]):
        t = 0.05 + sum(alone[k] * (-0.6 if k.op == "add" else 1.0) for k in ks)
        table.add_model(ks, t * float(np.exp(rng.normal(0, 0.02))), candidate=c.to_dict(), source="mobilenet")
    free = LatencyPredictor.fit(table, reference_exponent=0, weight_term=False, nonnegative_families=False)
    held = LatencyPredictor.fit(table, reference_exponent=0, weight_term=False, nonnegative_families=True)
    assert free.family_mult["add/b32"] < -0.3 and free.fit_info["families_at_zero"] == []
    assert held.family_mult["add/b32"] == 0.0 and held.fit_info["families_at_zero"] == ["add/b32"]
    assert min(held.family_mult.values()) >= 0.0
    add = next(k for ks in kernels for k in ks if k.op == "add")
    _, ms, _ = held.contributions([add])
    # nothing of its time alone is left: only its per-kernel terms
    assert ms[0] == pytest.approx(held.family_count_ms.get("add/b32", 0.0) + held.lut_ms.get(add.key(), 0.0), abs=1e-12)


def _resnet_like(rng, stem, widths):
    """A hand-made model of deep dense 3x3 convolutions (a ResNet's, of ``widths`` channels) behind ``stem``."""
    ks = [stem]
    c, hw = stem.out_channels, stem.input_shape[1]
    for _ in range(int(rng.integers(3, 7))):
        out = int(rng.choice(widths))
        ks.append(Kernel("conv", (c, hw, hw), out_channels=out, kernel_size=3, activation="relu"))
        c = out
    return ks


def test_stems_apart_from_deep_dense_convolutions(synthetic, tmp_path):
    # a device on which a stem (a dense convolution reading the 3-channel image) costs half its time alone inside a
    # model, and a ResNet's deep 3x3 convolutions 1.5 times theirs: stem_families=True fits each family its own
    # multiplier and predicts held-out ResNet-like models of widths the table's models never ran
    cands, kernels, _ = synthetic
    rng = np.random.default_rng(3)
    stem = next(k for k in kernels[0] if k.op == "conv" and k.input_shape[0] == 3)
    # the held-out ones of other widths: none of their deep kernels ran in the table's models
    deep_models = [_resnet_like(rng, stem, (32, 48, 64, 96)) for _ in range(10)]
    deep_models += [_resnet_like(rng, stem, (40, 56, 80)) for _ in range(4)]
    table, alone = _timed_alone([*kernels[:200], *deep_models])

    def in_model(k):
        dense3 = k.op == "conv" and k.groups == 1 and k.kernel_size == 3
        return alone[k] * (1.0 if not dense3 else 0.5 if k.input_shape[0] <= 4 else 1.5)

    for c, ks in zip(cands[:120], kernels[:120]):
        table.add_model(ks, 0.05 + sum(in_model(k) for k in ks), candidate=c.to_dict(), source="mobilenet")
    for ks in deep_models[:10]:
        table.add_model(ks, 0.05 + sum(in_model(k) for k in ks), source="resnet")
    one = LatencyPredictor.fit(table, reference_exponent=0, weight_term=False)
    apart = LatencyPredictor.fit(table, reference_exponent=0, weight_term=False, stem_families=True)
    assert "conv_stem_k3/b32" not in one.family_mult and "conv_stem_k3/b32" in apart.family_mult
    assert apart.family_mult["conv_stem_k3/b32"] < 0.8 < 1.0 < apart.family_mult["conv_dense_k3/b32"]
    held = deep_models[10:]
    truth = np.array([0.05 + sum(in_model(k) for k in ks) for ks in held])
    assert np.max(np.abs(apart.predict_many(held) / truth - 1)) < 0.02
    # saved and loaded, the option travels with the predictor; a predictor saved before it had none reads as off
    apart.save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json")
    assert back.stem_families and back.predict(held[0]) == pytest.approx(apart.predict(held[0]), rel=1e-12)
    data = apart.to_dict()
    del data["stem_families"]
    assert not LatencyPredictor.from_dict(data).stem_families


def test_a_rare_family_with_an_activation_takes_its_parents_multiplier(synthetic):
    # a device on which every dense 1x1 convolution costs twice its time alone inside a model, with or without a
    # hardswish after it; only two of the table's models run hardswish ones (too few for terms of their own): flat,
    # they keep their stand-alone time (a multiplier of 1); nested, they take their parent's multiplier
    import dataclasses

    cands, kernels, _ = synthetic

    def swish(ks, every):
        out, n = [], 0
        for k in ks:
            if k.op == "conv" and k.groups == 1 and k.kernel_size == 1:
                n += 1
                k = dataclasses.replace(k, activation="hardswish") if n % every == 0 else k
            out.append(k)
        return out

    with_act = [swish(ks, 2) for ks in kernels[120:122]] + [swish(kernels[122], 1)]
    table, alone = _timed_alone([*kernels[:120], *with_act])

    def truth(ks):
        return 0.05 + sum(alone[k] * (2.0 if k.op == "conv" and k.groups == 1 and k.kernel_size == 1 else 1.0)
                          for k in ks)

    for c, ks in zip(cands[:120], kernels[:120]):
        table.add_model(ks, truth(ks), candidate=c.to_dict(), source="mobilenet")
    for ks in with_act[:2]:
        table.add_model(ks, truth(ks), source="other")
    child, parent = "conv_dense_k1/b32+hardswish", "conv_dense_k1/b32"
    flat = LatencyPredictor.fit(table, reference_exponent=0, weight_term=False, nested_families=False)
    nested = LatencyPredictor.fit(table, reference_exponent=0, weight_term=False, nested_families=True)
    assert child in flat.fit_info["families_without_terms"] and child not in flat.family_mult
    assert nested.family_mult[child] == nested.family_mult[parent] > 1.1
    held = with_act[2]
    assert abs(nested.predict(held) / truth(held) - 1) < 0.05 < 0.1 < abs(flat.predict(held) / truth(held) - 1)
