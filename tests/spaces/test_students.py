"""`mobilenet` and `shufflenet`: golden structure against torchvision, genes, prune semantics."""

from __future__ import annotations

import pytest

from spaces import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "space, options, genes, reference",
    [
        ("mobilenet", {}, {}, ("mobilenet_v2", {})),
        ("mobilenet", {}, {"width": 0.5}, ("mobilenet_v2", {"width_mult": 0.5})),
        ("shufflenet", {"channel_multiple": 2}, {}, ("shufflenet_v2_x1_0", {})),
    ],
)
def test_default_architectures_are_the_torchvision_networks(space, options, genes, reference):
    """Same layers, same parameter count as torchvision's MobileNetV2 / ShuffleNetV2 at 1000 classes."""
    torchvision = pytest.importorskip("torchvision")
    s = get_space(space, num_classes=1000, input_size=224, **options)
    theirs = getattr(torchvision.models, reference[0])(**reference[1])
    assert _params(s.build(s.candidate(**genes))) == _params(theirs)
    assert s.options["stem_stride"] == 2


def test_stem_stride_defaults_follow_the_input_size():
    assert get_space("mobilenet").options["stem_stride"] == 1
    assert get_space("shufflenet", input_size=96).options["stem_stride"] == 2
    with pytest.raises(ValueError, match="stem_stride=3 is not allowed; allowed: 1, 2"):
        get_space("shufflenet", stem_stride=3)


@pytest.mark.parametrize(
    "space, genes, message",
    [
        ("mobilenet", {"width": 0.6}, r"width=0.6 is not allowed; allowed: 0.35, 0.5, 0.75, 1.0"),
        ("mobilenet", {"depths": [1, 2, 3, 4, 3, 3, 2]}, r"depths\[6\]=2 is not allowed; allowed: an integer in \[1, 1\]"),
        ("mobilenet", {"depths": [1, 2, 3]}, r"depths=\[1, 2, 3\] is not allowed; allowed: 7 integers"),
        ("mobilenet", {"depths": [1, 1, 1, 1, 1, 1, 1], "expansions": [[6]] * 6}, r"expansions=.* allowed: 7 lists"),
        ("mobilenet", {"depths": [1, 1, 1, 1, 1, 1, 1], "expansions": [[6, 6]] + [[6]] * 6},
         r"expansions\[0\]=\[6, 6\] is not allowed; allowed: a list of 1 values"),
        ("mobilenet", {"expansions": [[4]] + [[6] * d for d in (2, 3, 4, 3, 3, 1)]},
         r"expansions\[0\]\[0\]=4 is not allowed; allowed: 1, 3, 6"),
        ("mobilenet", {"kernel_sizes": [[3]] + [[3] * d for d in (2, 3, 4, 3, 3)] + [[9]]},
         r"kernel_sizes\[6\]\[0\]=9 is not allowed; allowed: 3, 5, 7"),
        ("shufflenet", {"repeats": [0, 8, 4]}, r"repeats\[0\]=0 is not allowed; allowed: an integer in \[1, 4\]"),
        ("shufflenet", {"widths": [1.0, 2.0, 1.0]}, r"widths\[1\]=2.0 is not allowed; allowed: 0.5, 0.75, 1.0"),
        ("shufflenet", {"widths": 1.0}, r"widths=1.0 is not allowed; allowed: 3 multipliers"),
        ("shufflenet", {"repeats": [1, 1, 1], "kernel_sizes": [[3], [3], [4]]}, r"kernel_sizes\[2\]\[0\]=4 is not allowed"),
        ("shufflenet", {"ops": ["k3_e1"]}, r"gene ops=.* is not known; allowed: bits, crelu, kernel_sizes, prune_ratios, repeats, widths"),
    ],
)
def test_bad_architecture_genes_are_refused(space, genes, message):
    with pytest.raises(ValueError, match=message):
        get_space(space).candidate(**genes)


def test_depths_change_the_per_layer_table_and_defaults_fill_in():
    s = get_space("mobilenet")
    cand = s.candidate(depths=[1, 1, 2, 1, 1, 1, 1])
    assert cand.genes["expansions"] == ((1,), (6,), (6, 6), (6,), (6,), (6,), (6,))
    assert s.layer_names(cand) == ["stem", "stages.0.0", "stages.1.0", "stages.2.0", "stages.2.1", "stages.3.0",
                                   "stages.4.0", "stages.5.0", "stages.6.0", "head", "classifier"]


def _convs(space, cand):
    return {name: k for name, k in zip(space.module_bits(cand), [k for k in space.kernels(cand) if k.op in ("conv", "linear")])}


def test_mobilenet_prune_ratio_of_a_stage_first_block_prunes_the_stage_width():
    s = get_space("mobilenet")
    base = s.candidate()
    names = s.layer_names(base)
    ratios = [0.0] * len(names)
    ratios[names.index("stages.3.0")] = 0.5  # 64 -> 32 output channels for the whole stage, hidden 32*6 -> 96
    ratios[names.index("stages.3.2")] = 0.25  # hidden 32*6=192 -> 144
    cand = s.candidate(prune_ratios=ratios)
    convs = _convs(s, cand)
    assert convs["stages.3.0.expand.conv"].out_channels == 96
    assert all(convs[f"stages.3.{j}.project.conv"].out_channels == 32 for j in range(4))
    assert convs["stages.3.2.expand.conv"].out_channels == 144
    assert convs["stages.3.1.expand.conv"].out_channels == 192
    assert convs["stages.4.0.expand.conv"].input_shape[0] == 32
    adds = [k for k in s.kernels(cand) if k.op == "add"]
    assert len(adds) == len([k for k in s.kernels(base) if k.op == "add"])  # residuals all kept
    # a later block with expansion 1 has nothing to prune
    e1 = s.candidate(expansions=[[1], [1, 1], [6] * 3, [6] * 4, [6] * 3, [6] * 3, [6]])
    layers = {layer.name: layer for layer in s.layers(e1)}
    assert layers["stages.1.0"].prunable and not layers["stages.1.1"].prunable and layers["stages.2.1"].prunable


def test_shufflenet_prune_ratio_of_a_first_unit_prunes_the_stage_width():
    s = get_space("shufflenet")
    names = s.layer_names(s.candidate())
    ratios = [0.0] * len(names)
    ratios[names.index("stages.1.0")] = 0.5  # branches 120 -> 64 (rounded to 8), stage width 128
    ratios[names.index("stages.1.3")] = 0.5  # that unit's middle channels 64 -> 32
    ratios[names.index("head")] = 0.5
    cand = s.candidate(prune_ratios=ratios)
    convs = _convs(s, cand)
    assert convs["stages.1.0.branch1.pw.conv"].out_channels == 64
    assert convs["stages.1.0.branch2.pw2.conv"].out_channels == 64
    assert convs["stages.1.3.branch.pw1.conv"].out_channels == 32
    assert convs["stages.1.3.branch.pw2.conv"].out_channels == 64
    assert convs["stages.2.0.branch1.dw.conv"].input_shape[0] == 128
    assert convs["head.conv"].out_channels == 512 and convs["classifier"].input_shape == (512,)
    splits = [k for k in s.kernels(cand) if k.op == "split"]
    assert {k.input_shape[0] for k in splits} == {112, 128, 464}
