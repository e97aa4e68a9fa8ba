"""The `prune` space: the teacher itself with per-layer prune ratios, bits and rank ratios."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spaces import Candidate, get_space

from compression_nets import residual_teacher


def _residual_space(*, in_channels: int = 3, **options):
    """The ``prune`` space over a small residual CNN (coupled layers to group)."""
    return get_space("prune", teacher=residual_teacher(in_channels=in_channels), in_channels=in_channels, **options)


def test_default_candidate_is_the_teacher_and_weights_are_inherited():
    space = _residual_space(input_size=8, in_channels=1)
    teacher = space.teacher
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(space.build(space.candidate())(x), teacher(x), atol=0, rtol=0)
    # Full-rank factorisation of every eligible layer still computes the teacher.
    full = space.candidate(rank_ratios=[1.0] * len(space.lowrank_layers))
    assert full == space.candidate()
    # A pruned candidate keeps the most important filters of the teacher (weights copied, not re-initialised).
    names = space.layer_names(space.candidate())
    ratios = [0.5 if name == "head" else 0.0 for name in names]
    pruned = space.build(space.candidate(prune_ratios=ratios))
    kept, original = pruned.head.weight, teacher.head.weight
    assert kept.shape[0] == original.shape[0] // 2 and kept.shape[1] == original.shape[1]
    norms = original.abs().sum(dim=(1, 2, 3))
    top = set(torch.argsort(norms, descending=True)[: kept.shape[0]].tolist())
    found = {next(i for i, o in enumerate(original) if torch.equal(o, f)) for f in kept}
    assert found == top  # the l1 importance keeps the largest filters, with their trained values


def test_groups_carry_one_prune_gene_and_classifier_is_not_prunable():
    space = _residual_space()
    layers = {layer.name: layer for layer in space.layers(space.candidate())}
    assert layers["stem"].prunable and not layers["block1.conv2"].prunable  # same residual stream as stem
    assert layers["block2.expand"].prunable and not layers["block2.dw"].prunable  # depthwise follows expand
    assert not layers["classifier"].prunable
    assert all(layer.quantisable for layer in layers.values())
    n = len(layers)
    cand = space.candidate(prune_ratios=[0.5] * n)
    assert cand.prune_ratios[list(layers).index("block1.conv2")] == 0.0  # reset: the group's gene is stem's


def test_low_rank_genes_factorise_and_bits_follow():
    space = _residual_space()
    ranks = [0.25] * len(space.lowrank_layers)
    cand = space.candidate(rank_ratios=ranks, bits=[8] * len(space.layer_names(space.candidate())))
    bits = space.module_bits(cand)
    assert bits["classifier.0"] == bits["classifier.1"] == 8
    model = space.build(cand)
    assert isinstance(model.classifier, torch.nn.Sequential)
    assert space.stats(cand).params < space.stats(space.candidate()).params
    with pytest.raises(ValueError, match=r"rank_ratios\[0\] \(layer 'block2.expand'\)=0.0 is not allowed"):
        space.candidate(rank_ratios=[0.0] + ranks[1:])


@pytest.mark.parametrize("builder", ["resnet18", pytest.param("shufflenet_v2_x0_5", marks=pytest.mark.slow)])
def test_torchvision_teachers(builder):
    space = get_space("prune", teacher=f"torchvision:{builder}", input_size=16)
    cand = space.sample(np.random.default_rng(0), search=("prune",))
    model = space.build(cand)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    assert space.stats(cand).params < space.stats(space.candidate()).params
    assert sum(layer.prunable for layer in space.layers(cand)) >= 8


def test_in_memory_teacher_and_state_dict(tmp_path):
    teacher = get_space("prune", input_size=8, in_channels=1).teacher
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(2.0)
    space = get_space("prune", teacher=teacher, input_size=8, in_channels=1)
    assert space.options["teacher"].startswith("memory:")
    cand = space.sample(np.random.default_rng(1))
    again = Candidate.from_json(cand.to_json())
    assert space.kernels(again) == space.kernels(cand)  # plain data: the instance holding the teacher decodes it
    with pytest.raises(ValueError, match="was an in-memory module of another space instance"):
        get_space("prune", teacher="memory:0123456789abcdef", input_size=8, in_channels=1)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    loaded = get_space("prune", teacher="builtin", state_dict=str(path), input_size=8, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.build(loaded.candidate())(x), teacher.eval()(x))
    assert loaded.options["state_dict"] == str(path)


def test_bad_options():
    with pytest.raises(ValueError, match="teacher='vgg' is not supported; allowed: 'builtin'"):
        get_space("prune", teacher="vgg")
    with pytest.raises(ValueError, match="importance='random' is not registered"):
        get_space("prune", importance="random")
    with pytest.raises(ValueError, match="outputs \\(1, 10\\), not \\(1, 5\\)|num_classes"):
        get_space("prune", teacher=get_space("prune").teacher, num_classes=5)
