"""Fake quantisation, calibration, BatchNorm folding and the QDQ ONNX export, on small real models."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from compression_nets import TinyNet, accuracy, conv_linear_names, digits, trained_tiny
from onnx import TensorProto

from spaces.compress import calibrate, export_onnx_quantized, fold_batchnorm, prepare_qat


def _ort_run(proto: onnx.ModelProto, x: torch.Tensor, optimized_path: str | None = None) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(len(x))])


def _calibrated(bits_value: int) -> tuple[torch.nn.Module, dict[str, int]]:
    model = trained_tiny()
    bits = {name: bits_value for name in conv_linear_names(model)}
    x, _, _, _ = digits()
    prepared = prepare_qat(model, bits)
    calibrate(prepared, [x[i:i + 128] for i in range(0, 512, 128)])
    return prepared, bits


def test_fold_batchnorm_keeps_outputs():
    model = trained_tiny()
    x = digits()[2][:64]
    with torch.no_grad():
        before = model(x)
        folded = fold_batchnorm(model)
        after = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_int8_export_runs_qlinearconv_and_matches_fake_quant(tmp_path):
    prepared, bits = _calibrated(8)
    _, _, xv, yv = digits()
    proto = export_onnx_quantized(prepared, bits, (1, 8, 8))
    assert proto.ir_version == 10
    # Weights are stored as int8 initializers, dequantised per output channel.
    inits = {t.name: t for t in proto.graph.initializer}
    dq_weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized")]
    assert len(dq_weights) == len(bits)
    for node in dq_weights:
        assert inits[node.input[0]].data_type == TensorProto.INT8
        assert {a.name: a.i for a in node.attribute}["axis"] == 0
    assert not any(t.data_type == TensorProto.FLOAT and t.name.endswith(".weight") for t in proto.graph.initializer)
    # ONNX Runtime fuses every convolution into an int8 QLinearConv.
    optimized = tmp_path / "optimized.onnx"
    out = _ort_run(proto, xv, str(optimized))
    ops = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    n_convs = sum(1 for n in bits if n != "fc")
    assert ops["QLinearConv"] == n_convs
    assert ops["Conv"] == 0
    # The exported model agrees with the fake-quantised PyTorch model.
    with torch.no_grad():
        ref = prepared.eval()(xv).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.99
    acc_onnx = float((out.argmax(1) == yv.numpy()).mean())
    assert abs(acc_onnx - accuracy(prepared, xv, yv)) <= 0.005
    assert accuracy(prepared, xv, yv) >= accuracy(trained_tiny(), xv, yv) - 0.03


def test_int4_weights_are_stored_as_int4_and_run():
    prepared, bits = _calibrated(8)
    model = trained_tiny()
    bits4 = dict(bits, **{"block1.expand.0": 4, "head.0": 4})
    prepared = prepare_qat(model, bits4)
    x, _, xv, yv = digits()
    calibrate(prepared, [x[:256]])
    proto = export_onnx_quantized(prepared, bits4, (1, 8, 8))
    types = {t.name: t.data_type for t in proto.graph.initializer}
    assert types["block1.expand.0.weight_quantized"] == TensorProto.INT4
    assert types["head.0.weight_quantized"] == TensorProto.INT4
    assert types["block2.expand.0.weight_quantized"] == TensorProto.INT8
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 21
    out = _ort_run(proto, xv)
    with torch.no_grad():
        ref = prepared.eval()(xv).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert abs(float((out.argmax(1) == yv.numpy()).mean()) - accuracy(prepared, xv, yv)) <= 0.005


def test_fp16_layers_store_float16_weights_behind_casts():
    model = trained_tiny()
    bits = {name: 16 for name in conv_linear_names(model)}
    prepared = prepare_qat(model, bits)
    proto = export_onnx_quantized(prepared, bits, (1, 8, 8))
    weights = [t for t in proto.graph.initializer if t.name.endswith(".weight_fp16")]
    assert len(weights) == len(bits) and all(t.data_type == TensorProto.FLOAT16 for t in weights)
    assert sum(n.op_type == "Cast" for n in proto.graph.node) == 2 * len(bits)
    xv = digits()[2][:100]
    out = _ort_run(proto, xv)
    with torch.no_grad():
        ref = prepared.eval()(xv).numpy()
    np.testing.assert_allclose(out, ref, atol=2e-2, rtol=1e-2)


def test_float_model_is_prepared_and_calibrated_by_the_exporter():
    model = trained_tiny()
    bits = {"stem.0": 8, "fc": 8}
    x, _, xv, _ = digits()
    proto = export_onnx_quantized(model, bits, (1, 8, 8), calibration=[x[:256]])
    prepared = calibrate(prepare_qat(model, bits), [x[:256]])
    with torch.no_grad():
        ref = prepared.eval()(xv[:50]).numpy()
    assert (_ort_run(proto, xv[:50]).argmax(1) == ref.argmax(1)).mean() >= 0.98


def test_qat_trains_through_the_straight_through_estimator():
    model = TinyNet()
    prepared = prepare_qat(model, {n: 4 for n in conv_linear_names(model)})
    prepared.train()
    x, y, _, _ = digits()
    loss = torch.nn.functional.cross_entropy(prepared(x[:32]), y[:32])
    loss.backward()
    grads = [p.grad for p in prepared.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # The original model is untouched and the parameter names are kept.
    assert set(dict(model.named_parameters())) == set(dict(prepared.named_parameters()))


def test_percentile_calibration_clips_outliers():
    model = TinyNet().eval()
    bits = {"stem.0": 8}
    x = torch.randn(64, 1, 8, 8)
    x[0, 0, 0, 0] = 50.0  # one outlier
    lo = prepare_qat(model, bits)
    calibrate(lo, [x], method="percentile", percentile=99.9)
    hi = calibrate(prepare_qat(model, bits), [x], method="minmax")
    q_lo, q_hi = lo.get_submodule("act_quant_1"), hi.get_submodule("act_quant_1")  # the input's quantiser
    assert float(q_hi.max_val) == pytest.approx(50.0)
    assert float(q_lo.max_val) < 10.0
    with pytest.raises(ValueError, match="method='entropy' is not supported"):
        calibrate(lo, [x], method="entropy")


def test_bad_module_bits_are_refused():
    model = TinyNet()
    with pytest.raises(ValueError, match=r"module_bits\['fc'\]=6 is not supported"):
        prepare_qat(model, {"fc": 6})
    with pytest.raises(ValueError, match="'pool', which is not a Conv2d or Linear"):
        prepare_qat(model, {"pool": 8})
