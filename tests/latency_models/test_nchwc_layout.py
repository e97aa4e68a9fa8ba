"""ONNX Runtime's blocked layout: the rule against the installed runtime's optimised graphs, and its use."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from latency_models import Kernel, LatencyPredictor, LatencyTable, device_info, kernel_graph
from latency_models._features import physical
from latency_models._layout import (BLOCKED, PLAIN, _blocked, layout_state, nchwc_layout, plain_path,
                                    standalone_reorder_mbytes)
from latency_models._predictor import _transitions


def _optimised_nodes(model, tmp_path) -> list:
    """The nodes of ``model`` (an ``onnx.ModelProto``) after the installed ONNX Runtime's optimiser."""
    import onnx
    import onnxruntime as ort

    path = os.path.join(tmp_path, "opt.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = path
    opts.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return list(onnx.load(path).graph.node)


def _optimised_domains(kernel: Kernel, tmp_path) -> list[str]:
    return [n.domain for n in _optimised_nodes(kernel_graph(kernel), tmp_path)]


def _kernels() -> list[Kernel]:
    ks = []
    for c in (3, 8, 12, 16, 20, 24, 58, 64, 116, 128):
        ks.append(Kernel(op="conv", input_shape=(c, 8, 8), out_channels=32, kernel_size=1))
        ks.append(Kernel(op="conv", input_shape=(c, 8, 8), out_channels=c, kernel_size=3, groups=c))
        ks.append(Kernel(op="maxpool", input_shape=(c, 8, 8), kernel_size=3, stride=2))
    for c, g in ((48, 6), (64, 8), (64, 4), (128, 4), (64, 2)):  # group widths 8, 8, 16, 32, 32
        ks.append(Kernel(op="conv", input_shape=(c, 8, 8), out_channels=c, kernel_size=3, groups=g))
    ks.append(Kernel(op="conv", input_shape=(32, 8, 8), out_channels=58, kernel_size=1))
    ks.append(Kernel(op="conv", input_shape=(32, 8, 8), out_channels=32, kernel_size=1, activation="hardswish"))
    return ks


def test_the_rule_matches_the_installed_onnx_runtime(tmp_path):
    nchwc = nchwc_layout()
    if nchwc is None:
        pytest.skip("this ONNX Runtime has no blocked layout on this CPU")
    block, align = nchwc
    assert block in (4, 8, 16, 32) and align in (4, block)
    wrong = []
    for k in _kernels():
        runs_blocked = "com.microsoft.nchwc" in _optimised_domains(k, tmp_path)
        if runs_blocked != _blocked(k, nchwc):
            wrong.append((k, runs_blocked))
    assert not wrong, f"block {block}, alignment {align}: the rule disagrees with ONNX Runtime on {wrong}"


def test_layout_states_and_standalone_reorders():
    nchwc = (16, 4)
    dense = Kernel(op="conv", input_shape=(64, 8, 8), out_channels=58, kernel_size=1)
    first = Kernel(op="conv", input_shape=(3, 32, 32), out_channels=16, kernel_size=3, stride=2)
    odd = Kernel(op="conv", input_shape=(58, 8, 8), out_channels=58, kernel_size=3, groups=58)
    split = Kernel(op="split", input_shape=(64, 8, 8), groups=2)
    add = Kernel(op="add", input_shape=(64, 8, 8))
    q = Kernel(op="conv", input_shape=(64, 8, 8), out_channels=64, kernel_size=1, bits=8)
    half = Kernel(op="conv", input_shape=(64, 8, 8), out_channels=64, kernel_size=1, bits=16)
    assert [layout_state(k, nchwc) for k in (dense, first, odd, split, add, q, half)] == [
        BLOCKED, BLOCKED, PLAIN, PLAIN, 0, 8, 16]
    # without a blocked layout: weight layers carry their bits, everything else is transparent
    assert [layout_state(k, None) for k in (dense, odd, split, add, q)] == [32, 32, 0, 0, 8]
    # input 64x8x8, output 58 channels padded to 64
    assert standalone_reorder_mbytes(dense, nchwc) == pytest.approx(4 * (64 * 64 + 64 * 64) / 1e6)
    # a first convolution reads the NCHW input directly: only its (16 x 16 x 16) output is reordered
    assert standalone_reorder_mbytes(first, nchwc) == pytest.approx(4 * 16 * 16 * 16 / 1e6)
    # a blocked pool: its input and its (16 x 4 x 4) output
    pool = Kernel(op="maxpool", input_shape=(16, 8, 8), kernel_size=3, stride=2)
    assert standalone_reorder_mbytes(pool, nchwc) == pytest.approx(4 * (16 * 64 + 16 * 16) / 1e6)
    assert standalone_reorder_mbytes(odd, nchwc) == standalone_reorder_mbytes(split, nchwc) == 0.0
    assert standalone_reorder_mbytes(dense, None) == 0.0


def test_transitions_count_the_reorders_around_plain_kernels():
    nchwc = (16, 4)
    conv = Kernel(op="conv", input_shape=(64, 8, 8), out_channels=64, kernel_size=1)
    split = Kernel(op="split", input_shape=(64, 8, 8), groups=2)
    half = Kernel(op="conv", input_shape=(32, 8, 8), out_channels=32, kernel_size=1)
    concat = Kernel(op="concat", input_shape=(64, 8, 8))
    shuffle = Kernel(op="channel_shuffle", input_shape=(64, 8, 8), groups=2)
    tr = _transitions([conv, split, half, concat, shuffle, conv], nchwc)
    mel = 64 * 8 * 8 / 1e6
    assert tr == pytest.approx({"32>33": 2.0, "32>33:mel": 2 * mel, "33>32": 2.0, "33>32:mel": mel + 32 * 64 / 1e6})
    # no blocked layout: only bit-width changes between weight layers, as before
    assert _transitions([conv, split, half, concat, shuffle, conv], None) == {}
    # a float16 layer keeps its casts, blocked layout or not
    f16 = Kernel(op="conv", input_shape=(64, 8, 8), out_channels=64, kernel_size=1, bits=16)
    for layout in (nchwc, None):
        assert _transitions([conv, f16, conv], layout) == pytest.approx({"32>16": 1.0, "32>16:mel": mel,
                                                                         "16>32": 1.0, "16>32:mel": mel})
    # ... unless it takes a float32 layer's layout (float16_layout): none between blocked layers, the reorders of a
    # float16 layer on the plain path; without a blocked layout the option changes nothing
    assert _transitions([conv, f16, conv], nchwc, float16_layout=True) == {}
    f16_plain = Kernel(op="conv", input_shape=(58, 8, 8), out_channels=58, kernel_size=3, groups=58, bits=16)
    assert layout_state(f16_plain, nchwc, float16_layout=True) == PLAIN
    assert set(_transitions([conv, f16_plain, conv], nchwc, float16_layout=True)) == {"32>33", "32>33:mel",
                                                                                      "33>32", "33>32:mel"}
    assert _transitions([conv, f16, conv], None, float16_layout=True) == _transitions([conv, f16, conv], None)
    f16_linear = Kernel(op="linear", input_shape=(64,), out_channels=10, bits=16)
    assert layout_state(f16_linear, nchwc, float16_layout=True) == PLAIN


def test_onnx_runtime_runs_a_float16_layer_as_a_float32_one_where_it_blocks(tmp_path):
    """What ``float16_layout`` rests on: on a CPU with the blocked layout (x86) the installed ONNX Runtime has no
    float16 convolution; a float16 layer's graph runs a float32 convolution, blocked where a float32 one is."""
    nchwc = nchwc_layout()
    if nchwc is None:
        pytest.skip("this ONNX Runtime has no blocked layout on this CPU")
    for c, groups in ((64, 1), (64, 64), (58, 58)):
        k = Kernel(op="conv", input_shape=(c, 8, 8), out_channels=c, kernel_size=3, groups=groups, bits=16)
        nodes = _optimised_nodes(kernel_graph(k), tmp_path)
        convs = [n for n in nodes if n.op_type == "Conv"]
        assert len(convs) == 1
        assert (convs[0].domain == "com.microsoft.nchwc") == _blocked(k, nchwc), (k, [n.op_type for n in nodes])
        assert layout_state(k, nchwc, float16_layout=True) == (BLOCKED if _blocked(k, nchwc) else PLAIN)


def _table(nchwc):
    """Synthetic device whose models cost their kernels, plus a reorder per element crossing layouts."""
    rng = np.random.default_rng(0)
    table = LatencyTable(device=device_info(name="synthetic", nchwc=nchwc))

    def block(c: int, plain: bool) -> list[Kernel]:
        ks = [Kernel(op="conv", input_shape=(c, 16, 16), out_channels=c, kernel_size=1)]
        if plain:
            ks += [Kernel(op="channel_shuffle", input_shape=(c, 16, 16), groups=2)]
        return ks + [Kernel(op="conv", input_shape=(c, 16, 16), out_channels=c, kernel_size=3, groups=c)]

    def truth(ks: list[Kernel]) -> float:
        t = sum(1e-5 * k.macs ** 0.9 + 0.002 for k in ks)
        tr = _transitions(ks, (16, 4))
        return t + 0.05 * (tr.get("32>33:mel", 0.0) + tr.get("33>32:mel", 0.0))

    for c in (16, 32, 48, 64, 96):
        for plain in (False, True):
            for k in block(c, plain):
                table.add_kernel(k, 1e-5 * k.macs ** 0.9 + 0.006)
    for _ in range(40):
        ks = [Kernel(op="conv", input_shape=(3, 32, 32), out_channels=16, kernel_size=3, stride=2)]
        for c in rng.choice([16, 32, 48, 64, 96], size=int(rng.integers(2, 6))):
            ks += block(int(c), bool(rng.random() < 0.3))
        table.add_model(ks, truth(ks), source="synthetic")
    held = []
    for c in (16, 32, 48, 64, 96):  # every block of the held-out models has the plain shuffle
        ks = [Kernel(op="conv", input_shape=(3, 32, 32), out_channels=16, kernel_size=3, stride=2)]
        for _ in range(4):
            ks += block(c, True)
        held.append((ks, truth(ks)))
    return table, held


def test_layout_terms_carry_reorders_to_models_of_other_proportions():
    """Fitted on models where a few blocks need plain NCHW, predicting models where all do: with the layout
    terms the reorders are priced per element; without them they are spread over the kernels' families."""
    errors = {}
    for nchwc in ((16, 4), None):
        table, held = _table(nchwc)
        pred = LatencyPredictor.fit(table, weight_term=False, io_term=False)  # the layout terms alone
        assert (pred.theta0.shape[0] == 3) == bool(nchwc)
        got = pred.predict_many([ks for ks, _ in held])
        errors[nchwc] = float(np.max(np.abs(got / np.array([t for _, t in held]) - 1)))
        if nchwc:  # the saved predictor keeps its layout
            again = LatencyPredictor.from_dict(pred.to_dict())
            assert np.allclose(again.predict_many([ks for ks, _ in held]), got, rtol=1e-12)
    assert errors[(16, 4)] < 0.05, errors
    assert errors[(16, 4)] < errors[None], errors
    assert math.isfinite(errors[None])


def test_which_kernels_run_the_plain_path():
    nchwc = (16, 4)
    grouped8 = Kernel(op="conv", input_shape=(104, 16, 16), out_channels=104, kernel_size=3, groups=13)
    grouped16 = Kernel(op="conv", input_shape=(128, 16, 16), out_channels=128, kernel_size=3, groups=8)
    dw122 = Kernel(op="conv", input_shape=(122, 16, 16), out_channels=122, kernel_size=3, groups=122)
    dw124 = Kernel(op="conv", input_shape=(124, 16, 16), out_channels=124, kernel_size=3, groups=124)
    q = Kernel(op="conv", input_shape=(104, 16, 16), out_channels=104, kernel_size=3, groups=13, bits=8)
    split = Kernel(op="split", input_shape=(64, 8, 8), groups=2)
    assert [plain_path(k, nchwc) for k in (grouped8, grouped16, dw122, dw124, q, split)] == [
        True, False, True, False, False, False]
    assert not plain_path(grouped8, None)


def _grouped(cin: int, hw: int, per_group: int) -> Kernel:
    return Kernel(op="conv", input_shape=(cin, hw, hw), out_channels=cin, kernel_size=3, groups=cin // per_group)


def test_a_plain_path_kernel_is_corrected_from_plain_path_neighbours():
    """Grouped convolutions with 8 channels per group run ONNX Runtime's plain path, 3.5x slower here than
    blocked ones (16 per group) at equal MACs; the family's few plain rows must not be outvoted by the blocked
    ones beside them, nor correct the blocked kernels near them."""
    from latency_models._kernel_model import KernelModel

    def truth(k: Kernel) -> float:
        base = 0.002 + 0.01 * physical([k])[0, 0]
        return 3.5 * base if k.input_shape[0] // k.groups == 8 else base

    blocked = [_grouped(c, hw, 16) for c in (64, 128, 256, 512) for hw in (8, 16, 32)]
    plain = [_grouped(c, hw, 8) for c in (128, 256) for hw in (16, 32)]
    rows = blocked + plain
    queries = [_grouped(192, 16, 8), _grouped(384, 16, 8), _grouped(192, 16, 16), _grouped(384, 16, 16)]
    want = np.array([truth(k) for k in queries])
    ratio = {}
    for nchwc in (None, (16, 4)):
        model = KernelModel(rows, [truth(k) for k in rows], nchwc=nchwc)
        ratio[nchwc] = model.predict(queries) / want
        again = KernelModel.from_dict(model.to_dict(), nchwc=nchwc)
        assert np.allclose(again.predict(queries), model.predict(queries), rtol=1e-12)
    assert np.all(np.abs(ratio[(16, 4)] - 1) < 0.15), ratio
    assert np.max(np.abs(ratio[None] - 1)) > 0.3, ratio  # the same rows without the paths: visibly wrong
    # a predictor fitted on a table of a blocking device hands its layout to the kernel model, and keeps it
    table = LatencyTable(device=device_info(name="synthetic", nchwc=(16, 4)))
    for k in rows:
        table.add_kernel(k, truth(k))
    pred = LatencyPredictor.fit(table)
    assert pred.kernel_model.nchwc == (16, 4)
    assert LatencyPredictor.from_dict(pred.to_dict()).kernel_model.nchwc == (16, 4)


def test_blocked_float_convolutions_count_their_channels_padded_to_whole_blocks():
    """ONNX Runtime computes a blocked convolution on whole blocks: at 116 channels it costs what one at 128 does.
    The physical features say so on a blocking device (fitted on aligned widths, a 1x1 convolution at 116 channels
    is then predicted at the 128-channel cost); the image's 3 channels, a plain-path convolution (58: not a multiple
    of 4), quantised layers and a device without the layout keep the channels as given."""
    from latency_models._kernel_model import KernelModel

    nchwc = (16, 4)

    def conv(c: int, **kw) -> Kernel:
        return Kernel(op="conv", input_shape=(c, 16, 16), out_channels=kw.pop("out", c), **kw)

    macs = {c: physical([conv(c)], nchwc=nchwc)[0, 0] for c in (116, 128, 58)}
    assert macs[116] == macs[128] == physical([conv(128)])[0, 0]
    assert macs[58] == physical([conv(58)])[0, 0] < macs[116]  # plain path: as given
    dw = physical([conv(116, kernel_size=3, groups=116), conv(128, kernel_size=3, groups=128)], nchwc=nchwc)
    assert np.allclose(dw[0], dw[1])
    stem = physical([conv(3, out=116, kernel_size=3)], nchwc=nchwc)[0, 0]
    assert stem == physical([conv(3, out=128, kernel_size=3)])[0, 0]
    for k in (conv(116, bits=8), conv(116)):
        nominal = physical([k])[0]
        assert np.allclose(physical([k], nchwc=None)[0], nominal)
    assert np.allclose(physical([conv(116, bits=8)], nchwc=nchwc)[0], physical([conv(116, bits=8)])[0])

    rows = [conv(c, out=o) for c in (64, 96, 128, 160, 192) for o in (64, 128, 192)]
    times = [0.003 + 0.01 * physical([k], nchwc=nchwc)[0, 0] for k in rows]  # as the device computes them
    query, want = conv(116, out=116), 0.003 + 0.01 * macs[128]
    padded, given = (KernelModel(rows, times, nchwc=nchwc, block_padding=b).predict([query])[0] for b in (True, False))
    assert abs(padded / want - 1) < abs(given / want - 1) and abs(padded / want - 1) < 0.05
    # a kernel model saved before the padding reads back without it; one saved since keeps it
    model = KernelModel(rows, times, nchwc=nchwc)
    assert KernelModel.from_dict(model.to_dict(), nchwc=nchwc).block_padding
    old = {k: v for k, v in model.to_dict().items() if k != "block_padding"}
    assert not KernelModel.from_dict(old, nchwc=nchwc).block_padding


def test_contributions_add_up_to_the_fitted_prediction():
    """Per-kernel milliseconds and the rest (constant, layout and bit-width transitions) sum to the prediction;
    a blended predictor has no per-kernel split and says so."""
    table, held = _table((16, 4))
    pred = LatencyPredictor.fit(table)
    for ks, _ in held:
        kernels, ms, rest = pred.contributions(ks)
        assert kernels == ks and ms.shape == (len(ks),)
        assert float(ms.sum()) + rest == pytest.approx(pred.predict(ks), rel=1e-9)
        assert rest != pytest.approx(0.0, abs=1e-9)  # the reorders around the plain shuffles are in the rest
    blended = LatencyPredictor.fit(table, prior=[pred])
    with pytest.raises(ValueError, match="no per-kernel split"):
        blended.contributions(held[0][0])


def _conv_pool(int8_conv: bool) -> "onnx.ModelProto":
    """A 3x3 convolution (int8 in QDQ form, or float) followed by a max pool between quantise / dequantise
    pairs: an 8-bit pool, as the spaces export one."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(np.array(0, np.uint8), "z0")]  # after a ReLU: ONNX Runtime drops the ReLU
    nodes = []
    if int8_conv:
        inits += [numpy_helper.from_array(rng.integers(-20, 20, (16, 8, 3, 3)).astype(np.int8), "wq"),
                  numpy_helper.from_array(np.full(16, 0.01, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(16, np.int8), "wz")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
                  helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["b"], axis=0)]
        inits += [numpy_helper.from_array(np.zeros(16, np.int32), "bq"),  # bias in int32, as QLinearConv wants it
                  numpy_helper.from_array(np.full(16, 0.05 * 0.01, np.float32), "bs"),
                  numpy_helper.from_array(np.zeros(16, np.int32), "bz")]
        x = "xd"
    else:
        inits += [numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w"),
                  numpy_helper.from_array(np.zeros(16, np.float32), "b")]
        x = "x"
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("QuantizeLinear", ["r", "s", "z0"], ["rq"]),
              helper.make_node("DequantizeLinear", ["rq", "s", "z0"], ["rd"]),
              helper.make_node("MaxPool", ["rd"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
              helper.make_node("QuantizeLinear", ["m", "s", "z0"], ["mq"]),
              helper.make_node("DequantizeLinear", ["mq", "s", "z0"], ["y"])]
    graph = helper.make_graph(nodes, "conv_pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("int8_conv", [True, False])
def test_an_8bit_pool_runs_channels_last_only_after_an_int8_convolution(tmp_path, int8_conv):
    """ONNX Runtime carries a QLinearConv's channels-last layout through an 8-bit max pool (NhwcMaxPool) and
    runs the pool with its generic NCHW uint8 kernel after anything else: the pool's own transition state
    tells the two apart."""
    from latency_models import kernels_from_onnx
    from latency_models._layout import INT8_POOL

    model = _conv_pool(int8_conv)
    ops = [n.op_type for n in _optimised_nodes(model, tmp_path)]
    assert ("NhwcMaxPool" in ops) == int8_conv and ("MaxPool" in ops) != int8_conv, ops

    kernels, unknown = kernels_from_onnx(model)
    assert unknown == [] and [(k.op, k.bits) for k in kernels] == [("conv", 8 if int8_conv else 32), ("maxpool", 8)]
    pool = kernels[1]
    for nchwc in ((16, 4), None):
        assert layout_state(pool, nchwc) == INT8_POOL
        assert layout_state(pool, nchwc, int8_pool=False) == 0
        conv_state = layout_state(kernels[0], nchwc)
        mel = math.prod(pool.input_shape) / 1e6
        assert _transitions(kernels, nchwc) == pytest.approx({
            **({} if conv_state == 32 else {f"32>{conv_state}": 1.0, f"32>{conv_state}:mel": 8 * 32 * 32 / 1e6}),
            f"{conv_state}>{INT8_POOL}": 1.0, f"{conv_state}>{INT8_POOL}:mel": mel, f"{INT8_POOL}>32": 1.0})


def test_an_8bit_shuffle_graph_runs_the_strided_uint8_transpose_of_a_model(tmp_path):
    """A shuffle of what int8 layers wrote (listed at 8 bits) runs in a model as one uint8 transpose of the
    channels-last tensor, (1, H, W, g, C/g) -> (1, C/g, g, H, W); its kernel graph runs that node (not the
    NCHW shuffle of a float or 4-bit layer's output) and shuffles the channels as the model does."""
    import onnxruntime as ort

    k = Kernel("channel_shuffle", (6, 4, 5), groups=2, bits=8)
    nodes = _optimised_nodes(kernel_graph(k), tmp_path)
    perms = [list(a.ints) for n in nodes if n.op_type == "Transpose" for a in n.attribute if a.name == "perm"]
    assert perms == [[0, 4, 3, 1, 2]], nodes
    assert {n.op_type for n in nodes} == {"QuantizeLinear", "Reshape", "Transpose", "DequantizeLinear"}
    session = ort.InferenceSession(kernel_graph(k).SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 4, 5, 6]  # channels-last, as the int8 layer left it
    x = np.random.default_rng(0).uniform(-3, 3, (1, 4, 5, 6)).astype(np.float32)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    xq = np.clip(np.round(x / 0.05) + 128, 0, 255).astype(np.float32) - 128  # uint8, zero point 128
    nchw = xq.transpose(0, 3, 1, 2) * 0.05
    shuffled = nchw.reshape(1, 2, 3, 4, 5).transpose(0, 2, 1, 3, 4).reshape(1, 6, 4, 5)
    np.testing.assert_allclose(y, shuffled, atol=1e-6)
    assert [n.op_type for n in _optimised_nodes(kernel_graph(Kernel("channel_shuffle", (6, 4, 5), groups=2)),
                                                 tmp_path)].count("Transpose") == 1  # the float one: NCHW


def test_the_predictor_prices_an_8bit_pool_by_what_feeds_it():
    """A synthetic device where an 8-bit pool costs its stand-alone time after a float or int4 convolution and
    almost nothing after an int8 one (as ONNX Runtime runs them). Fitted on models with and without a pool,
    where int8 stems before a pool have 8 or 16 channels, the predictor prices a 24-channel pool after an int8
    stem too (per element crossing into the pool: within 0.1 %); reading the pool as layout-transparent, as
    predictors did before, it misses by 14 %."""
    rng = np.random.default_rng(1)
    table = LatencyTable(device=device_info(name="synthetic", nchwc=(16, 4)))

    def stem(c: int, hw: int, bits: int) -> Kernel:
        return Kernel(op="conv", input_shape=(3, 4 * hw, 4 * hw), out_channels=c, kernel_size=3, stride=2, bits=bits)

    def pool(c: int, hw: int) -> Kernel:
        return Kernel(op="maxpool", input_shape=(c, 2 * hw, 2 * hw), kernel_size=3, stride=2, bits=8)

    def body(cin: int, hw: int, c: int, bits: int) -> list[Kernel]:
        return [Kernel(op="conv", input_shape=(cin, hw, hw), out_channels=c, kernel_size=1, bits=bits),
                Kernel(op="conv", input_shape=(c, hw, hw), out_channels=c, kernel_size=3, groups=c, bits=bits)]

    def alone(k: Kernel) -> float:
        if k.op == "maxpool":
            return 2e-5 * math.prod(k.input_shape)
        return 1e-5 * k.macs ** 0.9 * (0.6 if k.bits == 8 else 1.0) + 0.004

    def truth(ks: list[Kernel]) -> float:
        return sum(0.01 if k.op == "maxpool" and ks[i - 1].bits == 8 else alone(k) for i, k in enumerate(ks))

    def model(c: int, sb: int, with_pool: bool = True) -> list[Kernel]:
        hw = int(rng.choice([10, 12, 14, 16, 18, 20]))
        ks = [stem(c, hw, sb), pool(c, hw)] if with_pool else [stem(c, 2 * hw, sb)]
        for cout in rng.choice([16, 24, 32, 48, 64], size=2):
            ks += body(ks[-1].out_channels or c, hw, int(cout), int(rng.choice([4, 8, 32])))
        return ks

    train = [model(c, sb, with_pool) for _ in range(4) for c in (8, 16, 24) for sb in (4, 8, 32)
             for with_pool in (True, False) if (c, sb, with_pool) != (24, 8, True)]
    held = [model(24, 8) for _ in range(6)]
    for ks in train + held:  # every kernel is profiled alone
        for k in ks:
            if k.key() not in {r.kernel.key() for r in table.kernel_rows}:
                table.add_kernel(k, alone(k))
    for ks in train:
        table.add_model(ks, truth(ks), source="synthetic")
    measured = np.array([truth(ks) for ks in held])
    pred = LatencyPredictor.fit(table)
    err = pred.predict_many(held) / measured - 1
    assert np.abs(err).max() < 0.01, err
    before = LatencyPredictor.fit(table, int8_pool_state=False)
    assert np.abs(before.predict_many(held) / measured - 1).max() > 0.05
    # saved and loaded it predicts the same; a predictor saved before pools had a state reads them as before
    assert np.allclose(LatencyPredictor.from_dict(pred.to_dict()).predict_many(held), pred.predict_many(held))
    old = {k: v for k, v in before.to_dict().items() if k != "int8_pool_state"}
    assert LatencyPredictor.from_dict(old).int8_pool_state is False
    assert np.allclose(LatencyPredictor.from_dict(old).predict_many(held), before.predict_many(held))


def test_the_predictor_prices_a_float16_layers_reorders_with_float16_layout():
    """A synthetic device where a float16 layer runs as float32 (ONNX Runtime on x86): what it pays is the reorders
    around the float16 layers on the plain path, which ``fit(float16_layout=True)``, the default, sees as a float32
    layer's."""
    nchwc = (16, 4)
    rng = np.random.default_rng(1)
    table = LatencyTable(device=device_info(name="synthetic", nchwc=nchwc))

    def alone(k: Kernel) -> float:
        return 1e-5 * k.macs ** 0.9 + 0.003

    def truth(ks: list[Kernel]) -> float:
        tr = _transitions(ks, nchwc, float16_layout=True)
        return sum(alone(k) for k in ks) + 0.05 * (tr.get("32>33:mel", 0.0) + tr.get("33>32:mel", 0.0))

    def model() -> list[Kernel]:
        hw = int(rng.choice([8, 12, 16, 20]))
        ks = []
        for _ in range(4):
            c = int(rng.choice([32, 48, 58, 64, 116]))  # 58 and 116: depthwise on the plain path
            bits = int(rng.choice([16, 32]))
            ks += [Kernel(op="conv", input_shape=(32, hw, hw), out_channels=c, kernel_size=1, bits=bits),
                   Kernel(op="conv", input_shape=(c, hw, hw), out_channels=c, kernel_size=3, groups=c, bits=bits),
                   Kernel(op="conv", input_shape=(c, hw, hw), out_channels=32, kernel_size=1, bits=bits)]
        return ks

    train, held = [model() for _ in range(60)], [model() for _ in range(10)]
    seen: set = set()
    for ks in train + held:
        for k in ks:
            if k.key() not in seen:
                seen.add(k.key())
                table.add_kernel(k, alone(k))
    for ks in train:
        table.add_model(ks, truth(ks), source="synthetic")
    measured = np.array([truth(ks) for ks in held])
    pred = LatencyPredictor.fit(table)  # float16_layout is on by default (since 2026-12-08)
    assert pred.float16_layout and np.abs(pred.predict_many(held) / measured - 1).max() < 0.01
    assert not any("16" in name.split(":")[0].split(">") for name in pred.transition_ms)  # no cast was priced
    # saved and loaded it predicts the same; a predictor saved before the option reads float16 layers as before
    again = LatencyPredictor.from_dict(pred.to_dict())
    assert again.float16_layout and np.allclose(again.predict_many(held), pred.predict_many(held))
    before = LatencyPredictor.fit(table, float16_layout=False)
    old = {k: v for k, v in before.to_dict().items() if k != "float16_layout"}
    assert LatencyPredictor.from_dict(old).float16_layout is False
    assert np.allclose(LatencyPredictor.from_dict(old).predict_many(held), before.predict_many(held))
