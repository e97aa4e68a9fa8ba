"""How good a predictor is on measured whole models it never saw."""

from __future__ import annotations

from typing import Any

import numpy as np

from latency_models._table import LatencyTable

__all__ = ["evaluate", "accuracy_metrics", "spearman"]


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # average the ranks of ties
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation (ties get their average rank)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {len(a)} and {len(b)}")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def accuracy_metrics(predicted_ms: Any, measured_ms: Any) -> dict[str, float]:
    """n, share within +-5 % and +-10 %, RMSPE (a fraction) and Spearman of predicted vs measured latencies."""
    p = np.asarray(predicted_ms, dtype=np.float64)
    m = np.asarray(measured_ms, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"predicted_ms and measured_ms must be 1-D of the same non-zero length, got {p.shape}, {m.shape}")
    rel = p / m - 1.0
    return {
        "n": int(len(m)),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "rmspe": float(np.sqrt(np.mean(rel**2))),
        "spearman": spearman(p, m) if len(m) >= 2 else float("nan"),
    }


def evaluate(pred: Any, measured_table: LatencyTable, *, on_scale: bool = True) -> dict[str, float]:
    """Score ``pred`` (a :class:`~latency_models.LatencyPredictor`) on the model rows of ``measured_table``.

    Returns ``n``, ``within_5`` and ``within_10`` (fractions of models predicted within +-5 % / +-10 %),
    ``rmspe`` (root mean squared relative error, a fraction) and ``spearman`` (rank correlation).
    ``on_scale``: a predictor with a machine-state correction predicts at its table's state; each measured
    row is then put on that state by the reference timed beside it (``pred.on_scale``) before it is
    compared (rows without a reference are compared as measured). False: every row as measured.
    """
    if not isinstance(measured_table, LatencyTable):
        raise ValueError(f"measured_table must be a LatencyTable, got {type(measured_table).__name__}")
    rows = measured_table.model_rows
    if not rows:
        raise ValueError("measured_table has no model rows to evaluate on")
    predicted = pred.predict_many([r.kernels for r in rows], genes=[(r.candidate or {}).get("genes") for r in rows])
    measured = [pred.on_scale(r.latency_ms, r.reference_ms) if on_scale else r.latency_ms for r in rows]
    return accuracy_metrics(predicted, measured)
