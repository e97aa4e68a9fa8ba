"""Two tables of one CPU and input size, each fitted with the default fit and scored on both runs' held-out timings.

The `_fastexport` profiles of 2026-12-07 time the same held-out models as the `_memory` profiles of 2026-12-05 (same
seeds, same CPU, the compute reference within 0.3 %), in another memory state. Fitting each table and scoring it on
both days' timings separates what a table knows (more model rows) from the state its held-out models were timed in.
Fits only (at the exponent each table's fit chooses), times nothing:

    python experiments/results/fastexport_cross/cross_days.py predictor_local_224_memory,predictor_local_224_fastexport
    python experiments/results/fastexport_cross/cross_days.py predictor_local_128_memory,predictor_local_128_fastexport

Their output of 2026-12-07 is ``cross_days.log`` beside it.
"""

from __future__ import annotations

import json
import pathlib
import sys
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from offgrid_siblings import _score  # noqa: E402
from weight_term import _run_tables  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402


def main() -> None:
    warnings.simplefilter("ignore")
    runs = [r for r in sys.argv[1].split(",") if r]
    tables = {r: _run_tables(r) for r in runs}
    for fitted in runs:
        table = tables[fitted][0]
        pred = LatencyPredictor.fit(table)
        for timed in runs:
            scores = []
            for group, rows in tables[timed][2]:
                e = np.array([x["error"] for x in _score(pred, table, rows)["rows"]])
                scores.append(f"{group} {100 * np.mean(abs(e) < 0.05):.1f} / {100 * np.mean(abs(e) < 0.10):.1f}")
            print(f"table {fitted} (exponent {pred.reference_exponent}), held-out timings of {timed}: "
                  + " | ".join(scores), flush=True)


if __name__ == "__main__":
    main()
