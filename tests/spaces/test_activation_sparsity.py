"""Activation sparsity: zeros after each ReLU and the MACs whose input is zero, against brute force."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spaces import builtin_teacher, get_space
from spaces.compress import ACTIVATION_SPARSITY_NOTE, activation_sparsity


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)  # depthwise
        self.conv3 = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act1(self.conv1(x)))
        x = F.relu6(self.conv3(torch.relu(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_counts_equal_brute_force():
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(5, 3, 10, 10)
    res = activation_sparsity(net, x, batch_size=2)
    with torch.no_grad():
        a1 = torch.relu(net.conv1(x))
        c2 = net.conv2(a1)
        a2 = torch.relu(c2)
        a3 = F.relu6(net.conv3(a2))
        fc_in = a3.mean(dim=(2, 3))
    assert [r["name"] for r in res["relu"]] == ["act1", "relu", "relu6"]
    for row, a in zip(res["relu"], (a1, a2, a3)):
        assert row["zero_fraction"] == pytest.approx(float((a == 0).sum()) / a.numel(), abs=1e-12)
        assert row["elements"] == a[0].numel()
    by_name = {r["name"]: r for r in res["layers"]}
    # conv1: dense 3x3 on the raw input: no exact zeros
    assert by_name["conv1"]["zero_input_macs"] == 0 and by_name["conv1"]["macs"] == 8 * 100 * 3 * 9
    # conv2, depthwise: each output channel reads its own input channel's 3x3 window (padding not counted)
    zero = (a1 == 0).float()
    per_channel = torch.stack([F.unfold(zero[:, c:c + 1], 3, padding=1, stride=2).sum((1,)) for c in range(8)], 1)
    assert by_name["conv2"]["zero_input_macs"] == pytest.approx(float(per_channel.sum()) / 5)
    assert by_name["conv2"]["macs"] == 8 * 25 * 9
    # conv3, 1x1: every zero input feeds all 6 output channels
    assert by_name["conv3"]["zero_input_macs"] == pytest.approx(float((a2 == 0).sum()) * 6 / 5)
    assert by_name["fc"]["zero_input_macs"] == pytest.approx(float((fc_in == 0).sum()) * 4 / 5)
    total = sum(r["macs"] for r in res["layers"])
    assert res["macs"] == total
    assert res["skippable_fraction"] == pytest.approx(sum(r["zero_input_macs"] for r in res["layers"]) / total)
    assert res["images"] == 5 and res["note"] == ACTIVATION_SPARSITY_NOTE
    json.dumps(res)  # JSON-ready


def test_built_models_and_data_forms(one_torch_thread):
    torch.manual_seed(0)
    teacher = builtin_teacher(width=8).eval()
    x = torch.randn(12, 3, 16, 16)
    res = activation_sparsity(teacher, x, max_images=7)
    assert res["images"] == 7 and len(res["relu"]) == 6 and len(res["layers"]) == 7
    assert 0.2 < res["zero_fraction"] < 0.8  # random BatchNorm'd ReLU outputs: about half zero
    again = activation_sparsity(teacher, [(x[:4], None), (x[4:7], None)])
    assert again["zero_fraction"] == pytest.approx(res["zero_fraction"])
    space = get_space("mobilenet", input_size=16, num_classes=10)
    student = space.build(space.candidate(width=0.35))
    out = activation_sparsity(student, torch.rand(3, 3, 16, 16))
    assert {r["name"] for r in out["layers"]} == set(space.module_bits(space.candidate(width=0.35)))
    with pytest.raises(ValueError, match="data is empty"):
        activation_sparsity(teacher, torch.zeros(0, 3, 16, 16))
