"""`fbnet` against the spec in docs/fbnet-space.md, with a parameter formula written from the spec alone."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from spaces import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPS = ["k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"]


def spec_params(ops: list[str], setting: str, num_classes: int, in_channels: int = 3) -> int:
    """Learnable parameters of the spec's network: conv weights (no bias), BatchNorm weight+bias, FC."""
    blocks = [1, 4, 4, 4, 4, 4, 1]
    widths = [16, 24, 32, 64, 112, 184, 352]
    strides = {"cifar": [1, 1, 2, 2, 1, 2, 1], "imagenet": [1, 2, 2, 2, 1, 2, 1]}[setting]
    head = {"cifar": 1504, "imagenet": 1984}[setting]

    def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> int:
        return cout * (cin // groups) * k * k + 2 * cout

    total = conv_bn(in_channels, 16, 3)
    cin, i = 16, 0
    for n, cout, s0 in zip(blocks, widths, strides):
        for j in range(n):
            s, op = (s0 if j == 0 else 1), ops[i]
            i += 1
            if op == "skip":
                if not (cin == cout and s == 1):
                    total += conv_bn(cin, cout, 1)
            else:
                k, e = int(op[1]), int(op[4])
                g = 2 if op.endswith("_g2") else 1
                hidden = cin * e
                total += conv_bn(cin, hidden, 1, g) + conv_bn(hidden, hidden, k, hidden) + conv_bn(hidden, cout, 1, g)
            cin = cout
    return total + conv_bn(352, head, 1) + head * num_classes + num_classes


def test_formula_golden_value():
    # all k3_e1 in the CIFAR setting, worked out by hand for the stem and the first block:
    # stem 3*16*9 + 32 = 464; block 0 (16->16, e1): 16*16+32 + 16*9+32 + 16*16+32 = 752
    ops = ["k3_e1"] * 22
    assert spec_params(ops[:1] + ["skip"] * 21, "cifar", 100) - spec_params(["skip"] * 22, "cifar", 100) == 752
    assert spec_params(["skip"] * 22, "cifar", 100) > 464


@pytest.mark.parametrize("setting", ["cifar", "imagenet"])
def test_parameter_count_equals_the_spec_on_random_op_lists(setting):
    space = get_space("fbnet", setting=setting)
    rng = np.random.default_rng(2021)
    op_lists = [list(rng.choice(OPS, size=22)) for _ in range(60)]
    op_lists += [[op] * 22 for op in OPS]  # every choice everywhere
    for ops in op_lists:
        model = space.build(space.candidate(ops=ops))
        got = sum(p.numel() for p in model.parameters())
        assert got == spec_params(ops, setting, space.num_classes), ops


def test_setting_defaults_and_options():
    cifar, imagenet = get_space("fbnet"), get_space("fbnet", setting="imagenet")
    assert cifar.options == {"setting": "cifar", "num_classes": 100, "input_size": 32, "in_channels": 3, "channel_multiple": 8}
    assert (imagenet.num_classes, imagenet.input_size) == (1000, 224)
    ops = ["k3_e6"] * 22
    k_cifar = cifar.kernels(cifar.candidate(ops=ops))
    k_imagenet = imagenet.kernels(imagenet.candidate(ops=ops))
    assert k_cifar[0].stride == 1 and k_imagenet[0].stride == 2
    assert k_cifar[-3].out_channels == 1504 and k_imagenet[-3].out_channels == 1984
    with pytest.raises(ValueError, match="setting='mnist'.*cifar, imagenet"):
        get_space("fbnet", setting="mnist")


def test_block_structure_follows_the_spec():
    space = get_space("fbnet")
    ops = ["k5_e1_g2", "skip"] + ["k3_e3"] * 20
    kernels = space.kernels(space.candidate(ops=ops))
    # stem, then block 0: grouped 1x1, shuffle, depthwise 5x5, grouped 1x1 (no activation), residual add
    assert [k.op for k in kernels[:6]] == ["conv", "conv", "channel_shuffle", "conv", "conv", "add"]
    expand, shuffle, dw, project = kernels[1:5]
    assert (expand.groups, expand.activation, shuffle.groups) == (2, "relu", 2)
    assert (dw.kernel_size, dw.groups, dw.pad, dw.activation) == (5, 16, 2, "relu")
    assert (project.groups, project.activation, project.out_channels) == (2, "none", 16)
    # block 1 is skip with 16 -> 24 channels: a 1x1 conv with BN and ReLU
    skip = kernels[6]
    assert (skip.op, skip.input_shape, skip.out_channels, skip.kernel_size, skip.activation) == ("conv", (16, 32, 32), 24, 1, "relu")


def test_identity_skip_has_no_kernels_and_no_layer_weights():
    space = get_space("fbnet")
    ops = ["k3_e1"] + ["skip"] * 21
    cand = space.candidate(ops=ops, prune_ratios=[0.5] * 25, bits=[8] * 25)
    layers = space.layers(cand)
    assert [layer.name for layer in layers] == space.layer_names(cand)
    # blocks 2, 3, 4 (stage 2 after its first block) are identity: nothing to prune, no weights
    assert not layers[3].prunable and not layers[3].quantisable
    assert cand.prune_ratios[3] == 0.0 and cand.bits[3] == 32
    assert cand.prune_ratios[1] == 0.5 and cand.bits[1] == 8


def test_pruning_removes_hidden_and_head_channels():
    space = get_space("fbnet")
    ops = ["k3_e6"] * 11 + ["k5_e1_g2"] * 11
    ratios = [0.0] + [0.5] * 22 + [0.25, 0.0]
    full = space.kernels(space.candidate(ops=ops))
    pruned = space.kernels(space.candidate(ops=ops, prune_ratios=ratios))
    assert full[1].out_channels == 96 and pruned[1].out_channels == 48  # 16*6 hidden, half pruned
    assert full[-3].out_channels == 1504 and pruned[-3].out_channels == 1128  # head: 1504*0.75 = 1128
    assert pruned[-1].input_shape == (1128,)
    # a _g2 block keeps its hidden width a multiple of 2 and of channel_multiple
    g2 = [k for k in pruned if k.op == "conv" and k.groups == 2]
    assert len(g2) == 22 and all(k.out_channels % 8 == 0 for k in g2)  # 11 blocks x (expand, project)


@pytest.mark.parametrize(
    "genes, message",
    [
        ({"ops": ["k3_e1"] * 21}, r"ops has 21 blocks; allowed: exactly 22"),
        ({"ops": ["k3_e1"] * 21 + ["k7_e6"]}, r"ops\[21\]='k7_e6' is not allowed; allowed: k3_e1, .*skip"),
        ({"ops": "k3_e1"}, r"ops='k3_e1' is not allowed"),
        ({"op": ["k3_e1"] * 22}, r"gene op=.* is not known; allowed: bits, ops, prune_ratios"),
    ],
)
def test_bad_ops_are_refused(genes, message):
    with pytest.raises(ValueError, match=message):
        get_space("fbnet").candidate(**genes)


def test_every_measured_architecture_is_a_valid_candidate(shared_dir):
    space = get_space("fbnet")
    with open(shared_dir / "data" / "hwnasbench-fbnet" / "latency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5000
    for row in rows:
        cand = space.candidate(ops=row["ops"].split())
        assert len(cand.genes["ops"]) == 22


def test_imagenet_setting_runs_on_tiny_inputs():
    """Stride 32 on an 8x8 input: spatial sizes bottom out at 1, never 0."""
    import torch

    space = get_space("fbnet", setting="imagenet", input_size=8, in_channels=1, num_classes=10)
    cand = space.sample(np.random.default_rng(0), search=("arch",))
    with torch.no_grad():
        assert space.build(cand)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    assert min(min(k.output_shape) for k in space.kernels(cand)) == 1
