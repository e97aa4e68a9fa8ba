"""Low-rank factorisation by truncated SVD."""

from __future__ import annotations

import pytest
import torch
from compression_nets import TinyNet

from spaces.compress import factorize_lowrank
from spaces.compress import lowrank_eligible


def test_full_rank_reproduces_every_layer():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(4, 1, 8, 8)
    full = factorize_lowrank(model, 1.0)
    assert {"fc", "head.0", "block1.expand.0", "shuffle.merge.0"} <= set(lowrank_eligible(model))
    assert "stem.0" not in lowrank_eligible(model) and "block1.dw.0" not in lowrank_eligible(model)
    assert isinstance(full.fc, torch.nn.Sequential) and isinstance(full.head[0], torch.nn.Sequential)
    with torch.no_grad():
        torch.testing.assert_close(full(x), model(x), atol=1e-4, rtol=1e-4)


def test_truncated_rank_is_the_best_approximation():
    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 12)
    net = torch.nn.Sequential(layer)
    low = factorize_lowrank(net, {"0": 0.25})
    first, second = low[0][0], low[0][1]
    assert first.weight.shape == (3, 20) and second.weight.shape == (12, 3)
    approx = (second.weight @ first.weight).detach()
    s = torch.linalg.svdvals(layer.weight.detach().double())
    err = torch.linalg.norm(approx.double() - layer.weight.detach().double())
    assert float(err) == pytest.approx(float(s[3:].norm()), rel=1e-4)  # Eckart-Young
    torch.testing.assert_close(second.bias, layer.bias)


def test_strided_1x1_conv_keeps_its_stride():
    conv = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, stride=2))
    x = torch.randn(1, 8, 6, 6)
    full = factorize_lowrank(conv, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(full(x), conv(x), atol=1e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'stem.0', which is not a 1x1 Conv2d or Linear"):
        factorize_lowrank(TinyNet(), {"stem.0": 0.5})
    with pytest.raises(ValueError, match=r"rank ratio 0.0 for 'fc' must be in \(0, 1\]"):
        factorize_lowrank(TinyNet(), {"fc": 0.0})
