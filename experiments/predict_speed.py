"""How fast ``LatencyPredictor.predict_many`` is: candidates per second, with and without kernel listing.

A predictor fitted on the committed table ``experiments/results/predictor_local_idle/table.json.gz`` (fbnet,
mobilenet and shufflenet at 32x32; ``--table NAME``: another ``predictor_local.py`` run's, the spaces at its input
size, e.g. one whose predictor blends in its outside model); ``--n`` random candidates of the three spaces in turn:

- ``kernels()``: ``space.kernels(candidate)`` alone (the spaces' plan and kernel listing);
- ``cold``: ``predict_many`` on those kernel lists, a fresh predictor (every kernel new to its cache);
- ``warm``: the same call again (every kernel cached);
- ``fresh candidates incl. kernels()``: new candidates, ``space.kernels`` and ``predict_many`` together,
  the predictor warm from the first batch (what a search pays per candidate).

The compiled path (``space.latency_evaluator(predictor).predict_many(candidates)``, one evaluator per space,
everything from the ``Candidate`` objects included; sampling them is not timed, as above):

- ``compiled_cold``: the first batch, every segment new to the evaluator's memo (the predictor's per-kernel
  cache is already warm from the kernel-list timings above);
- ``compiled_fresh``: the fresh batch, the memo warm from the first batch only (its new segments are
  listed and summarised);
- ``compiled_fresh_after_warmup``: another fresh batch of ``--n-large`` candidates after ``--warm`` more
  (per space as well);
- ``compiled_repeat``: that batch again, every segment known (a search revisiting its parts).

The compiled predictions are checked against the kernel lists' (``max_rel_diff_compiled``).

    python experiments/predict_speed.py --n 5000 --warm 30000 --n-large 30000

    python experiments/predict_speed.py --n 5000 --warm 30000 --n-large 30000 \
        --table predictor_local_128_paths_variants --name predict_speed_128_blend

Writes ``experiments/results/predict_speed.json`` (``NAME.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

import spaces
from latency_models import LatencyPredictor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from predictor_local import _read, _with_layout  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--warm", type=int, default=30000, help="candidates that warm the compiled evaluators' memo")
    ap.add_argument("--n-large", type=int, default=30000, help="fresh candidates timed after --warm")
    ap.add_argument("--table", default="predictor_local_idle",
                    help="the committed predictor_local.py run whose table the predictor is fitted on; the spaces "
                         "are built at its input size")
    ap.add_argument("--name", default="predict_speed", help="results name")
    args = ap.parse_args()
    table = _with_layout(_read(RESULTS / args.table, "table.json"), {})
    size = int(table.protocol.get("space_options", {}).get("input_size", 32))
    sp = [spaces.get_space(s, input_size=size) for s in ("fbnet", "mobilenet", "shufflenet")]
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
    slow = pred.predict_many([sp[i % 3].kernels(c) for i, c in enumerate(fresh)])
    t_fresh = time.perf_counter() - t
    n = args.n

    # the compiled path: one evaluator per space, fed each space's candidates
    evaluators = [s.latency_evaluator(pred) for s in sp]

    def compiled(batch: list) -> np.ndarray:
        out = np.empty(len(batch))
        for j, ev in enumerate(evaluators):
            out[j::3] = ev.predict_many(batch[j::3])
        return out

    t = time.perf_counter()
    compiled(cands)
    t_c_cold = time.perf_counter() - t
    t = time.perf_counter()
    fast = compiled(fresh)
    t_c_fresh = time.perf_counter() - t
    max_rel = float(np.max(np.abs(fast / slow - 1.0)))
    warm = [sp[i % 3].sample(rng) for i in range(args.warm)]
    large = [sp[i % 3].sample(rng) for i in range(args.n_large)]
    compiled(warm)
    per_space, per_space_repeat = {}, {}
    t_large = t_repeat = 0.0
    for j, ev in enumerate(evaluators):
        t = time.perf_counter()
        ev.predict_many(large[j::3])
        dt = time.perf_counter() - t
        t = time.perf_counter()
        again = ev.predict_many(large[j::3])
        dr = time.perf_counter() - t
        t_large, t_repeat = t_large + dt, t_repeat + dr
        per_space[sp[j].name] = len(again) / dt
        per_space_repeat[sp[j].name] = len(again) / dr
    check = large[:300]
    max_rel = max(max_rel, float(np.max(np.abs(
        compiled(check) / pred.predict_many([sp[i % 3].kernels(c) for i, c in enumerate(check)]) - 1.0))))
    out = {"command": f"python experiments/predict_speed.py --n {n} --warm {args.warm} --n-large {args.n_large}"
                      + (f" --table {args.table}" if args.table != "predictor_local_idle" else "")
                      + (f" --name {args.name}" if args.name != "predict_speed" else ""),
           "table": args.table, "input_size": size,
           "outside_model_blended": pred.outside is not None,
           "kernels_per_candidate": float(np.mean([len(k) for k in lists])),
           "per_second": {"kernels()": n / t_k, "predict_many_cold": n / t_cold, "predict_many_warm": n / t_warm,
                          "fresh_candidates_incl_kernels()": n / t_fresh,
                          "compiled_cold": n / t_c_cold, "compiled_fresh": n / t_c_fresh,
                          "compiled_fresh_after_warmup": args.n_large / t_large,
                          "compiled_repeat": args.n_large / t_repeat},
           "compiled_fresh_after_warmup_per_space": per_space, "compiled_repeat_per_space": per_space_repeat,
           "compiled_segments_per_space": {s.name: ev.segments for s, ev in zip(sp, evaluators)},
           "max_rel_diff_compiled": max_rel,
           "target_per_second": 1e5, "loadavg_before_after": [load0, [round(v, 2) for v in os.getloadavg()]]}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
