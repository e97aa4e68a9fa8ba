"""Ray scaling: trials per hour of the search with 1 and 2 Ray workers on this machine, and the efficiency.

Three configurations run the same search command (``python -m search``, random sampler, same seed, so each
evaluates the same candidates in the same order) with ``--trials N``:

- ``optuna``: the single-machine study (no Ray), for reference;
- ``ray-1``: ``--ray-address local --workers 1``;
- ``ray-2``: ``--ray-address local --workers 2``.

The cache (built-in teacher, this machine's latency profile) is warmed by a one-trial run first, so every
configuration measures the search itself. From each run's Optuna study: the search span (first trial
started to last trial finished), trials per hour = N / span * 3600, and the mean seconds a trial's
evaluation took inside its worker. Scaling efficiency = trials/hour(ray-2) / (2 * trials/hour(ray-1)), from the medians when a
configuration is repeated (``--configs`` may name one several times, interleaved against drifting load).

The machine is shared (several agents on 2 cores): ``os.getloadavg()`` is recorded before and after each
configuration, and the numbers are only as clean as that load allows.

    python experiments/ray_scaling.py --trials 8 --configs optuna,ray-1,ray-2,ray-2,ray-1 \\
        --out experiments/results/ray_scaling
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pathlib
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments._common import loadavg, write_json

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {"optuna": [], "ray-1": ["--ray-address", "local", "--workers", "1"],
           "ray-2": ["--ray-address", "local", "--workers", "2"]}


def search_args(*, trials: int, budget_ms: float, seed: int) -> list[str]:
    return ["--budget-ms", f"{budget_ms:g}", "--trials", str(trials), "--sampler", "random", "--seed", str(seed),
            "--final-epochs", "0", "--timeout-min", "600", "-q"]


def run_search(args: list[str], *, out: pathlib.Path, cache: pathlib.Path) -> float:
    """``python -m search ARGS --out OUT``; returns its wall seconds (raises when it fails)."""
    env = {**os.environ, "KARUMI_CACHE": str(cache)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "search", *args, "--out", str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python -m search {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def study_span(db: pathlib.Path) -> dict:
    """Span of the search, its trials and their in-worker seconds, from the run's SQLite study."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT number, state, datetime_start, datetime_complete FROM trials ORDER BY number").fetchall()
        secs = con.execute("SELECT t.number, a.value_json FROM trial_user_attributes a JOIN trials t "
                           "ON a.trial_id = t.trial_id WHERE a.key = 'seconds' ORDER BY t.number").fetchall()
        trained = con.execute("SELECT t.number, a.value_json FROM trial_user_attributes a JOIN trials t "
                              "ON a.trial_id = t.trial_id WHERE a.key = 'trained'").fetchall()
    finally:
        con.close()

    def ts(text: str) -> float:
        return _dt.datetime.fromisoformat(text).timestamp()

    complete = [r for r in rows if r[1] == "COMPLETE"]
    span = max(ts(r[3]) for r in complete) - min(ts(r[2]) for r in complete)
    seconds = [float(json.loads(v)) for _, v in secs]
    return {"trials": len(complete), "states": sorted({r[1] for r in rows}), "span_seconds": span,
            "trials_per_hour": len(complete) / span * 3600.0,
            "trained": sum(1 for _, v in trained if json.loads(v)),
            "mean_eval_seconds": sum(seconds) / len(seconds), "sum_eval_seconds": sum(seconds)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12, help="trials of each configuration")
    p.add_argument("--budget-ms", type=float, default=20.0, help="latency budget of the search (ms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--cache", type=pathlib.Path, default=None,
                   help="KARUMI_CACHE of the runs (default a new temporary folder, warmed first)")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "ray_scaling")
    a = p.parse_args(argv)

    work = pathlib.Path(tempfile.mkdtemp(prefix="karumi-ray-scaling-"))
    cache = a.cache or work / "cache"
    base = search_args(trials=a.trials, budget_ms=a.budget_ms, seed=a.seed)
    print(f"warming the cache (teacher, latency profile) in {cache}", flush=True)
    warm = run_search(search_args(trials=1, budget_ms=a.budget_ms, seed=a.seed), out=work / "warm", cache=cache)
    results = []
    for i, name in enumerate(a.configs.split(",")):  # a name may repeat: interleave them against drifting load
        if name not in CONFIGS:
            raise SystemExit(f"--configs: {name!r} is not one of {', '.join(CONFIGS)}")
        load_before = loadavg()
        wall = run_search([*base, *CONFIGS[name]], out=work / f"{i}-{name}", cache=cache)
        r = {"config": name, "args": CONFIGS[name], "wall_seconds": wall,
             **study_span(work / f"{i}-{name}" / "study.db"), "loadavg_before": load_before, "loadavg_after": loadavg()}
        results.append(r)
        print(f"{name:7s} {r['trials']} trials in {r['span_seconds']:.1f} s: {r['trials_per_hour']:.0f} trials/h "
              f"(mean evaluation {r['mean_eval_seconds']:.1f} s; load {load_before} -> {r['loadavg_after']})", flush=True)
    per_config = {name: statistics.median(r["trials_per_hour"] for r in results if r["config"] == name)
                  for name in dict.fromkeys(r["config"] for r in results)}
    summary: dict = {"median_trials_per_hour": per_config}
    if "ray-1" in per_config and "ray-2" in per_config:
        speedup = per_config["ray-2"] / per_config["ray-1"]
        summary.update(speedup_2_over_1=speedup, scaling_efficiency=speedup / 2.0)
        print(f"ray-2 / ray-1: {speedup:.2f}x, scaling efficiency {speedup / 2:.0%}", flush=True)
    write_json(a.out / "ray_scaling.json", {
        "command": "python experiments/ray_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "search_command": "python -m search " + " ".join(base) + " [--ray-address local --workers W]",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "warmup_wall_seconds": warm, "results": results, "summary": summary,
        "note": "2 CPU cores shared with other agents' jobs while this ran: see loadavg_before/after",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
