"""Deep Compression: Huffman coding, trained weight sharing, the stored file and its exact round trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from spaces import builtin_teacher, get_space
from spaces.compress import (
    compressed_size_bytes,
    compression_report,
    load_compressed,
    prune_structured,
    prune_unstructured,
    save_compressed,
    share_weights,
    shared_layers,
    strip_sharing,
)
from spaces.compress._huffman import MAX_CODE_BITS, code_lengths, decode, encode


@pytest.mark.parametrize("n, alphabet, p", [(0, 3, 0.5), (1, 2, 0.5), (7, 1, 0.5), (5000, 16, 0.3),
                                            (200_000, 256, 0.05), (100_000, 300, 0.9)])
def test_huffman_round_trip_and_entropy_bound(n, alphabet, p):
    rng = np.random.default_rng(n)
    symbols = np.minimum(rng.geometric(p, n) - 1, alphabet - 1)
    data = encode(symbols, alphabet)
    decoded, end = decode(data + b"trailing", 0)
    assert end == len(data)
    np.testing.assert_array_equal(decoded, symbols)
    if n > 1000:
        counts = np.bincount(symbols, minlength=alphabet)
        freq = counts[counts > 0] / n
        entropy = float(-(freq * np.log2(freq)).sum())
        lengths = code_lengths(counts)
        mean_bits = float((lengths * counts).sum() / n)
        assert entropy <= mean_bits < entropy + 1.0  # Huffman's bound
        assert abs(float((2.0 ** -lengths[lengths > 0]).sum()) - 1.0) < 1e-12  # complete prefix code (Kraft)


def test_huffman_lengths_are_limited():
    counts = np.array([int(1.6 ** i) + 1 for i in range(40)])  # Fibonacci-like: optimal depth would be ~39
    lengths = code_lengths(counts)
    assert lengths.max() <= MAX_CODE_BITS
    assert (2.0 ** -lengths.astype(float)).sum() <= 1.0 + 1e-12
    symbols = np.repeat(np.arange(40), np.minimum(counts, 50))
    np.testing.assert_array_equal(decode(encode(symbols, 40))[0], symbols)


def _pruned_teacher(amount: float = 0.7) -> torch.nn.Module:
    torch.manual_seed(0)
    return prune_unstructured(builtin_teacher(width=16), amount, scope="global").eval()


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_share_weights_clusters_survivors_and_keeps_zeros(bits):
    model = _pruned_teacher()
    shared = share_weights(model, bits)
    assert set(shared_layers(shared)) == {"conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "classifier"}
    plain = strip_sharing(copy.deepcopy(shared))
    for name, m in model.named_modules():
        if not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        w, s = m.weight.detach(), plain.get_submodule(name).weight.detach()
        assert torch.equal(w == 0, s == 0)  # pruned weights stay zero, no survivor becomes zero
        values = torch.unique(s[s != 0])
        assert len(values) <= 2 ** bits
        # every survivor moved to its nearest shared value
        nearest = values[(w[w != 0].reshape(-1, 1) - values.reshape(1, -1)).abs().argmin(dim=1)]
        torch.testing.assert_close(s[s != 0], nearest, atol=0, rtol=0)
        err = (s - w).abs().max().item()
        spread = (w.max() - w.min()).item()
        assert err <= spread / 2 ** bits + 1e-6  # no worse than linear quantisation over the range
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(shared(x), plain(x), atol=1e-5, rtol=1e-5)  # same function


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    model = share_weights(_pruned_teacher(), 3)
    plain = strip_sharing(copy.deepcopy(model))
    x = torch.randn(4, 3, 16, 16)
    model(x).square().sum().backward()
    plain(x).square().sum().backward()
    for name in ("conv2", "classifier"):
        m, p = model.get_submodule(name), plain.get_submodule(name)
        index, mask = m.weight_index.long(), m.weight_mask
        expected = torch.zeros_like(m.weight_centroids).index_add_(0, index[mask], p.weight.grad[mask])
        torch.testing.assert_close(m.weight_centroids.grad, expected, atol=1e-5, rtol=1e-4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.conv2.weight_centroids.detach().clone()
    opt.step()
    assert not torch.equal(before, model.conv2.weight_centroids.detach())  # the centroids train
    model(x)
    assert len(torch.unique(model.conv2.weight[model.conv2.weight != 0])) <= 8  # and stay shared


@pytest.mark.parametrize("sparse", [False, True])
def test_stored_file_restores_exactly_the_same_weights(sparse, tmp_path):
    model = _pruned_teacher(0.9 if sparse else 0.0)
    model.bn2.num_batches_tracked.fill_(7)
    shared = share_weights(model, {"conv1": 2, "conv2": 4, "conv5": 8, "classifier": 6})
    path = tmp_path / "model.kdc"
    data = save_compressed(shared, path, half_layers={"conv3"})
    assert path.read_bytes() == data
    assert b"pickle" not in data[:200] and data.startswith(b"KARUMIDC")
    state = load_compressed(path)
    want = strip_sharing(copy.deepcopy(shared)).state_dict()
    assert list(state) == list(want)
    for key, value in want.items():
        assert state[key].dtype == value.dtype and state[key].shape == value.shape
        if key == "conv3.weight":  # float16 layer: the float16 values
            assert torch.equal(state[key], value.half().float())
        else:
            assert torch.equal(state[key], value), key
    encodings = {k: v["encoding"] for k, v in compression_report(shared, half_layers={"conv3"})["tensors"].items()}
    assert encodings["conv1.weight"].startswith("codebook")
    assert encodings["conv3.weight"] == ("sparse" if sparse else "float16")  # float16 values
    assert encodings["conv4.weight"] == ("sparse" if sparse else "raw")  # not shared: 256+ distinct values
    assert encodings["conv2.weight"].startswith("codebook")
    assert encodings["bn2.num_batches_tracked"] == "raw"
    rebuilt = builtin_teacher(width=16)
    rebuilt.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), strip_sharing(copy.deepcopy(shared)).eval()(x), atol=2e-3,
                                   rtol=1e-3)  # conv3 at float16


def test_compression_ratio_and_size_follow_the_bits():
    model = _pruned_teacher(0.9)
    dense = compression_report(model)
    raw = compression_report(builtin_teacher(width=16))  # nothing pruned or shared: float32 plus the header
    assert 0.98 < raw["ratio"] < 1.0
    sizes = {b: compressed_size_bytes(model, {n: b for n in ("conv4", "conv5", "conv6")}) for b in (2, 4, 8)}
    assert sizes[2] < sizes[4] < sizes[8] < dense["file_bytes"]
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    all4 = {n: 4 for n in names}
    size = compressed_size_bytes(model, all4)
    assert size == compressed_size_bytes(model, all4)  # deterministic
    assert size == len(save_compressed(share_weights(model, 4)))
    assert compression_report(share_weights(model, 4))["ratio"] > 20  # 90 % zeros, 4-bit indices
    # 16 bits: float16 weights; 32 bits: the raw float32 file
    assert compressed_size_bytes(model, {n: 16 for n in names}) < compressed_size_bytes(model, {n: 32 for n in names})
    with pytest.raises(ValueError, match="module_bits\\['conv1'\\]=12"):
        compressed_size_bytes(model, {"conv1": 12})
    with pytest.raises(ValueError, match="bn1"):
        share_weights(model, {"bn1": 4})


def test_loader_refuses_other_files():
    with pytest.raises(ValueError, match="magic"):
        load_compressed(b"\x80\x04pickle")
    data = save_compressed(builtin_teacher(width=8))
    assert data[12:31] == b'{"format_version":1'
    with pytest.raises(ValueError, match="format_version=9"):
        load_compressed(data[:30] + b"9" + data[31:])


def test_structured_pruning_then_sharing_and_the_prune_space_size(one_torch_thread):
    torch.manual_seed(0)
    model = builtin_teacher(width=16).eval()
    small = prune_structured(model, 0.5, example_input=torch.zeros(1, 3, 16, 16))
    assert compressed_size_bytes(share_weights(small, 4)) < 0.6 * compressed_size_bytes(share_weights(model, 4))
    space = get_space("prune", input_size=16)
    names = space.layer_names(space.candidate())
    int8 = space.candidate(bits=[8] * len(names))
    int4 = space.candidate(bits=[4] * len(names))
    half = space.candidate(prune_ratios=[0.5 if layer.prunable else 0.0 for layer in space.layers(int4)],
                           bits=[4] * len(names))
    sizes = [space.compressed_size_bytes(c) for c in (int8, int4, half)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[1] < space.stats(space.candidate()).size_bytes / 6  # float32 weights: 4-bit shared, entropy-coded
