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
