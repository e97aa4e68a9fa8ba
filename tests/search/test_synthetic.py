"""The procedural ``shapes`` data set: deterministic, balanced, every class distinct, loadable as --data."""

from __future__ import annotations

import numpy as np
import pytest

from search._synthetic import CLASSES, SIZE, make_shapes


def test_deterministic_balanced_and_seed_dependent() -> None:
    x1, y1 = make_shapes(40, seed=3)
    x2, y2 = make_shapes(40, seed=3)
    x3, _ = make_shapes(40, seed=4)
    assert x1.shape == (40, 3, SIZE, SIZE) and x1.dtype == np.float32 and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(x1, x3)
    assert np.bincount(y1, minlength=len(CLASSES)).tolist() == [4] * len(CLASSES)


def test_classes_differ_in_shape_not_only_in_noise() -> None:
    """Noise-free images of every class at a fixed pose: no two classes draw the same mask."""
    from search._synthetic import _mask

    grid = (np.arange(64) + 0.5) / 64 * 2 - 1
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    masks = [_mask(c, gx, gy) for c in range(len(CLASSES))]
    for i in range(len(masks)):
        assert 0.05 < masks[i].mean() < 0.9, CLASSES[i]
        for j in range(i):
            assert np.abs(masks[i] - masks[j]).mean() > 0.05, (CLASSES[i], CLASSES[j])
    with pytest.raises(ValueError, match="label"):
        _mask(len(CLASSES), gx, gy)


@pytest.mark.slow
def test_load_data_shapes_splits() -> None:
    from search._data import DATASETS, load_data

    assert "shapes" in DATASETS
    ds = load_data("shapes", seed=0)
    assert ds.input_shape == (3, SIZE, SIZE) and ds.num_classes == len(CLASSES)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (2000, 500, 1000)
    # normalised with the training split's statistics
    assert abs(float(ds.train.x.mean())) < 1e-3 and abs(float(ds.train.x.std()) - 1.0) < 0.05
    assert not np.allclose(ds.train.x[:5].numpy(), ds.test.x[:5].numpy())
