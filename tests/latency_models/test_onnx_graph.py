"""`kernels_from_onnx` on hand-built graphs: QDQ int8/int4, fp16, fusions, splits, shuffles, unknown ops."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from latency_models import Kernel, kernels_from_onnx

RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, initializers=(), opset=21) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _fin(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, array, elem=None):
    if elem is None:
        return numpy_helper.from_array(np.asarray(array), name)
    return helper.make_tensor(name, elem, list(np.shape(array)), np.asarray(array).flatten().tolist())


def _run(model, shape):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: RNG.standard_normal(shape).astype(np.float32)})[0]


def _qdq_conv(weight_elem: int, qmax: int) -> onnx.ModelProto:
    """The project's QDQ contract: uint8 per-tensor activations with zero point, per-channel symmetric weights
    as an INT8/INT4 initializer -> DequantizeLinear(axis=0) -> Conv weight, Q after the conv output."""
    w = RNG.integers(-qmax, qmax + 1, size=(16, 8, 3, 3))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["y"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["out"]),
    ]
    inits = [
        _init("xs", np.float32(0.05)), _init("xz", np.uint8(128)),
        _init("wq", w, weight_elem), _init("ws", np.full(16, 0.01, np.float32)),
        _init("b", np.zeros(16, np.float32)), _init("ys", np.float32(0.05)), _init("yz", np.uint8(0)),
    ]
    return _model(nodes, [_fin("x", [1, 8, 12, 12])], [_fin("out", [1, 16, 6, 6])], inits)


@pytest.mark.parametrize("elem, qmax, bits", [(TensorProto.INT8, 127, 8), (TensorProto.INT4, 7, 4)])
def test_qdq_conv_weights_give_their_bits(elem, qmax, bits):
    model = _qdq_conv(elem, qmax)
    assert _run(model, (1, 8, 12, 12)).shape == (1, 16, 6, 6)
    kernels, unknown = kernels_from_onnx(model)
    assert unknown == []
    assert kernels == [Kernel("conv", (8, 12, 12), out_channels=16, kernel_size=3, stride=2, bits=bits, activation="relu")]


def test_fp16_weights_behind_casts_are_16_bits():
    w = RNG.standard_normal((4, 3, 1, 1)).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    model = _model(nodes, [_fin("x", [1, 3, 5, 5])], [_fin("y", [1, 4, 5, 5])], [_init("w16", w)])
    assert _run(model, (1, 3, 5, 5)).shape == (1, 4, 5, 5)
    assert kernels_from_onnx(model) == ([Kernel("conv", (3, 5, 5), out_channels=4, bits=16)], [])


def test_a_float16_model_with_casts_at_its_ends_is_16_bits():
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "w"], ["y16"], pads=[1, 1, 1, 1], group=3),
        helper.make_node("Relu", ["y16"], ["r16"]),
        helper.make_node("Cast", ["r16"], ["y"], to=TensorProto.FLOAT),
    ]
    w = RNG.standard_normal((3, 1, 3, 3)).astype(np.float16)
    model = _model(nodes, [_fin("x", [1, 3, 6, 6])], [_fin("y", [1, 3, 6, 6])], [_init("w", w)])
    assert _run(model, (1, 3, 6, 6)).shape == (1, 3, 6, 6)
    assert kernels_from_onnx(model) == (
        [Kernel("conv", (3, 6, 6), out_channels=3, kernel_size=3, groups=3, bits=16, activation="relu")], [],
    )


def test_conv_batchnorm_clip_is_one_relu6_conv():
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["z"]),
        helper.make_node("Clip", ["z", "lo", "hi"], ["out"]),
    ]
    inits = [
        _init("w", RNG.standard_normal((c, 2, 5, 5)).astype(np.float32)),
        *(_init(n, np.full(c, val, np.float32)) for n, val in (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))),
        _init("lo", np.float32(0.0)), _init("hi", np.float32(6.0)),
    ]
    model = _model(nodes, [_fin("x", [1, 2, 7, 7])], [_fin("out", [1, c, 7, 7])], inits)
    assert kernels_from_onnx(model) == ([Kernel("conv", (2, 7, 7), out_channels=c, kernel_size=5, activation="relu6")], [])


def test_clip_other_than_0_6_is_not_fused():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Clip", ["y", "lo", "hi"], ["out"])]
    inits = [_init("w", np.ones((2, 2, 1, 1), np.float32)), _init("lo", np.float32(-1.0)), _init("hi", np.float32(1.0))]
    model = _model(nodes, [_fin("x", [1, 2, 3, 3])], [_fin("out", [1, 2, 3, 3])], inits)
    kernels, unknown = kernels_from_onnx(model)
    assert kernels[0].activation == "none" and unknown == ["Clip"]


def test_gemm_and_matmul_add_are_linear():
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["out"]),
    ]
    inits = [
        _init("w1", np.ones((32, 8), np.float32)), _init("b1", np.zeros(32, np.float32)),
        _init("w2", np.ones((32, 10), np.float32)), _init("b2", np.zeros(10, np.float32)),
    ]
    model = _model(nodes, [_fin("x", [1, 8, 4, 4])], [_fin("out", [1, 10])], inits)
    assert _run(model, (1, 8, 4, 4)).shape == (1, 10)
    assert kernels_from_onnx(model) == ([
        Kernel("global_avgpool", (8, 4, 4)),
        Kernel("linear", (8,), out_channels=32, activation="relu"),
        Kernel("linear", (32,), out_channels=10),
    ], [])


def test_residual_add_relu_concat_split_shuffle_and_pools():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["p", "parts"], ["a", "b"], axis=1),
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("Concat", ["sr", "a"], ["c"], axis=1),
        helper.make_node("Reshape", ["c", "shape5"], ["c5"]),
        helper.make_node("Transpose", ["c5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "shape4"], ["sh"]),
        helper.make_node("AveragePool", ["sh"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ReduceMean", ["ap", "axes"], ["out"], keepdims=0),
    ]
    inits = [
        _init("parts", np.array([4, 4], np.int64)), _init("shape5", np.array([1, 2, 4, 4, 4], np.int64)),
        _init("shape4", np.array([1, 8, 4, 4], np.int64)), _init("axes", np.array([-2, -1], np.int64)),
    ]
    model = _model(nodes, [_fin("x", [1, 8, 8, 8])], [_fin("out", [1, 8])], inits)
    assert _run(model, (1, 8, 8, 8)).shape == (1, 8)
    kernels, unknown = kernels_from_onnx(model)
    assert unknown == []
    assert kernels == [
        Kernel("maxpool", (8, 8, 8), kernel_size=3, stride=2),
        Kernel("split", (8, 4, 4), groups=2),
        Kernel("add", (4, 4, 4), activation="relu"),
        Kernel("concat", (8, 4, 4)),
        Kernel("channel_shuffle", (8, 4, 4), groups=2),
        Kernel("avgpool", (8, 4, 4), kernel_size=2, stride=2, padding=0),
        Kernel("global_avgpool", (8, 2, 2)),
    ]


@pytest.mark.parametrize("before, after, bits", [(False, False, 32), (True, False, 8), (False, True, 8),
                                                 (True, True, 8)])
def test_a_max_pool_next_to_activation_quantisation_runs_at_8_bits(before, after, bits, tmp_path):
    """A MaxPool after a DequantizeLinear, or whose only reader is a QuantizeLinear, reads at 8 bits: ONNX
    Runtime moves the quantisation across it and runs it on uint8 (asserted on its optimised graph)."""
    nodes, x = [], "x"
    if before:
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q0"]),
                  helper.make_node("DequantizeLinear", ["q0", "s", "z"], ["d0"])]
        x = "d0"
    nodes.append(helper.make_node("MaxPool", [x], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    y = "m"
    if after:
        nodes += [helper.make_node("QuantizeLinear", ["m", "s", "z"], ["q1"]),
                  helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["d1"])]
        y = "d1"
    model = _model(nodes, [_fin("x", [1, 8, 16, 16])], [_fin(y, [1, 8, 8, 8])],
                   [_init("s", np.float32(0.05)), _init("z", np.uint8(128))])
    kernels, unknown = kernels_from_onnx(model)
    assert unknown == []
    assert kernels == [Kernel("maxpool", (8, 16, 16), kernel_size=3, stride=2, bits=bits)]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": RNG.standard_normal((1, 8, 16, 16)).astype(np.float32)})[0].shape == (1, 8, 8, 8)
    optimised = onnx.load(str(tmp_path / "optimised.onnx")).graph.node
    producer = {o: n.op_type for n in optimised for o in n.output}
    pool = next(n for n in optimised if n.op_type == "MaxPool")
    assert (producer.get(pool.input[0]) == "QuantizeLinear") == (bits == 8)  # uint8 in: ORT's integer MaxPool


def test_torch_chunk_slices_with_computed_bounds_are_a_split():
    """torch's ``chunk`` exports Shape -> Gather -> Add -> Div -> Mul -> Slice: folded, then a split."""
    torch = pytest.importorskip("torch")
    from spaces.compress import export_onnx

    class Chunk(torch.nn.Module):
        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            return torch.cat((b, a), dim=1)

    proto = export_onnx(Chunk(), (6, 5, 5))
    assert sum(n.op_type == "Slice" for n in proto.graph.node) == 2
    assert kernels_from_onnx(proto) == ([Kernel("split", (6, 5, 5), groups=2), Kernel("concat", (6, 5, 5))], [])


def test_unmapped_operators_are_reported_sorted():
    nodes = [
        helper.make_node("Tanh", ["x"], ["s"]),
        helper.make_node("Concat", ["s", "x"], ["c"], axis=1),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("LeakyRelu", ["r"], ["l"]),
        helper.make_node("Sigmoid", ["l"], ["g"]),  # its input has two readers: not an activation of its own
        helper.make_node("Add", ["g", "l"], ["out"]),
    ]
    model = _model(nodes, [_fin("x", [1, 2, 3, 3])], [_fin("out", [1, 4, 3, 3])])
    kernels, unknown = kernels_from_onnx(model)
    assert kernels == [Kernel("concat", (4, 3, 3)), Kernel("act", (4, 3, 3), activation="relu"), Kernel("add", (4, 3, 3))]
    assert unknown == ["LeakyRelu", "Sigmoid", "Tanh"]


def test_inputs_paths_dynamic_batch_and_errors(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    w = _init("w", np.ones((2, 3, 1, 1), np.float32))
    batch = _model(nodes, [_fin("x", ["N", 3, 4, 4])], [_fin("y", ["N", 2, 4, 4])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(batch, path)
    expected = ([Kernel("conv", (3, 4, 4), out_channels=2)], [])
    assert kernels_from_onnx(path) == expected and kernels_from_onnx(str(path)) == expected
    assert batch.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"  # the caller's model is untouched
    dynamic = _model(nodes, [_fin("x", [1, 3, "H", 4])], [_fin("y", [1, 2, "H", 4])], [w])
    with pytest.raises(ValueError, match="dynamic dimension 2"):
        kernels_from_onnx(dynamic)
    with pytest.raises(ValueError, match="is not a file"):
        kernels_from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="model=42 is not allowed"):
        kernels_from_onnx(42)


def test_reading_needs_no_torch(tmp_path):
    path = tmp_path / "q.onnx"
    onnx.save(_qdq_conv(TensorProto.INT8, 127), path)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        from latency_models import kernels_from_onnx
        kernels, unknown = kernels_from_onnx({str(path)!r})
        assert [k.bits for k in kernels] == [8] and unknown == [], (kernels, unknown)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_onnxruntime_qdq_quantisation_of_a_space_model_reads_as_int8(tmp_path):
    """ORT's own ``quantize_static`` (QDQ, per channel): every conv and the classifier read back at 8 bits with
    the shapes of the float model. ORT folds ReLUs into the quantisation ranges (activations then read
    'none') and may reorder independent branches."""
    pytest.importorskip("torch")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from spaces import get_space
    from spaces.compress import export_onnx

    space = get_space("shufflenet", input_size=16)
    cand = space.candidate(repeats=[1, 2, 1])
    export_onnx(space.build(cand), space.input_shape, str(tmp_path / "f.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": RNG.standard_normal((1, *space.input_shape)).astype(np.float32)}] * 2)

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    kernels, unknown = kernels_from_onnx(tmp_path / "q.onnx")
    expected = space.kernels(cand)
    assert unknown == []
    # ORT reorders independent branches, so compare as multisets
    assert sorted((k.op, k.input_shape, k.out_channels, k.groups, k.stride) for k in kernels) == \
        sorted((k.op, k.input_shape, k.out_channels, k.groups, k.stride) for k in expected)
    assert {k.bits for k in kernels if k.op in ("conv", "linear")} == {8}


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "resnet18", "squeezenet1_0"])
def test_torchvision_models_read_completely(name):
    """Other people's CNNs (chunk-based ShuffleNet, residual ReLU adds, fire-module concats) map fully; the
    kernels' parameters are the export's Conv/Gemm initializers."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from spaces.compress import export_onnx

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads per process oversubscribe the shared cores (10x slower)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)(weights=None, num_classes=10)
        proto = export_onnx(model, (3, 32, 32))
    finally:
        torch.set_num_threads(threads)
    kernels, unknown = kernels_from_onnx(proto)
    assert unknown == []
    sizes = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Identity"}
    expected = sum(sizes[alias.get(i, i)] for n in proto.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:])
    assert sum(k.params for k in kernels) == expected
    assert sum(k.op == "conv" for k in kernels) == sum(n.op_type == "Conv" for n in proto.graph.node)


def test_squeeze_excitation_hardswish_and_swish_as_pytorch_exports_them():
    """MobileNetV3 / EfficientNet building blocks: fused activations, the excitation's channel-wise ``Mul``
    (``scale``), and activations of their own (``act``); nothing reported unknown."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from spaces.compress import export_onnx

    class Blocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False, padding=1), nn.BatchNorm2d(8), nn.Hardswish())
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, padding=1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
            self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
            self.pw = nn.Conv2d(8, 8, 1)
            self.head = nn.Linear(8, 16)
            self.out = nn.Linear(16, 10)

        def forward(self, x):
            x = self.dw(self.stem(x))
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            x = x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))  # squeeze-and-excitation
            y = torch.sigmoid(self.pw(x))
            x = nn.functional.hardswish(x + y)
            x = nn.functional.silu(nn.functional.max_pool2d(x, 2))  # an activation of its own
            x = nn.functional.hardswish(self.head(x.mean((2, 3))))
            return self.out(x)

    proto = export_onnx(Blocks().eval(), (3, 8, 8))
    assert kernels_from_onnx(proto) == ([
        Kernel("conv", (3, 8, 8), out_channels=8, kernel_size=3, activation="hardswish"),
        Kernel("conv", (8, 8, 8), out_channels=8, kernel_size=3, groups=8, activation="swish"),
        Kernel("global_avgpool", (8, 8, 8)),
        Kernel("conv", (8, 1, 1), out_channels=4, activation="relu"),
        Kernel("conv", (4, 1, 1), out_channels=8, activation="hardsigmoid"),
        Kernel("scale", (8, 8, 8)),
        Kernel("conv", (8, 8, 8), out_channels=8, activation="sigmoid"),
        Kernel("add", (8, 8, 8), activation="hardswish"),
        Kernel("maxpool", (8, 8, 8), kernel_size=2, stride=2, padding=0),
        Kernel("act", (8, 4, 4), activation="swish"),
        Kernel("global_avgpool", (8, 4, 4)),
        Kernel("linear", (8,), out_channels=16, activation="hardswish"),
        Kernel("linear", (16,), out_channels=10),
    ], [])


@pytest.mark.parametrize("activation", ["hardswish", "hardsigmoid", "sigmoid", "swish"])
@pytest.mark.parametrize("bits", [32, 16, 8])
def test_kernel_graphs_with_the_new_activations_read_back(activation, bits):
    from latency_models import kernel_graph

    for k in (Kernel("conv", (8, 6, 6), out_channels=8, kernel_size=3, groups=8, bits=bits, activation=activation),
              Kernel("linear", (16,), out_channels=10, bits=bits, activation=activation)):
        assert kernels_from_onnx(kernel_graph(k)) == ([k], [])
    for op in ("act", "scale"):  # weightless kernels read back at 32 bits
        k = Kernel(op, (8, 6, 6), activation=activation)
        assert kernels_from_onnx(kernel_graph(k)) == ([k], [])
    with pytest.raises(ValueError, match="op='act' needs an activation"):
        Kernel("act", (8, 6, 6))


@pytest.mark.parametrize("name,blocks", [("mobilenet_v3_small", 9), ("efficientnet_b0", 16)])
def test_torchvision_squeeze_excitation_models_are_read_whole(name, blocks):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from spaces.compress import export_onnx

    torch.manual_seed(0)
    proto = export_onnx(getattr(torchvision.models, name)(weights=None, num_classes=10).eval(), (3, 32, 32))
    kernels, unknown = kernels_from_onnx(proto)
    assert unknown == []
    assert sum(k.op == "scale" for k in kernels) == blocks
    assert sum(k.op == "conv" for k in kernels) == sum(n.op_type == "Conv" for n in proto.graph.node)
