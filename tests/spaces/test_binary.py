"""Binary (1-bit) and ternary (2-bit) weights: formulas, straight-through QAT, the int8 export, the kernels."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from compression_nets import conv_linear_names, digits, trained_tiny
from onnx import TensorProto, numpy_helper

from latency_models import Kernel, kernels_from_onnx
from spaces import SEARCH_BITS, get_space
from spaces.compress import calibrate, export_onnx_quantized, prepare_qat
from spaces.compress._qmodules import TERNARY_THRESHOLD, fake_quant_weight, low_bit_weight


def test_binary_codes_and_least_squares_scale():
    w = torch.randn(6, 4, 3, 3)
    codes, scale = low_bit_weight(w, 1)
    assert set(codes.unique().tolist()) <= {-1, 1}
    assert torch.equal(codes, torch.where(w >= 0, 1, -1).to(torch.int8))
    torch.testing.assert_close(scale, w.abs().reshape(6, -1).mean(1))
    # mean |w| minimises ||w - a sign(w)||^2 over a: a nudge either way is worse
    def err(a: torch.Tensor) -> torch.Tensor:
        return ((w - a.reshape(-1, 1, 1, 1) * codes) ** 2).reshape(6, -1).sum(1)
    assert (err(scale) < err(scale * 1.01)).all() and (err(scale) < err(scale * 0.99)).all()


def test_ternary_codes_threshold_and_scale():
    w = torch.randn(5, 40)
    codes, scale = low_bit_weight(w, 2)
    delta = TERNARY_THRESHOLD * w.abs().mean(1, keepdim=True)
    assert torch.equal(codes != 0, w.abs() > delta)
    assert torch.equal(codes[codes != 0], torch.sign(w)[codes != 0].to(torch.int8))
    for c in range(5):
        kept = w[c].abs()[codes[c] != 0]
        assert scale[c].item() == pytest.approx(kept.mean().item(), rel=1e-6)
    assert 0.2 < (codes == 0).float().mean() < 0.6  # a Gaussian's share below 0.7 E|w| is about 0.42


@pytest.mark.parametrize("bits", [1, 2])
def test_fake_quant_is_straight_through_and_commutes_with_channel_scaling(bits):
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    q = fake_quant_weight(w, bits)
    codes, scale = low_bit_weight(w, bits)
    torch.testing.assert_close(q.detach(), codes.float() * scale.reshape(-1, 1, 1, 1))
    upstream = torch.randn_like(q)
    q.backward(upstream)
    torch.testing.assert_close(w.grad, upstream)  # identity gradient
    s = torch.tensor([2.0, -0.5, 1.5, -3.0]).reshape(-1, 1, 1, 1)  # BatchNorm folding: a factor per channel
    torch.testing.assert_close(fake_quant_weight(w.detach() * s, bits), q.detach() * s, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("low", [1, 2])
def test_export_stores_int8_codes_runs_qlinearconv_and_matches_pytorch(low, tmp_path, one_torch_thread):
    model = trained_tiny()
    names = conv_linear_names(model)
    bits = {n: (8 if n in ("stem.0", "fc") else low) for n in names}
    x, y, xv, yv = digits()
    prepared = prepare_qat(model, bits)
    prepared.train()
    opt = torch.optim.SGD(prepared.parameters(), lr=0.02, momentum=0.9)
    for i in range(0, 512, 32):  # a little QAT through the straight-through estimator
        loss = torch.nn.functional.cross_entropy(prepared(x[i:i + 32]), y[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    calibrate(prepared, [x[:256]])
    proto = export_onnx_quantized(prepared, bits, (1, 8, 8))
    marked = json.loads({p.key: p.value for p in proto.metadata_props}["karumi.weight_bits"])
    inits = {t.name: t for t in proto.graph.initializer}
    assert set(marked) == {f"{n}.weight_quantized" for n, b in bits.items() if b == low}
    for name in marked:
        assert inits[name].data_type == TensorProto.INT8
        values = set(np.unique(numpy_helper.to_array(inits[name])).tolist())
        assert values <= ({-1, 1} if low == 1 else {-1, 0, 1})
    # the kernels read back from the graph carry the 1 or 2 bits; their bytes count them
    kernels, unknown = kernels_from_onnx(proto)
    assert not unknown
    assert collections.Counter(k.bits for k in kernels if k.op in ("conv", "linear")) == collections.Counter(bits.values())
    # ONNX Runtime runs them as int8 QLinearConv and computes what the fake-quantised model computes
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {"input": xv[i:i + 1].numpy()})[0] for i in range(200)])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == sum(1 for n in bits if n != "fc") and ops["Conv"] == 0
    with torch.no_grad():
        ref = prepared.eval()(xv[:200]).numpy()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert abs(float((out.argmax(1) == yv[:200].numpy()).mean()) - float((ref.argmax(1) == yv[:200].numpy()).mean())) <= 0.02
    spread = float(np.abs(ref).max())
    assert np.abs(out - ref).max() <= 0.1 * spread  # activation rounding only (1 uint8 step per quantiser)


def test_kernel_sizes_count_one_and_two_bits():
    k = {b: Kernel("conv", (16, 8, 8), out_channels=32, kernel_size=3, bits=b) for b in (1, 2, 8, 32)}
    weights = 32 * 16 * 9
    for b in (1, 2, 8):
        assert k[b].weight_bytes == weights * b / 8 + 4 * 32 + 4 * 32  # bias and one scale per channel
    assert k[32].weight_bytes == 4 * weights + 4 * 32


@pytest.mark.parametrize("space_name", ["mobilenet", "prune"])
def test_spaces_sample_low_bits_only_when_asked_and_export_them(space_name, one_torch_thread):
    space = get_space(space_name, input_size=16, num_classes=10)
    rng = np.random.default_rng(0)
    default = {b for _ in range(20) for b in space.sample(rng, search=("bits",)).bits}
    assert default <= set(SEARCH_BITS) and not default & {1, 2}
    asked = [space.sample(np.random.default_rng(s), search=("bits",), bits=(1, 2, 32)) for s in range(5)]
    drawn = {b for c in asked for b in c.bits}
    assert {1, 2} <= drawn <= {1, 2, 32}
    cand = asked[0]
    assert space.kernels(cand) == kernels_from_onnx(space.onnx(cand))[0]
    n = len(cand.bits)
    binary = space.candidate(**dict(cand.genes), bits=[1] * n)
    weights = sum(k.params - k.out_channels for k in space.kernels(binary) if k.op in ("conv", "linear"))
    extras = sum(8 * k.out_channels for k in space.kernels(binary) if k.op in ("conv", "linear"))
    assert space.stats(binary).size_bytes == round(weights / 8 + extras)  # 1 bit a weight, bias and scale
    assert space.stats(cand).size_bytes < space.stats(space.candidate(**dict(cand.genes))).size_bytes
    with pytest.raises(ValueError, match="bits=\\(3,\\)"):
        space.sample(rng, bits=(3,))
