"""How fast ``LatencyPredictor.predict_many`` is: candidates per second, with and without kernel listing.

A predictor fitted on the committed table ``experiments/results/predictor_local_idle/table.json.gz`` (fbnet,
mobilenet and shufflenet at 32x32); ``--n`` random candidates of the three spaces in turn:

- ``kernels()``: ``space.kernels(candidate)`` alone (the spaces' plan and kernel listing);
- ``cold``: ``predict_many`` on those kernel lists, a fresh predictor (every kernel new to its cache);
- ``warm``: the same call again (every kernel cached);
- ``fresh candidates incl. kernels()``: new candidates, ``space.kernels`` and ``predict_many`` together,
  the predictor warm from the first batch (what a search pays per candidate).

    python experiments/predict_speed.py --n 5000

Writes ``experiments/results/predict_speed.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import time

import numpy as np

import spaces
from latency_models import LatencyPredictor, LatencyTable

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    raw = gzip.decompress((RESULTS / "predictor_local_idle" / "table.json.gz").read_bytes())
    table = LatencyTable.from_dict(json.loads(raw))
    sp = [spaces.get_space(s) for s in ("fbnet", "mobilenet", "shufflenet")]
    rng = np.random.default_rng(5)
    cands = [sp[i % 3].sample(rng) for i in range(args.n)]
    load0 = [round(v, 2) for v in os.getloadavg()]
    t = time.perf_counter()
    lists = [sp[i % 3].kernels(c) for i, c in enumerate(cands)]
    t_k = time.perf_counter() - t
    pred = LatencyPredictor.fit(table)
    t = time.perf_counter()
    pred.predict_many(lists)
    t_cold = time.perf_counter() - t
    t = time.perf_counter()
    pred.predict_many(lists)
    t_warm = time.perf_counter() - t
    fresh = [sp[i % 3].sample(rng) for i in range(args.n)]
    t = time.perf_counter()
    pred.predict_many([sp[i % 3].kernels(c) for i, c in enumerate(fresh)])
    t_fresh = time.perf_counter() - t
    n = args.n
    out = {"command": f"python experiments/predict_speed.py --n {n}",
           "kernels_per_candidate": float(np.mean([len(k) for k in lists])),
           "per_second": {"kernels()": n / t_k, "predict_many_cold": n / t_cold, "predict_many_warm": n / t_warm,
                          "fresh_candidates_incl_kernels()": n / t_fresh},
           "target_per_second": 1e5, "loadavg_before_after": [load0, [round(v, 2) for v in os.getloadavg()]]}
    (RESULTS / "predict_speed.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
