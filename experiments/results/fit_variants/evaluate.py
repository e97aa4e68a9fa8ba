"""Constraints and weights on the predictor's model-rows fit, tried and not kept: the record of how they were scored.

The ONNX Runtime per-node breakdown (``experiments/export_misses.py``) shows the fitted per-family terms giving
float depthwise convolutions, concatenations and pools a zero or negative share of a model's time (multiplier
-0.08 for ``conv_dw_k3/b32`` on the 128-px table), the time going to other families and to the bit-width
transitions they always sit between in the spaces' mixed-precision models. The prototype
(``fit_variants.patch``, against ``latency_models/_predictor.py`` of commit accbed0, every variant behind an
environment variable) tries five ways to keep the fit physical:

- ``KM_MLO=m``: per-family multipliers bounded below by ``m`` (active set inside every penalty trial);
- ``KM_CLO=0``: per-family per-kernel costs non-negative;
- ``KM_TLO=1``: bit-width and layout transition costs non-negative;
- ``KM_BAL=1``: model rows weighted so that each space and the other models (``--extra``) weigh the same;
- ``KM_LMIN1=x`` / ``KM_LMIN4=x``: the leave-one-out penalty search may not go below ``x`` for the family
  multipliers (group 1) / the per-kernel costs and transitions (group 4).

This script fits the state predictor (``reference_exponent="auto"``) on committed ``predictor_local`` tables and
scores the held-out models of the spaces and the torchvision exports on the predictor's scale. With the patch
applied, from the repository root, for each setting:

    git apply experiments/results/fit_variants/fit_variants.patch
    KM_MLO=0.5 KM_CLO=0 python experiments/results/fit_variants/evaluate.py \\
        predictor_local_128_maxpool,predictor_local_128_uniform,predictor_local_96_se,predictor_local_32_15min_state
    git apply -R experiments/results/fit_variants/fit_variants.patch
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import predictor_local as pl  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402


def _errors(pred: LatencyPredictor, rows: list) -> np.ndarray:
    p = pred.predict_many([r.kernels for r in rows])
    m = np.array([r.latency_ms for r in rows])
    if pred.reference_exponent and all(r.reference_ms for r in rows):
        m = pred.on_scale(m, np.array([r.reference_ms for r in rows]))
    return p / m - 1


def main() -> None:
    for name in sys.argv[1].split(","):
        work = pl.RESULTS / name
        table = pl._with_layout(pl._read(work, "table.json"), {})
        held, tv = pl._read(work, "held.json"), pl._read(work, "torchvision.json")
        t0 = time.time()
        pred = LatencyPredictor.fit(table)
        seconds = time.time() - t0
        eh, et = _errors(pred, held.model_rows), _errors(pred, tv.model_rows)
        line = (f"{name[16:]:14s} exp {pred.reference_exponent} loo {pred.fit_info['loo_rmspe'] * 100:.2f} | spaces ±10 "
                f"{np.mean(abs(eh) <= .1) * 100:5.1f} ±5 {np.mean(abs(eh) <= .05) * 100:5.1f} rmspe "
                f"{np.sqrt(np.mean(eh**2)) * 100:5.1f}")
        sources = [r.source for r in held.model_rows]
        for s in dict.fromkeys(sources):
            es = eh[[x == s for x in sources]]
            line += f" {s[:4]} {np.mean(abs(es) <= .1) * 100:3.0f}"
        line += f" | tv ±10 {np.mean(abs(et) <= .1) * 100:5.1f} rmspe {np.sqrt(np.mean(et**2)) * 100:5.1f} | {seconds:.0f}s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
