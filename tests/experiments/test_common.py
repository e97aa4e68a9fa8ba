"""The experiments' exact 3-D hypervolume against brute force and against Optuna's own computation."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from experiments._common import hypervolume_3d, percentile_summary  # noqa: E402


def test_single_box_and_points_outside_reference() -> None:
    assert hypervolume_3d(np.array([[0.5, 0.5, 0.5]]), (1, 1, 1)) == pytest.approx(0.125, abs=1e-12)
    # a point not strictly inside the reference box adds nothing
    assert hypervolume_3d(np.array([[0.5, 0.5, 0.5], [0.2, 1.0, 0.1]]), (1, 1, 1)) == pytest.approx(0.125, abs=1e-12)
    assert hypervolume_3d(np.zeros((0, 3)), (1, 1, 1)) == 0.0


def test_two_overlapping_boxes_inclusion_exclusion() -> None:
    pts = np.array([[0.2, 0.6, 0.5], [0.6, 0.2, 0.5]])
    # 0.8*0.4*0.5 + 0.4*0.8*0.5 - overlap 0.4*0.4*0.5
    assert hypervolume_3d(pts, (1, 1, 1)) == pytest.approx(0.16 + 0.16 - 0.08, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_optuna_on_random_points(seed: int) -> None:
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(seed)
    pts = rng.uniform(0.0, 1.2, size=(25, 3))
    ref = np.array([1.0, 1.0, 1.0])
    inside = pts[np.all(pts < ref, axis=1)]
    expected = compute_hypervolume(inside, ref)
    assert hypervolume_3d(pts, ref) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_percentile_summary() -> None:
    s = percentile_summary([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["mean"] == pytest.approx(2.5) and s["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert s["p90"] == pytest.approx(3.7) and s["max"] == 4.0
    assert percentile_summary([])["mean"] is None
