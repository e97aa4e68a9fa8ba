"""Supernet training: cache, resume after an interruption, and the supernet proxy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from search import SupernetProxy, load_supernet
from search._data import DataSet, Split
from spaces import builtin_teacher, get_space


def _data(n: int = 48) -> DataSet:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 16, 16, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    split = Split(x, y)
    return DataSet(name="tiny", key="tiny-16px", train=split, val=Split(x[:16], y[:16]), test=split, num_classes=10,
                   input_shape=(1, 16, 16))


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return builtin_teacher(in_channels=1, num_classes=10).eval()


def _space():
    return get_space("shufflenet", num_classes=10, input_size=16, in_channels=1)


def test_interrupted_training_resumes_at_the_next_epoch_and_matches(tmp_path) -> None:
    data, teacher, space = _data(), _teacher(), _space()
    seen: list[int] = []
    first = load_supernet(space, data, teacher, epochs=2, cache=tmp_path / "a", batch_size=16, max_epochs_now=1,
                          on_epoch=lambda e, n: seen.append(e))
    assert (first.trained_epochs, first.resumed_from, seen) == (1, 0, [0])
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["epochs_done"] == 1 and meta["epochs"] == 2
    torch.load(first.path, weights_only=True)  # never a pickle
    resumed = load_supernet(space, data, teacher, epochs=2, cache=tmp_path / "a", batch_size=16,
                            on_epoch=lambda e, n: seen.append(e))
    assert (resumed.trained_epochs, resumed.resumed_from, seen) == (1, 1, [0, 1])
    assert json.loads(first.path.with_suffix(".json").read_text())["epochs_done"] == 2
    whole = load_supernet(space, data, teacher, epochs=2, cache=tmp_path / "b", batch_size=16)
    assert whole.trained_epochs == 2
    for key, value in whole.supernet.tensors.items():
        torch.testing.assert_close(resumed.supernet.tensors[key], value, rtol=1e-5, atol=1e-6, msg=key)
    cached = load_supernet(space, data, teacher, epochs=2, cache=tmp_path / "a", batch_size=16)
    assert cached.trained_epochs == 0
    for key, value in cached.supernet.tensors.items():
        torch.testing.assert_close(resumed.supernet.tensors[key], value, rtol=0, atol=0)
    # another teacher is another supernet
    other = _teacher()
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert load_supernet(space, data, other, epochs=2, cache=tmp_path / "a", batch_size=16,
                         max_epochs_now=1).path != first.path


def test_training_moves_the_weights_and_the_proxy_scores_candidates(tmp_path) -> None:
    data, teacher, space = _data(), _teacher(), _space()
    fresh = load_supernet(space, data, teacher, epochs=1, cache=tmp_path, batch_size=16, max_epochs_now=0)
    trained = load_supernet(space, data, teacher, epochs=1, cache=tmp_path, batch_size=16)
    assert fresh.trained_epochs == 0 and trained.trained_epochs == 1
    assert any(not torch.equal(fresh.supernet.tensors[k], v) for k, v in trained.supernet.tensors.items())
    for steps in (0, 2):
        proxy = SupernetProxy(trained.supernet, data.train, data.val, teacher, steps=steps, calib_samples=32)
        cand = space.sample(np.random.default_rng(0))
        acc = proxy(proxy.build(cand), space.module_bits(cand))
        assert 0.0 <= acc <= 1.0 and proxy.last_seconds > 0
        # deterministic
        assert proxy(proxy.build(cand), space.module_bits(cand)) == acc


def test_bad_epochs() -> None:
    with pytest.raises(ValueError, match="epochs=0"):
        load_supernet(_space(), _data(), _teacher(), epochs=0)


def test_trials_score_the_inherited_weights(tmp_path) -> None:
    from search import SearchContext, evaluate_candidate

    class Zero:  # a predictor that puts every candidate within budget
        def predict_many(self, kernels, genes=None):
            return np.zeros(len(kernels))

    data, teacher, space = _data(), _teacher(), _space()
    net = load_supernet(space, data, teacher, epochs=1, cache=tmp_path, batch_size=16, max_epochs_now=0).supernet
    built: list = []
    proxy = SupernetProxy(net, data.train, data.val, teacher, calib_samples=32)

    def build(cand):
        built.append(cand)
        return proxy.build(cand)

    context = SearchContext(space=space, predictor=Zero(), budget_ms=1.0, evaluator=proxy, build=build)
    cand = space.sample(np.random.default_rng(2))
    result = evaluate_candidate(cand, context=context)
    assert built == [cand] and result.trained and 0.0 <= result.accuracy <= 1.0
    assert result.accuracy == proxy(net.extract(cand), space.module_bits(cand))
