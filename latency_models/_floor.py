"""The noise floor of a device: the same models re-timed in fresh workers, under the protocol.

A predictor cannot be checked more finely than the device repeats its own timings. :func:`noise_floor` times the
given ONNX models ``rounds`` times, each round in a fresh worker process (:func:`measure_interleaved`: fresh
sessions, interleaved blocks, the reference beside them), the models in a new shuffled order each round, and
compares every pair of rounds model by model: the share of the pairs within ±2, ±5 and ±10 % of each other, as
measured and on the reference's scale (each timing divided by the reference timed beside it). ``python -m
latency_models noise-floor a.onnx b.onnx ...`` prints it.

A profile measures its own floor the same way (:func:`retime_floor`): at its end it times its first
:data:`PROFILE_FLOOR_MODELS` calibration models again, minutes after their first timing, and records how far the
second timing is from the first in the table (``table.extra["noise_floor"]``); a predictor fitted on the table
carries it (``fit_info["noise_floor"]``) and ``python -m latency_models evaluate`` prints it beside its scores.
Needs numpy, onnx and onnxruntime only.
"""

from __future__ import annotations

import itertools
import logging
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from latency_models._protocol import PROTOCOL_NAME, measure_interleaved

__all__ = ["PROFILE_FLOOR_MODELS", "difference_shares", "floor_note", "noise_floor", "pair_differences",
           "retime_floor"]

log = logging.getLogger(__name__)

#: Rounds by default: 4 fresh workers give 6 pairs of timings per model.
ROUNDS = 4
#: The calibration models a profile times again at its end (its first ones), for the table's own noise floor.
PROFILE_FLOOR_MODELS = 8


def pair_differences(latency_ms: np.ndarray) -> np.ndarray:
    """``latency_ms`` of shape (rounds, models): ``b / a - 1`` for every pair of rounds ``a < b`` and every model,
    flattened."""
    lat = np.asarray(latency_ms, dtype=float)
    if lat.ndim != 2 or lat.shape[0] < 2:
        raise ValueError(f"latency_ms has shape {lat.shape}; allowed: (rounds >= 2, models)")
    return np.concatenate([lat[b] / lat[a] - 1.0 for a, b in itertools.combinations(range(lat.shape[0]), 2)])


def difference_shares(diffs: np.ndarray) -> dict[str, float]:
    """The share of relative differences within ±2, ±5 and ±10 %, their median and largest size, and the standard
    deviation of ``log(1 + diff)``."""
    d = np.asarray(diffs, dtype=float)
    a = np.abs(d)
    return {"pairs": int(d.size), "within_2": float((a <= 0.02).mean()), "within_5": float((a <= 0.05).mean()),
            "within_10": float((a <= 0.10).mean()), "median_abs": float(np.median(a)), "max_abs": float(a.max()),
            "sd_log": float(np.log1p(d).std())}


def noise_floor(models: Sequence[str | pathlib.Path], *, rounds: int = ROUNDS, threads: int = 1,
                timing: Mapping[str, Any] | None = None, seed: int = 0,
                on_round: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Time ``models`` (ONNX paths) in ``rounds`` fresh workers and say how well the timings repeat.

    Returns a JSON-ready dict: the protocol, ``threads`` and ``rounds``; per model its latency and reference of
    each round (ms); ``as_measured`` and ``on_reference_scale``: :func:`difference_shares` over every pair of
    rounds and every model (on the reference's scale each latency is divided by the reference of its own
    measurement, the exponent-1 scale of :meth:`LatencyTable.on_reference_scale`); ``seconds``.
    ``on_round(done, rounds)`` is called after each round.

    Raises:
        ValueError: no model, a missing file, fewer than 2 rounds, or a model the worker could not run.
    """
    paths = [pathlib.Path(m) for m in models]
    if not paths:
        raise ValueError("no model given; allowed: one or more ONNX files")
    for p in paths:
        if not p.is_file():
            raise ValueError(f"model {str(p)!r} does not exist; allowed: ONNX files")
    if int(rounds) != rounds or rounds < 2:
        raise ValueError(f"rounds={rounds!r}; allowed: an integer >= 2 (each round is compared with the others)")
    rng = np.random.default_rng(seed)
    lat = np.empty((rounds, len(paths)))
    ref = np.empty((rounds, len(paths)))
    t0 = time.perf_counter()
    for r in range(rounds):
        order = rng.permutation(len(paths))
        timings = measure_interleaved([str(paths[i]) for i in order], threads=threads, timing=timing)
        lat[r, order] = [t.latency_ms for t in timings]
        ref[r, order] = [t.reference_ms for t in timings]
        log.info("noise floor: round %d of %d, reference %.4f ms", r + 1, rounds, float(np.median(ref[r])))
        if on_round is not None:
            on_round(r + 1, rounds)
    return {"protocol": PROTOCOL_NAME, "threads": int(threads), "rounds": int(rounds),
            "models": [{"model": str(p), "latency_ms": lat[:, i].tolist(), "reference_ms": ref[:, i].tolist()}
                       for i, p in enumerate(paths)],
            "as_measured": difference_shares(pair_differences(lat)),
            "on_reference_scale": difference_shares(pair_differences(lat / ref)),
            "seconds": round(time.perf_counter() - t0, 2)}


def retime_floor(first_ms: Sequence[float], first_reference_ms: Sequence[float | None], second_ms: Sequence[float],
                 second_reference_ms: Sequence[float | None]) -> dict[str, Any]:
    """The same models timed twice: :func:`difference_shares` of ``second / first - 1``, as measured and (when
    every timing carries its reference) on the reference's scale."""
    a, b = np.asarray(first_ms, dtype=float), np.asarray(second_ms, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"first_ms has shape {a.shape} and second_ms {b.shape}; allowed: the same models, one or more")
    out: dict[str, Any] = {"models": int(a.size), "as_measured": difference_shares(b / a - 1.0)}
    refs = [*first_reference_ms, *second_reference_ms]
    if all(r is not None for r in refs):
        ra, rb = np.asarray(first_reference_ms, dtype=float), np.asarray(second_reference_ms, dtype=float)
        out["on_reference_scale"] = difference_shares((b / rb) / (a / ra) - 1.0)
    return out


_LABELS = {"as_measured": "as measured", "on_reference_scale": "on the reference's scale"}


def floor_note(floor: Mapping[str, Any]) -> str:
    """One line on a table's recorded floor (:func:`retime_floor` of a profile's first calibration models)."""
    key = "on_reference_scale" if "on_reference_scale" in floor else "as_measured"
    s = floor[key]
    return (f"noise floor: the profile's first {floor['models']} calibration models, timed again at its end, agreed "
            f"with their first timing within ±2 / ±5 / ±10 % for {100 * s['within_2']:.0f} / {100 * s['within_5']:.0f}"
            f" / {100 * s['within_10']:.0f} % of them ({_LABELS[key]}; largest difference {100 * s['max_abs']:.1f} %): "
            "a predictor of this table cannot be checked more finely than that")
