"""Whole models with the kernel model's plain-path neighbours and without: the record of how they were scored.

The change (commit 7bba166) keeps a plain-path kernel's corrections on its own path (``experiments/layout_paths.py``
times the kernels). This record fits the state predictor twice on committed ``predictor_local.py`` tables, with
the kernel model's path gap as landed and at 0 (the kernel model before: neighbours from either path; every other
term, the layout terms included, the same), at the same machine-state exponent (the first fit's), and scores the
held-out models of the spaces and the torchvision exports on the predictor's scale. It switches a private
constant, hence a record here and not an experiment of the public API. From the repository root:

    python experiments/results/layout_paths/evaluate.py \\
        predictor_local_128_maxpool,predictor_local_128_uniform,predictor_local_128_layout,predictor_local_128_paths > experiments/results/layout_paths/evaluate.txt
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import predictor_local as pl  # noqa: E402

import latency_models._kernel_model as kernel_model_module  # noqa: E402
from latency_models import LatencyPredictor, accuracy_metrics  # noqa: E402

GAP = kernel_model_module._PATH_GAP


def _with_gap(gap: float, fn, *args, **kwargs):
    kernel_model_module._PATH_GAP = gap
    try:
        return fn(*args, **kwargs)
    finally:
        kernel_model_module._PATH_GAP = GAP


def _errors(pred: LatencyPredictor, rows: list) -> tuple[np.ndarray, dict]:
    p = pred.predict_many([r.kernels for r in rows])
    m = np.array([r.latency_ms for r in rows])
    if pred.reference_exponent and all(r.reference_ms for r in rows):
        m = pred.on_scale(m, np.array([r.reference_ms for r in rows]))
    return p / m - 1, accuracy_metrics(p, m)


def _scores(pred: LatencyPredictor, held: list, tv: list) -> dict:
    out = {"fit LOO RMSPE": pred.fit_info["loo_rmspe"],
           "kernel LOO RMSPE": float(np.sqrt(np.mean(pred.kernel_model.loo_errors() ** 2)))}
    _, out["spaces"] = _errors(pred, held)
    for space in dict.fromkeys(r.source for r in held):
        _, out[space] = _errors(pred, [r for r in held if r.source == space])
    err, out["torchvision"] = _errors(pred, tv)
    out["exports"] = {r.source: float(e) for r, e in zip(tv, err)}
    return out


def main() -> None:
    for name in sys.argv[1].split(","):
        work = pl.RESULTS / name
        table = pl._with_layout(pl._read(work, "table.json"), {})
        held, tv = pl._read(work, "held.json").model_rows, pl._read(work, "torchvision.json").model_rows
        after = LatencyPredictor.fit(table)
        before = _with_gap(0.0, LatencyPredictor.fit, table, reference_exponent=after.reference_exponent)
        b = _with_gap(0.0, _scores, before, held, tv)  # kernels the table did not measure: predicted as before
        a = _scores(after, held, tv)
        print(f"== {name} (device nchwc {table.device.get('nchwc')}, exponent {after.reference_exponent}): before -> after")
        for key in ("fit LOO RMSPE", "kernel LOO RMSPE"):
            print(f"  {key}: {100 * b[key]:.1f} -> {100 * a[key]:.1f} %")
        for group in ("spaces", *dict.fromkeys(r.source for r in held), "torchvision"):
            print(f"  {group}: within ±10 % {100 * b[group]['within_10']:.1f} -> {100 * a[group]['within_10']:.1f}, "
                  f"±5 % {100 * b[group]['within_5']:.1f} -> {100 * a[group]['within_5']:.1f}, RMSPE "
                  f"{100 * b[group]['rmspe']:.1f} -> {100 * a[group]['rmspe']:.1f} %")
        print("  exports: " + ", ".join(f"{m} {100 * b['exports'][m]:+.0f} -> {100 * a['exports'][m]:+.0f} %"
                                        for m in b["exports"]))


if __name__ == "__main__":
    main()
