"""The contract every registered space keeps, parametrised over the registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest

from latency_models import kernels_from_onnx
from spaces import SEARCH_PARTS, Candidate, get_space, list_spaces
from spaces.compress import export_onnx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space_or_skip(name: str, **options):
    try:
        return get_space(name, **options)
    except (TypeError, ValueError) as exc:  # a space that needs options with no default (e.g. a teacher)
        pytest.skip(f"space {name!r} needs options to be built: {exc}")


SPACES = list_spaces()
DIGITS = {"input_size": 8, "in_channels": 1, "num_classes": 10}


@pytest.fixture(params=SPACES)
def space(request):
    return _space_or_skip(request.param)


def _random_candidates(space, n: int, seed: int = 0) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def test_builtin_spaces_are_registered():
    assert {"fbnet", "mobilenet", "shufflenet"} <= set(SPACES)


def test_sample_from_rng_is_reproducible(space):
    a = [space.sample(np.random.default_rng(s)) for s in range(5)]
    b = [space.sample(np.random.default_rng(s)) for s in range(5)]
    assert a == b
    assert len(set(a)) == 5  # different seeds give different candidates
    for cand in a:
        assert cand.space == space.name and dict(cand.options) == space.options


def test_sample_from_trial_and_replay_with_fixed_trial(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(4):
        trial = study.ask()
        cand = space.sample(trial)
        replay = space.sample(optuna.trial.FixedTrial(trial.params))
        assert replay == cand
        assert space.candidate(**dict(cand.genes), prune_ratios=cand.prune_ratios, bits=cand.bits) == cand
        study.tell(trial, 0.0)


def test_parameter_names_are_stable_across_trials(space):
    """The same gene is always the same parameter name with the same distribution (resumable studies)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    seen: dict[str, object] = {}
    for _ in range(6):
        trial = study.ask()
        space.sample(trial)
        for name, dist in trial.distributions.items():
            assert seen.setdefault(name, dist) == dist, name
        study.tell(trial, 1.0)


@pytest.mark.parametrize("parts", [("arch",), ("prune",), ("bits",), ("prune", "bits")])
def test_sample_searches_only_the_parts_asked(space, parts):
    default = space.candidate()
    for seed in range(4):
        cand = space.sample(np.random.default_rng(seed), search=parts)
        if "arch" not in parts:
            assert cand.genes == default.genes
        if "prune" not in parts:
            assert set(cand.prune_ratios) == {0.0}
        if "bits" not in parts:
            assert set(cand.bits) == {32}
    searched = [space.sample(np.random.default_rng(s), search=parts) for s in range(4)]
    assert len(set(searched)) > 1


def test_sample_refuses_unknown_parts(space):
    with pytest.raises(ValueError, match=r"search=\('width',\) is not allowed; allowed: a subset of"):
        space.sample(np.random.default_rng(0), search=("width",))
    with pytest.raises(ValueError, match="trial_or_rng=42 is not supported"):
        space.sample(42)
    assert tuple(SEARCH_PARTS) == ("arch", "prune", "bits")


def test_json_round_trip_and_rebuild_from_options(space):
    for cand in _random_candidates(space, 5, seed=1):
        again = Candidate.from_json(cand.to_json())
        assert again == cand
        rebuilt = get_space(again.space, **dict(again.options))
        assert rebuilt.options == space.options
        assert rebuilt.kernels(again) == space.kernels(cand)


def test_default_candidate_has_no_pruning_and_float32(space):
    cand = space.candidate()
    n = len(space.layer_names(cand))
    assert cand.prune_ratios == (0.0,) * n and cand.bits == (32,) * n


@pytest.mark.parametrize("options", [{}, DIGITS], ids=["default", "digits8x8"])
def test_build_and_forward_on_the_input_shape(options):
    import torch

    for name in SPACES:
        space = _space_or_skip(name, **options)
        for cand in [space.candidate(), *_random_candidates(space, 3, seed=2)]:
            model = space.build(cand)
            assert not model.training
            with torch.no_grad():
                out = model(torch.randn(1, *space.input_shape))
            assert out.shape == (1, space.num_classes)
            assert torch.isfinite(out).all()
            kernels = space.kernels(cand)
            assert all(min(k.output_shape) >= 1 for k in kernels)


KERNEL_CASES = [(name, options) for name in SPACES for options in ({}, DIGITS)] + [
    ("shufflenet", {"stem_stride": 2, "input_size": 64}),  # the ImageNet-style stem with its max pool
    ("fbnet", {"setting": "imagenet", "input_size": 64}),
]


@pytest.mark.parametrize("name, options", KERNEL_CASES, ids=[f"{n}-{'-'.join(map(str, o.values())) or 'default'}" for n, o in KERNEL_CASES])
def test_kernels_and_params_match_the_onnx_export(name, options):
    """The same kernel *sequence* as the reader recovers from the float32 ONNX export (not just a multiset),
    and ``stats().params`` equal to the export's Conv/Gemm initializers (BatchNorm folded)."""
    space = _space_or_skip(name, **options)
    rng = np.random.default_rng(6)
    n_random = 2 if options in ({}, DIGITS) else 1
    candidates = [space.candidate(), *(space.sample(rng, search=("arch", "prune")) for _ in range(n_random))]
    for cand in candidates:
        proto = export_onnx(space.build(cand), space.input_shape)
        kernels, unknown = kernels_from_onnx(proto)
        assert unknown == []
        assert kernels == space.kernels(cand)
        assert space.stats(cand).params == _onnx_params(proto)


def test_kernels_match_the_quantised_export_bit_for_bit(space):
    """Mixed 4/8/16/32-bit candidates: the QDQ/fp16 export read back gives the same kernels and bits."""
    import torch

    from spaces.compress import export_onnx_quantized

    rng = np.random.default_rng(7)
    calibration = [torch.randn(4, *space.input_shape, generator=torch.Generator().manual_seed(0))]
    for cand in [space.sample(rng) for _ in range(2)]:
        assert len(set(cand.bits)) > 1
        proto = export_onnx_quantized(space.build(cand), space.module_bits(cand), space.input_shape,
                                      calibration=calibration)
        kernels, unknown = kernels_from_onnx(proto)
        assert unknown == []
        assert kernels == space.kernels(cand)


@pytest.mark.parametrize("name", ["shufflenet", "fbnet"])
def test_a_shuffle_of_int8_outputs_is_listed_at_8_bits_as_the_export_reads_it(name):
    """A channel shuffle that reads what int8 (``QLinearConv``) layers wrote runs on uint8 channels-last in ONNX
    Runtime, a kernel of its own (``spaces._plan.shuffle_bits``): listed at 8 bits after int8 (and binary) layers, at
    32 after 4-bit ones (a float ``Conv``) and in a ShuffleNet unit that concatenates the float identity half;
    the quantised export reads back the same."""
    import torch

    from spaces._plan import shuffle_bits
    from spaces.compress import export_onnx_quantized

    space = get_space(name, input_size=32, num_classes=10)
    rng = np.random.default_rng(5)
    calibration = [torch.randn(2, *space.input_shape, generator=torch.Generator().manual_seed(0))]
    for bits, want in (((8,), 8), ((1,), 8), ((4,), 32), ((16,), 32)):
        cand = next(c for c in (space.sample(rng, bits=bits) for _ in range(50))
                    if any(k.op == "channel_shuffle" for k in space.kernels(c)))  # fbnet: a grouped block
        kernels = space.kernels(cand)
        shuffles = [i for i, k in enumerate(kernels) if k.op == "channel_shuffle"]
        if name == "fbnet":  # a grouped 1x1 convolution, then its shuffle
            shuffles = [i for i in shuffles if kernels[i - 1].op == "conv"]
        else:  # the first unit of each stage (two branches, no split) shuffles what its convolutions wrote
            starts = [0] + [i + 1 for i in shuffles[:-1]]
            shuffles = [i for s, i in zip(starts, shuffles) if all(k.op != "split" for k in kernels[s:i])]
        assert shuffles, (name, bits)
        assert {kernels[i].bits for i in shuffles} == {want}, (name, bits)
        if want == 8 and name == "shufflenet":  # the later units concatenate a float identity half
            assert {k.bits for k in kernels if k.op == "channel_shuffle"} == {8, 32}
        proto = export_onnx_quantized(space.build(cand), space.module_bits(cand), space.input_shape,
                                      calibration=calibration)
        assert kernels_from_onnx(proto) == (kernels, [])
    assert (shuffle_bits(8, 8), shuffle_bits(8, 4), shuffle_bits(2), shuffle_bits()) == (8, 32, 8, 32)


@pytest.mark.parametrize("name, options", [("shufflenet", {"stem_stride": 2, "input_size": 32}),
                                           ("prune", {"input_size": 16})])
def test_a_max_pool_next_to_a_quantised_layer_is_listed_at_8_bits(name, options):
    """ShuffleNet's stem pool (between the stem and the first unit) and the built-in teacher's pools (between
    two convolutions) run at 8 bits when a neighbour quantises (1-8 bits), else 32, as the quantised export
    reads back: the predictor then prices ONNX Runtime's uint8 max pool, not the float one."""
    import torch

    from spaces._plan import QDQ_BITS
    from spaces.compress import export_onnx_quantized
    from spaces.compress._quant import _INT_BITS

    assert QDQ_BITS == _INT_BITS
    space = _space_or_skip(name, **options)
    n = len(space.candidate().bits)
    calibration = [torch.randn(2, *space.input_shape, generator=torch.Generator().manual_seed(0))]
    # (bits before the first pool, bits after it) -> the pool's bits; every other layer at 32
    cases = {(32, 32): 32, (8, 32): 8, (16, 4): 8, (16, 16): 32, (32, 2): 8}
    before = 0 if name == "shufflenet" else 1  # shufflenet: stem | pool | first unit; teacher: conv2 | pool1 | conv3
    seen = set()
    for (b0, b1), want in cases.items():
        bits = [32] * n
        bits[before], bits[before + 1] = b0, b1
        cand = space.candidate(bits=bits)
        pools = [k for k in space.kernels(cand) if k.op == "maxpool"]
        assert pools[0].bits == want, (b0, b1)
        assert all(k.bits == 32 for k in pools[1:])
        proto = export_onnx_quantized(space.build(cand), space.module_bits(cand), space.input_shape,
                                      calibration=calibration)
        kernels, unknown = kernels_from_onnx(proto)
        assert unknown == [] and kernels == space.kernels(cand), (b0, b1)
        seen.add(want)
    assert seen == {8, 32}


def test_module_bits_match_the_built_modules_and_kernels(space):
    from torch import nn

    for cand in _random_candidates(space, 4, seed=3):
        model = space.build(cand)
        modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        bits = space.module_bits(cand)
        assert list(bits) == [n for n, _ in modules]
        weighted = [k for k in space.kernels(cand) if k.op in ("conv", "linear")]
        assert [k.bits for k in weighted] == list(bits.values())
        for (_, module), kernel in zip(modules, weighted):
            out = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            assert out == kernel.out_channels
        # every module belongs to the layer whose bits it has
        names = space.layer_names(cand)
        for module_name, b in bits.items():
            owners = [i for i, layer in enumerate(names) if module_name == layer or module_name.startswith(layer + ".")]
            assert len(owners) == 1, module_name
            assert cand.bits[owners[0]] == b


def _onnx_params(model_proto) -> int:
    """Sum of the sizes of the Conv and Gemm weight and bias initializers of a BN-folded export.

    The exporter shares equal initializers (e.g. the zero biases of freshly folded BatchNorms) through
    ``Identity`` nodes; each use counts.
    """
    sizes = {t.name: int(np.prod(t.dims)) for t in model_proto.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model_proto.graph.node if n.op_type == "Identity"}

    def size(name: str) -> int:
        while name in alias:
            name = alias[name]
        return sizes[name]

    return sum(size(i) for n in model_proto.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:] if i)


def test_stats_sizes_follow_the_bits(space):
    for cand in _random_candidates(space, 3, seed=4):
        stats = space.stats(cand)
        assert stats.macs > 0 and 0 < stats.size_bytes
        # size at the candidate's bits is at most the float32 size, equal when nothing is quantised
        fp32 = space.candidate(**dict(cand.genes), prune_ratios=cand.prune_ratios)
        assert space.stats(fp32).size_bytes == 4 * space.stats(fp32).params
        assert stats.size_bytes < space.stats(fp32).size_bytes
        assert stats.params == space.stats(fp32).params and stats.macs == space.stats(fp32).macs


def test_pruned_channels_are_physically_absent(space):
    cand = space.candidate()
    layers = space.layers(cand)
    ratios = [0.5 if layer.prunable else 0.0 for layer in layers]
    assert any(ratios)
    pruned = space.candidate(**dict(cand.genes), prune_ratios=ratios)
    full_params = sum(p.numel() for p in space.build(cand).parameters())
    pruned_params = sum(p.numel() for p in space.build(pruned).parameters())
    assert pruned_params < 0.75 * full_params
    assert space.stats(pruned).params < 0.75 * space.stats(cand).params
    assert space.stats(pruned).macs < space.stats(cand).macs


def test_bad_prune_ratios_and_bits_are_refused(space):
    cand = space.candidate()
    n = len(space.layer_names(cand))
    first_prunable = next(i for i, layer in enumerate(space.layers(cand)) if layer.prunable)
    name = space.layer_names(cand)[first_prunable]
    bad_ratio = [0.0] * n
    bad_ratio[first_prunable] = 0.95
    with pytest.raises(ValueError, match=rf"prune_ratios\[{first_prunable}\] \(layer '{name}'\)=0.95 .*allowed: a number in \[0, 0.9\]"):
        space.candidate(prune_ratios=bad_ratio)
    bad_ratio[first_prunable] = -0.1
    with pytest.raises(ValueError, match=r"-0.1 is not allowed"):
        space.candidate(prune_ratios=bad_ratio)
    with pytest.raises(ValueError, match=rf"prune_ratios has {n - 1} values; allowed: exactly {n}"):
        space.candidate(prune_ratios=[0.0] * (n - 1))
    with pytest.raises(ValueError, match=r"bits\[0\] \(layer .*\)=7 is not allowed; allowed: 1, 2, 4, 8, 16, 32"):
        space.candidate(bits=[7] + [32] * (n - 1))
    with pytest.raises(ValueError, match=rf"bits has {n + 1} values"):
        space.candidate(bits=[32] * (n + 1))
    with pytest.raises(ValueError, match=r"gene colour='red' is not known; allowed: .*bits.*prune_ratios"):
        space.candidate(colour="red")


def test_candidates_of_other_spaces_or_options_are_refused(space):
    cand = space.candidate()
    other = Candidate("not-" + space.name, dict(cand.genes), cand.prune_ratios, cand.bits, dict(cand.options))
    with pytest.raises(ValueError, match=r"candidate.space='not-"):
        space.kernels(other)
    options = {**dict(cand.options), "num_classes": space.num_classes + 1}
    with pytest.raises(ValueError, match=r"candidate.options=.* differ"):
        space.kernels(Candidate(space.name, dict(cand.genes), cand.prune_ratios, cand.bits, options))


def test_nothing_but_build_imports_torch():
    """The profiler runs on devices without torch: sample, candidate, kernels, stats, names, bits of the
    student spaces (a space whose teacher is a torch model may need torch to exist at all)."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        import optuna
        from spaces import Candidate, get_space, list_spaces
        done = []
        for name in {SPACES!r}:
            try:
                space = get_space(name)
            except (TypeError, ValueError, ImportError):  # e.g. "prune": its teacher is a torch model
                continue
            cand = space.sample(np.random.default_rng(0))
            space.sample(optuna.trial.FixedTrial({{}}), search=())
            cand = Candidate.from_json(cand.to_json())
            space.candidate(**dict(cand.genes), prune_ratios=cand.prune_ratios, bits=cand.bits)
            space.kernels(cand); space.stats(cand); space.layer_names(cand); space.module_bits(cand)
            done.append(name)
        print(done)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {"fbnet", "mobilenet", "shufflenet"} <= set(json.loads(result.stdout.strip().replace("'", '"')))
