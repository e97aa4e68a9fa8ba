"""Unstructured pruning, the sparsity report and the one-shot / gradual schedules."""

from __future__ import annotations

import pytest
import torch
from compression_nets import TinyNet

from spaces.compress import gradual_prune, prune_unstructured, sparsity_report


def _linear_net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(1, 13, dtype=torch.float32).reshape(3, 4))
        net[2].weight.copy_(torch.tensor([[100.0, 200.0, 300.0], [400.0, 500.0, 600.0]]))
    return net


def test_layer_and_global_scope_zero_the_right_weights():
    net = prune_unstructured(_linear_net(), 0.5, scope="layer")
    assert (net[0].weight == 0).sum() == 6 and (net[2].weight == 0).sum() == 3
    assert net[0].weight.flatten()[:6].eq(0).all() and net[0].weight.flatten()[6:].ne(0).all()
    glob = prune_unstructured(_linear_net(), 0.5, scope="global")
    # The 9 smallest of the 18 weights (1..9) are all in layer 0.
    assert glob[0].weight.flatten()[:9].eq(0).all() and glob[0].weight.flatten()[9:].ne(0).all()
    assert (glob[2].weight != 0).all()
    # 50 % of 18 weights is 9 zeros.
    assert sparsity_report(glob)["zeros"] == 9


def test_sparsity_report_numbers():
    net = prune_unstructured(_linear_net(), 0.5, scope="layer")
    rep = sparsity_report(net)
    assert rep["weights"] == 18 and rep["zeros"] == 9 and rep["sparsity"] == pytest.approx(0.5)
    assert rep["dense_bytes"] == 18 * 4
    # CSR-like: 8 bytes per non-zero (value + column) + 4 bytes per row pointer (rows + 1 per layer).
    assert rep["sparse_bytes"] == 8 * 9 + 4 * (3 + 1) + 4 * (2 + 1)
    assert rep["layers"]["0"]["sparsity"] == pytest.approx(0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="amount=1.0 must be a number in"):
        prune_unstructured(_linear_net(), 1.0)
    with pytest.raises(ValueError, match="scope='row' is not supported"):
        prune_unstructured(_linear_net(), 0.2, scope="row")
    with pytest.raises(ValueError, match="steps=0 must be a positive integer"):
        gradual_prune(_linear_net(), 0.5, 0, kind="unstructured")
    with pytest.raises(ValueError, match="example_input=None"):
        gradual_prune(_linear_net(), 0.5, 2)


def test_gradual_unstructured_keeps_masks_through_fine_tuning_and_rewinds():
    torch.manual_seed(0)
    model = TinyNet()
    calls = []

    def fine_tune(m):
        calls.append(sparsity_report(m)["sparsity"])
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01)  # a "training step" that would revive pruned weights
        return None

    pruned = gradual_prune(model, 0.8, 3, fine_tune, kind="unstructured", scope="layer")
    assert len(calls) == 3 and calls[0] < calls[1] < calls[2]
    assert sparsity_report(pruned)["sparsity"] == pytest.approx(0.8, abs=0.01)
    ticket = gradual_prune(model, 0.5, 2, None, rewind=True, kind="unstructured")
    w0, w1 = model.head[0].weight, ticket.head[0].weight
    alive = w1 != 0
    assert torch.equal(w1[alive], w0[alive])  # surviving weights are the initial ones


def test_gradual_structured_matches_the_target_and_rewinds():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, 1, 8, 8)
    seen = []

    def fine_tune(m):
        seen.append(m.head[0].out_channels)
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(1.5)
        return m

    pruned = gradual_prune(model, 0.5, 3, fine_tune, rewind=True, example_input=x)
    assert seen[0] > seen[1] > seen[2] == 16
    assert pruned.head[0].out_channels == 16
    # Rewound to the initial weights before each fine-tune (the last one multiplied everything by 1.5): each
    # kept stem filter (its single input channel is never pruned) is 1.5 times an original stem filter.
    for filt in pruned.stem[0].weight:
        assert any(torch.allclose(filt, 1.5 * orig, atol=1e-6) for orig in model.stem[0].weight)
    without = gradual_prune(model, 0.5, 3, fine_tune, rewind=False, example_input=x)
    assert not all(any(torch.allclose(f, 1.5 * o, atol=1e-6) for o in model.stem[0].weight) for f in without.stem[0].weight)
    one_shot = gradual_prune(model, 0.5, 1, example_input=x)
    assert one_shot.head[0].out_channels == 16
