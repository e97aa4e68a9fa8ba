"""Structured pruning: channels really removed, outputs consistent with residuals, groups, shuffle, concat."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from compression_nets import TinyNet, conv_linear_names

from spaces.compress import Importance, export_onnx, prune_structured, register_importance
from spaces.compress import list_importances

TORCHVISION = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10),
    "shufflenet_v2": lambda: torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10),
}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    return model.eval()


def _silence_low_half(model: torch.nn.Module) -> torch.nn.Module:
    """Zero gamma and beta of the lower half of each half of every BatchNorm's channels (channel i with
    i mod C/2 < C/4): those channels output 0. Both halves alike, as grouped convolutions (2 groups) and the
    channel shuffle couple position j of each half: the silent channels form whole coupled classes."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            half = m.num_features // 2
            silent = torch.arange(m.num_features) % half < half // 2
            m.weight.data[silent] = 0.0
            m.bias.data[silent] = 0.0
    return model


def _onnx_run(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, int]:
    proto = export_onnx(model, tuple(x.shape[1:]))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0], len(proto.SerializeToString())


@pytest.mark.parametrize("name", ["tiny", *TORCHVISION])
def test_ratio_zero_is_identity_and_half_really_removes_channels(name):
    torch.manual_seed(0)
    model = _randomise_bn(TinyNet() if name == "tiny" else TORCHVISION[name]())
    shape = (1, 8, 8) if name == "tiny" else (3, 32, 32)
    x = torch.randn(2, *shape)
    same = prune_structured(model, 0.0, example_input=x)
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x), atol=0, rtol=0)
    pruned = prune_structured(model, 0.5, example_input=x)
    assert _params(pruned) < 0.6 * _params(model)
    for m in pruned.modules():  # module attributes agree with the tensors
        if isinstance(m, torch.nn.Conv2d):
            assert m.weight.shape[0] == m.out_channels and m.weight.shape[1] * m.groups == m.in_channels
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean.shape[0] == m.num_features == m.weight.shape[0]
    out, size = _onnx_run(pruned, x[:1])
    with torch.no_grad():
        np.testing.assert_allclose(out, pruned(x[:1]).numpy(), atol=1e-4, rtol=1e-4)
    _, full = _onnx_run(model, x[:1])
    assert size < 0.6 * full
    assert _params(model) == _params(TinyNet() if name == "tiny" else TORCHVISION[name]())  # input untouched


@pytest.mark.parametrize("name", ["tiny", "resnet18", "mobilenet_v2"])
def test_removed_channels_were_silent_so_outputs_are_unchanged(name):
    """Channels whose BatchNorm outputs zero are exactly those bn_scale removes: same logits after pruning."""
    torch.manual_seed(1)
    model = _silence_low_half(_randomise_bn(TinyNet() if name == "tiny" else TORCHVISION[name]()))
    shape = (1, 8, 8) if name == "tiny" else (3, 32, 32)
    x = torch.randn(3, *shape)
    pruned = prune_structured(model, 0.5, importance="bn_scale", example_input=x)
    assert _params(pruned) < 0.7 * _params(model)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-4, rtol=1e-4)


def test_residual_depthwise_group_shuffle_and_concat_shapes():
    model = _randomise_bn(TinyNet())
    x = torch.randn(2, 1, 8, 8)
    pruned = prune_structured(model, 0.5, example_input=x)
    # The residual stream (stem + both projections) is one group; it feeds a grouped conv (2 groups), which
    # couples position j of both halves, so the stream loses the same positions in both: 16 -> 8, 2 groups of 4.
    stream = {pruned.stem[0].out_channels, pruned.block1.project[0].out_channels, pruned.block2.project[0].out_channels}
    assert stream == {8}
    group = pruned.shuffle.group[0]
    assert (group.groups, group.in_channels, group.out_channels, tuple(group.weight.shape[:2])) == (2, 8, 8, (8, 4))
    kept = [i for i in range(16) if any(torch.equal(model.stem[0].weight[i], w) for w in pruned.stem[0].weight)]
    assert [i % 8 for i in kept[:4]] == [i % 8 for i in kept[4:]]  # the same in-group positions in both groups
    # Depthwise convolutions follow their expansion and stay depthwise.
    for block in (pruned.block1, pruned.block2):
        dw = block.dw[0]
        assert dw.groups == dw.in_channels == dw.out_channels == block.expand[0].out_channels == 16
    # The shuffle's reshape (2 groups of C/2, C/2 from the tensor's size) follows; the concat consumer too.
    assert pruned.shuffle.merge[0].in_channels == 8 + pruned.shuffle.side[0].out_channels
    assert pruned.fc.out_features == 10
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)


@pytest.mark.parametrize("importance", list_importances())
def test_importances_choose_different_but_valid_channels(importance):
    model = _randomise_bn(TinyNet())
    x = torch.randn(4, 1, 8, 8)
    pruned = prune_structured(model, {"head.0": 0.5, "block1.expand.0": 0.25}, importance=importance,
                              example_input=x, round_to=4)
    assert pruned.head[0].out_channels == 16 and pruned.fc.in_features == 16
    assert pruned.block1.expand[0].out_channels == 24 and pruned.block2.expand[0].out_channels == 32
    with torch.no_grad():
        assert pruned(x).shape == (4, 10)


def test_l1_keeps_the_largest_filters():
    model = TinyNet().eval()
    with torch.no_grad():
        w = model.head[0].weight
        w.mul_(0.01)
        w[[3, 7, 11]] *= 1000.0
    pruned = prune_structured(model, {"head.0": 0.8}, importance="l1", example_input=torch.randn(1, 1, 8, 8))
    kept = pruned.head[0].weight
    assert kept.shape[0] == 6  # round(0.8 * 32) = 26 of 32 removed
    big = {int(i) for i in torch.argsort(model.head[0].weight.abs().sum(dim=(1, 2, 3)), descending=True)[:6]}
    for i in big:
        assert any(torch.equal(model.head[0].weight[i], k) for k in kept)


def test_custom_importance_is_registered_and_used():
    @register_importance("test_reverse_l1")
    class ReverseL1(Importance):
        def scores(self, module):
            if isinstance(module, torch.nn.Conv2d):
                return 1.0 / module.weight.detach().abs().sum(dim=(1, 2, 3))
            return None

    assert "test_reverse_l1" in list_importances()
    with pytest.raises(ValueError, match="already registered"):
        register_importance("l1")(ReverseL1)
    model = TinyNet().eval()
    pruned = prune_structured(model, {"head.0": 0.5}, importance="test_reverse_l1", example_input=torch.randn(1, 1, 8, 8))
    norms = model.head[0].weight.abs().sum(dim=(1, 2, 3))
    assert pruned.head[0].weight.abs().sum(dim=(1, 2, 3)).max() <= norms.median() + 1e-6


def test_bad_arguments_are_refused():
    model = TinyNet()
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"ratios=0.95 must be a number in \[0, 0.9\]"):
        prune_structured(model, 0.95, example_input=x)
    with pytest.raises(ValueError, match="'pool', which is not a Conv2d or Linear"):
        prune_structured(model, {"pool": 0.5}, example_input=x)
    with pytest.raises(ValueError, match="importance='random' is not registered"):
        prune_structured(model, 0.5, importance="random", example_input=x)
    assert set(conv_linear_names(model)) >= {"stem.0", "fc"}
