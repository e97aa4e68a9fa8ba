"""Weight inheritance from the student spaces' supernets (``spaces.Supernet``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latency_models import kernels_from_onnx
from spaces import SUPERNET_SPACES, Supernet, get_space, supports_supernet

#: Small options so that the largest networks run fast: 16x16 grey images, 10 classes.
OPTIONS = {"num_classes": 10, "input_size": 16, "in_channels": 1}


def _space(name: str):
    return get_space(name, **OPTIONS)


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


@pytest.mark.parametrize("name", sorted(SUPERNET_SPACES))
def test_full_subnetwork_reproduces_the_largest_network(name: str) -> None:
    space = _space(name)
    torch.manual_seed(3)
    net = Supernet(space, seed=7)
    largest = net.largest_candidates[0]
    reference = space.build(largest)  # other weights than the supernet's initial ones
    _randomise_bn(reference)
    state = net.state_dict()
    state.update(reference.state_dict())
    net.load_state_dict(state)
    x = _x()
    with torch.no_grad():
        expected = reference.eval()(x)
        extracted = net.extract(largest)(x)
        dynamic = net.forward(largest, x, train=False)
    torch.testing.assert_close(extracted, expected, rtol=0, atol=0)
    torch.testing.assert_close(dynamic, expected, rtol=1e-5, atol=1e-5)
    assert [n for n, _ in net.extract(largest).named_modules()] == [n for n, _ in reference.named_modules()]


@pytest.mark.parametrize("name", sorted(SUPERNET_SPACES))
def test_smaller_subnetworks_inherit_slices_run_and_export(name: str, tmp_path) -> None:
    space = _space(name)
    net = Supernet(space)
    _randomise_bn_tensors(net)
    rng = np.random.default_rng(0)
    cands = [net.smallest_candidate, *(space.sample(rng) for _ in range(3))]
    x = _x()
    for cand in cands:
        model = net.extract(cand)
        assert type(model) is type(space.build(cand))
        with torch.no_grad():
            out = model(x)
            dynamic = net.forward(cand, x, train=False)
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        torch.testing.assert_close(dynamic, out, rtol=1e-5, atol=1e-5)
        # the inherited tensors are leading slices / centre crops of the shared ones
        for key, value in model.state_dict().items():
            shared = net.tensors[key]
            if value.dim() == 1:
                torch.testing.assert_close(value, shared[:len(value)])
        # same export and kernels as the space's own model
        proto = space.onnx(cand, model=model)
        assert kernels_from_onnx(proto)[0] == space.kernels(cand)
    assert space.stats(net.smallest_candidate).macs < space.stats(net.largest_candidates[0]).macs / 10


def _randomise_bn_tensors(net: Supernet) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in net.tensors.items():
            if key.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif key.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))


def test_kernel_centre_crop_and_grouped_block_diagonal() -> None:
    space = get_space("fbnet", **OPTIONS)
    net = Supernet(space)
    ops = ["k3_e1_g2"] + ["k5_e6"] * 21
    cand = space.candidate(ops=ops)
    model = net.extract(cand)
    dw = model.get_submodule("blocks.0.dw.conv").weight
    torch.testing.assert_close(dw, net.tensors["blocks.0.dw.conv.weight"][:dw.shape[0], :, 1:4, 1:4])
    expand = model.get_submodule("blocks.0.expand.conv")
    assert expand.groups == 2
    dense = net.tensors["blocks.0.expand.conv.weight"]
    co, ci = expand.weight.shape[0] // 2, expand.weight.shape[1]
    torch.testing.assert_close(expand.weight[:co], dense[:co, :ci])
    torch.testing.assert_close(expand.weight[co:], dense[co:2 * co, ci:2 * ci])


@pytest.mark.parametrize("name", sorted(SUPERNET_SPACES))
def test_sorting_channels_keeps_the_function_and_orders_by_importance(name: str) -> None:
    space = _space(name)
    net = Supernet(space, seed=2)
    _randomise_bn_tensors(net)
    largest = net.largest_candidates[0]
    x = _x()
    with torch.no_grad():
        before = net.extract(largest)(x)
    assert net.sort_channels() > 0
    with torch.no_grad():
        after = net.extract(largest)(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    key = next(k for k in net.tensors if k.endswith(".project.conv.weight") or k.endswith(".pw2.conv.weight"))
    norms = net.tensors[key].detach().abs().sum(dim=(0, 2, 3))
    if net.groups.get(key, 1) == 1:
        assert bool((norms[:-1] >= norms[1:]).all())


def test_dynamic_forward_trains_the_shared_tensors() -> None:
    space = _space("mobilenet")
    net = Supernet(space)
    cand = space.sample(np.random.default_rng(1))
    net.forward(cand, _x(8)).square().mean().backward()
    grads = [t.grad for t in net.parameters()]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert net.tensors["classifier.weight"].grad is not None


def test_prune_space_has_no_supernet() -> None:
    from spaces import builtin_teacher

    prune = get_space("prune", teacher=builtin_teacher(in_channels=1, num_classes=10), input_size=16, in_channels=1,
                      num_classes=10)
    assert not supports_supernet(prune)
    with pytest.raises(ValueError, match="has no supernet"):
        Supernet(prune)


def test_state_dict_round_trip_and_mismatch() -> None:
    space = _space("shufflenet")
    a, b = Supernet(space, seed=0), Supernet(space, seed=1)
    b.load_state_dict(a.state_dict())
    for k in a.tensors:
        torch.testing.assert_close(a.tensors[k], b.tensors[k])
    bad = a.state_dict()
    bad.pop("stem.conv.weight")
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict(bad)
