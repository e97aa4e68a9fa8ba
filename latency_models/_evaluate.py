"""How good a predictor is on measured whole models it never saw."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from latency_models._table import REFERENCE_SPREAD_WARN, LatencyTable

__all__ = ["evaluate", "accuracy_metrics", "spearman", "state_gap", "state_gap_note"]


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


def state_gap(pred: Any, reference_ms: Sequence[float | None]) -> dict[str, Any] | None:
    """Where measurements stand against the machine states of the table ``pred`` was fitted on.

    ``reference_ms``: the reference timings taken beside the measurements (the protocol records one with each;
    None where a measurement has none).
    Returns ``state_ratio`` (their median over the predictor's :attr:`reference_ms`: above 1, a slower state),
    ``table_state_range`` (the 5th and 95th percentile of the table's model rows' references, over the same) and
    ``state_outside``: whether the measurements' state lies more than the profile's own warning threshold
    (:data:`~latency_models._table.REFERENCE_SPREAD_WARN`) beyond that range. Out there the comparison rests on the
    machine-state exponent where the table's rows could not test it (a calm table's rows often cannot tell one
    exponent from another; 0 corrects nothing): on a 96-px table whose rows' references spread 0.9 %, a re-timing an
    hour later in a state a quarter faster was predicted 25 % too slow on every model
    (``experiments/latency_record.md``, *A measurement in a state the table never saw*). None without the
    references, or for a predictor fitted before it kept its table's range (2026-12-08).
    """
    refs = [float(r) for r in reference_ms if r is not None]
    span = pred.fit_info.get("model_reference_ms")
    if not refs or pred.reference_ms is None or not span:
        return None
    ratio = float(np.median(refs)) / pred.reference_ms
    lo, hi = (v / pred.reference_ms for v in span)
    return {"state_ratio": ratio, "table_state_range": [lo, hi],
            "state_outside": bool(ratio > hi * REFERENCE_SPREAD_WARN or ratio < lo / REFERENCE_SPREAD_WARN)}


def state_gap_note(gap: dict[str, Any] | None, exponent: float) -> str | None:
    """One line on a :func:`state_gap` (or :func:`evaluate`'s result) outside the table's states; None when inside,
    or unknown."""
    if not gap or not gap.get("state_outside"):
        return None
    lo, hi = gap["table_state_range"]
    ratio = gap["state_ratio"]
    how = "corrected by nothing (exponent 0)" if not exponent else f"corrected by the exponent {exponent:g}"
    return (f"the measured rows ran in another machine state than the table: their reference timings are {ratio:.3f}x "
            f"the predictor's ({'slower' if ratio > 1 else 'faster'}; the table's model rows were timed at "
            f"{lo:.3f}-{hi:.3f}x), a gap {how} where the table's rows could not test it: re-time them when the machine "
            "is in the table's state, or profile again")


def evaluate(pred: Any, measured_table: LatencyTable, *, on_scale: bool = True) -> dict[str, Any]:
    """Score ``pred`` (a :class:`~latency_models.LatencyPredictor`) on the model rows of ``measured_table``.

    Returns ``n``, ``within_5`` and ``within_10`` (fractions of models predicted within +-5 % / +-10 %),
    ``rmspe`` (root mean squared relative error, a fraction) and ``spearman`` (rank correlation), and where both
    sides carry references :func:`state_gap`'s ``state_ratio``, ``table_state_range`` and ``state_outside``
    (:func:`state_gap_note` words it; ``python -m latency_models evaluate`` prints that line).
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
    return {**accuracy_metrics(predicted, measured), **(state_gap(pred, [r.reference_ms for r in rows]) or {})}
