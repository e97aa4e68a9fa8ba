"""CReLU (transferred filters) in the student spaces: kernels, build, export, predictor vocabulary, opt-in."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from latency_models import Kernel, kernel_graph, kernels_from_onnx
from spaces import get_space


@pytest.mark.parametrize("name", ["mobilenet", "shufflenet"])
def test_crelu_halves_its_convolutions_and_exports_what_it_plans(name, one_torch_thread):
    space = get_space(name, input_size=16, num_classes=10)
    base = space.candidate()
    assert "crelu" not in base.genes and space.candidate(crelu=0) == base  # off by default, same candidates
    for n in (1, 3):
        cand = space.candidate(crelu=n)
        kernels = space.kernels(cand)
        crelus = [i for i, k in enumerate(kernels) if k.op == "crelu"]
        assert len(crelus) == n
        base_kernels = space.kernels(base)
        for i in crelus:  # the convolution before it learns half the filters: half its weights and MACs
            conv = kernels[i - 1]
            full = next(k for k in base_kernels if k.op == "conv" and k.input_shape == conv.input_shape
                        and k.kernel_size == conv.kernel_size and k.out_channels == 2 * conv.out_channels)
            assert conv.macs * 2 == full.macs and (conv.params - conv.out_channels) * 2 == full.params - full.out_channels
            assert kernels[i].output_shape == full.output_shape and kernels[i].activation == full.activation
        assert space.stats(cand).macs < space.stats(base).macs
        # the float and the int8 exports execute exactly the planned kernels
        assert kernels_from_onnx(space.onnx(cand))[0] == kernels
        int8 = space.candidate(crelu=n, bits=[8] * len(base.bits))
        assert kernels_from_onnx(space.onnx(int8))[0] == space.kernels(int8)
    model = space.build(space.candidate(crelu=1))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stem = model.stem if name == "mobilenet" else model[0]
        y = stem(x)
        half = y.shape[1] // 2
        pre = stem.bn(stem.conv(x))
        torch.testing.assert_close(y[:, :half], stem.act(pre))  # concat(y, -y), then the activation
        torch.testing.assert_close(y[:, half:], stem.act(-pre))
        proto = space.onnx(space.candidate(crelu=1), model=model)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(sess.run(None, {"input": x[:1].numpy()})[0], model(x[:1]).numpy(), atol=1e-4,
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="crelu=5"):
        space.candidate(crelu=5)


@pytest.mark.parametrize("name", ["mobilenet", "shufflenet"])
def test_crelu_is_sampled_only_when_asked(name):
    space = get_space(name, input_size=16, num_classes=10)
    plain = [space.sample(np.random.default_rng(s)) for s in range(6)]
    assert all("crelu" not in c.genes for c in plain)
    asked = [space.sample(np.random.default_rng(s), genes=("crelu",)) for s in range(12)]
    assert {c.genes.get("crelu", 0) for c in asked} >= {0, 1, 2}
    # the draws before it are those of the plain stream: same architecture otherwise
    assert {k: v for k, v in asked[0].genes.items() if k != "crelu"} == dict(plain[0].genes)
    with pytest.raises(ValueError, match="genes=\\('depth',\\)"):
        space.sample(np.random.default_rng(0), genes=("depth",))


@pytest.mark.parametrize("bits", [32, 8])
def test_crelu_kernel_graph_reads_back_and_runs(bits):
    k = Kernel("crelu", (8, 6, 6), activation="relu6", bits=bits)
    assert k.output_shape == (16, 6, 6) and k.macs == 16 * 36
    read, unknown = kernels_from_onnx(kernel_graph(k))
    assert not unknown and read == [Kernel("crelu", (8, 6, 6), activation="relu6")]  # weightless: float32
