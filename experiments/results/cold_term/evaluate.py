"""A fitted cost for cold weights, tried and not kept: the record of how it was scored.

The prototype (``cold_term.patch``, against ``latency_models/_predictor.py`` of commit a869bf0) adds one
relative column to the predictor's stage-2 fit: the model's weight megabytes W beyond a cache size C, in one of
six forms (a ramp W * clip((W - C/2) / (C/2), 0, 1) for C = 4, 8, 16 MB, or the excess max(W - C, 0) for C = 2, 4,
8 MB), kept when the leave-one-out error of the model rows drops; ``KARUMI_COLD=0`` turns it off. This script
fits a committed ``predictor_local`` run's table with and without it (as measured, and at the run's machine-state
exponent) and scores the held-out models on the predictor's scale. With the patch applied, from the repository
root:

    git apply experiments/results/cold_term/cold_term.patch
    python experiments/results/cold_term/evaluate.py predictor_local_128_maxpool predictor_local_128_uniform predictor_local_96_se
    git apply -R experiments/results/cold_term/cold_term.patch
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from latency_models import LatencyPredictor  # noqa: E402
from latency_models._features import physical  # noqa: E402
from predictor_local import _read, _scores  # noqa: E402


def main() -> None:
    if "cold" not in LatencyPredictor.__init__.__code__.co_varnames:
        sys.exit("error: the prototype is not applied (git apply experiments/results/cold_term/cold_term.patch)")
    for name in sys.argv[1:]:
        folder = ROOT / "experiments" / "results" / name
        meta = json.loads((folder.parent / f"{name}.json").read_text())
        table = _read(folder, "table.json")
        groups = {"spaces": _read(folder, "held.json").model_rows}
        if (folder / "held_float.json").exists() or (folder / "held_float.json.gz").exists():
            groups["spaces, float32"] = _read(folder, "held_float.json").model_rows
        groups["torchvision"] = _read(folder, "torchvision.json").model_rows
        print(f"== {name}")
        for cold in ("0", "1"):
            os.environ["KARUMI_COLD"] = cold
            for exponent in (0.0, float(meta["reference_exponent"])):
                pred = LatencyPredictor.fit(table, reference_exponent=exponent)
                out = [f"term {'on ' if cold == '1' else 'off'} exponent {pred.reference_exponent:g}: chosen "
                       f"{pred.fit_info.get('cold')}, leave-one-out RMSPE {100 * pred.fit_info['loo_rmspe']:.2f} %"]
                for label, rows in groups.items():
                    s = _scores(pred, rows, 1.0)
                    m = s.get("on_scale", s["as_measured"])
                    out.append(f"{label}: within ±10 % {100 * m['within_10']:.1f}, ±5 % {100 * m['within_5']:.1f}, "
                               f"RMSPE {100 * m['rmspe']:.1f} %")
                print(" | ".join(out), flush=True)
                if exponent:
                    s = _scores(pred, groups["torchvision"], 1.0)
                    for r, row in zip(s["rows"], groups["torchvision"]):
                        meas = float(pred.on_scale(r["measured_ms"], r["reference_ms"]))
                        w = float(physical(list(row.kernels))[:, 2].sum())
                        print(f"    {r['source']:28s} {w:6.2f} MB of weights, measured {meas:7.3f} ms, predicted "
                              f"{r['predicted_ms']:7.3f} ms, error {100 * (r['predicted_ms'] / meas - 1):+6.1f} %")


if __name__ == "__main__":
    main()
