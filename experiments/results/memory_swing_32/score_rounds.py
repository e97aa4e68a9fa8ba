"""How target 2's share at 32 px depends on the moment the exports are timed: the default fit of
``predictor_local_32_memory_variants9`` (the committed table, at the exponent the status run chose for it) scored on
each round of ``memory_settled_timing_32_swing`` (the nine exports timed 20 times on 2026-12-07, four to a job, under
each of two settings), each round's nine timings as they were measured (that run does not store its references, so
no state correction; the eight jobs of ``heavy_now.py`` three minutes before had theirs within 0.6 % of the table's),
beside the committed held-out timings of 2026-12-05.

    python experiments/results/memory_swing_32/score_rounds.py

Output in ``score_rounds.log``.
"""
import json
import pathlib
import sys
import warnings

import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT)); sys.path.insert(0, str(_ROOT / "experiments"))
warnings.simplefilter("ignore")
from latency_status import _run_tables  # noqa: E402
from offgrid_siblings import _score  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402

RUN = "predictor_local_32_memory_variants9"
status = json.load(open(_ROOT / "experiments/results/latency_status.json"))["runs"]
table, _, groups = _run_tables(RUN)
g = dict(groups)
pred = LatencyPredictor.fit(table, reference_exponent=status[RUN]["reference_exponent"])
committed = _score(pred, table, g["torchvision"])
by_model = {r["model"].rsplit("_", 1)[0]: r for r in committed["rows"]}
rows = {m: next(r for r in g["torchvision"] if str(r.source).startswith(m + "_")) for m in by_model}
swing = json.load(open(_ROOT / "experiments/results/memory_settled_timing_32_swing.json"))
models = swing["models"]
p = dict(zip(models, pred.predict_many([rows[m].kernels for m in models])))
print("committed timings (2026-12-05):", f"{committed['within_10']:.1%} within ±10 %",
      " ".join(f"{m}{100 * by_model[m]['error']:+.0f}" for m in models))
for setting, rounds in swing["latency_ms"].items():
    shares = []
    for lat in rounds:
        err = np.array([p[m] / t - 1 for m, t in zip(models, lat)])
        shares.append(float(np.mean(np.abs(err) <= 0.10)))
    print(f"{setting}: {len(rounds)} rounds, share within ±10 % per round: min {min(shares):.1%}, median "
          f"{np.median(shares):.1%}, max {max(shares):.1%}; rounds at >= 88.9 %: {sum(s >= 0.888 for s in shares)}")
    med = np.median(np.array(rounds), axis=0)
    print("  errors against each export's median over the rounds:",
          " ".join(f"{m}{100 * (p[m] / t - 1):+.0f}" for m, t in zip(models, med)))
