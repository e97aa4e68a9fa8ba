"""``space.onnx(candidate)`` on every registered space: int8 candidates run int8 kernels in ONNX Runtime."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from spaces import get_space, list_spaces


@pytest.mark.parametrize("name", list_spaces())
def test_int8_candidate_exports_to_qlinearconv(name, tmp_path):
    space = get_space(name)
    default = space.candidate()
    cand = space.candidate(**dict(default.genes), bits=(8,) * len(default.bits))
    bits = space.module_bits(cand)
    assert bits and set(bits.values()) <= {8, 32}
    model = space.build(cand)
    x = torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(0))
    proto = space.onnx(cand, model=model, calibration=[x])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x[:1].numpy()})[0]
    assert out.shape == (1, space.num_classes) and np.isfinite(out).all()
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    int8_convs = sum(1 for n, b in bits.items() if b == 8 and isinstance(model.get_submodule(n), torch.nn.Conv2d))
    assert ops["QLinearConv"] == int8_convs
    float32 = space.onnx(space.candidate(**dict(cand.genes)))
    assert not any(n.op_type == "QuantizeLinear" for n in float32.graph.node)


def _conv_biases(proto: onnx.ModelProto) -> list[np.ndarray]:
    """The bias constant of every convolution (through a Cast or a DequantizeLinear), as arrays."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    out = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 2:
            name = node.input[2]
            while name in producer and producer[name].op_type in ("Cast", "DequantizeLinear"):
                name = producer[name].input[0]
            out.append(inits[name])
    return out


@pytest.mark.parametrize("name", ["mobilenet", "shufflenet", "fbnet"])
def test_untrained_export_has_distinct_biases_so_float16_stays_blocked(name, tmp_path):
    """An untrained candidate exported for timing folds drawn BatchNorm statistics into its convolutions: distinct
    biases, as a trained model has. With zero biases ONNX Runtime shares the equal ones and a float16 layer reads
    its shared bias through a runtime Cast, which keeps that convolution off the channel-blocked path."""
    from latency_models import nchwc_layout

    space = get_space(name, input_size=64)
    default = space.candidate()
    cand = space.candidate(**dict(default.genes), bits=(16,) * len(default.bits))
    proto = space.onnx(cand)
    biases = _conv_biases(proto)
    assert len(biases) >= 4 and all(b.any() for b in biases)
    by_len = collections.defaultdict(list)
    for b in biases:
        by_len[b.size].append(b.astype(np.float32).tobytes())
    assert all(len(set(v)) == len(v) for v in by_len.values())  # no two equal constants to share
    if nchwc_layout() is None:
        return  # no blocked layout in this ONNX Runtime build: nothing more to check
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    produced_by_cast = {o for n in graph.node if n.op_type == "Cast" for o in n.output}
    assert not [n.name for n in graph.node if n.op_type in ("Conv", "FusedConv") and len(n.input) > 2
                and n.input[2] in produced_by_cast]
