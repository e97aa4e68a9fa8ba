"""Cost of the search: the quick-start command from a cold cache, proxy seconds per trial, predictor cost.

1. Runs the quick-start command ``python -m search --budget-ms 20`` (every other option at its default) in a
   subprocess with ``KARUMI_CACHE`` set to a fresh temporary folder, so the built-in teacher is trained and
   this machine is profiled as a first-time user would see it. Its status lines are timestamped as they
   arrive, which splits the wall time into phases: data + teacher training, device profiling, search,
   Pareto front (export and re-measurement of the front), final fine-tune and export.
2. Proxy seconds per trial: the ``seconds`` of every trained trial of that run (from its Optuna study).
3. Predictor microseconds per query: the run's cached predictor (``LatencyPredictor.load``) on
   ``--queries`` sampled candidates of the same space, one ``predict`` call per candidate, and one
   ``predict_many`` call over all of them (divided by their number).

The machine is shared (several agents on 2 cores): ``os.getloadavg()`` is recorded at the start and end,
and every time here is pessimistic by that much.

    python experiments/cost.py --out experiments/results/cost
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from experiments._common import load_snapshot, loadavg, percentile_summary, write_json

QUICKSTART = ["--budget-ms", "20"]
def run_quickstart(workdir: pathlib.Path) -> dict:
    """Run the quick-start command from a cold cache; returns its timed status lines and files."""
    cache = workdir / "cache"
    out = workdir / "run"
    env = {**os.environ, "KARUMI_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "search", *QUICKSTART, "--out", str(out)]
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=pathlib.Path(__file__).resolve().parents[1])
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
        print(f"[{lines[-1][0]:7.1f} s] {lines[-1][1]}", flush=True)
    code = proc.wait()
    wall = time.perf_counter() - start
    return {"command": "python -m search " + " ".join(QUICKSTART), "exit_code": code, "wall_seconds": wall,
            "lines": [{"t_seconds": round(t, 2), "line": s} for t, s in lines], "out": str(out),
            "cache": str(cache)}


def quickstart_from_log(workdir: pathlib.Path, log: pathlib.Path) -> dict:
    """The quick-start record rebuilt from a kept work folder and this script's printed log (its
    ``[  t s] line`` lines), when an earlier invocation stopped after the run; wall time = the last line's."""
    import re

    lines = []
    for text in log.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\[\s*([0-9.]+) s\] (.*)$", text)
        if m:
            lines.append({"t_seconds": float(m.group(1)), "line": m.group(2)})
    return {"command": "python -m search " + " ".join(QUICKSTART), "exit_code": None,
            "wall_seconds": lines[-1]["t_seconds"] if lines else None, "lines": lines,
            "out": str(workdir / "run"), "cache": str(workdir / "cache"), "rebuilt_from_log": str(log)}


def phases(lines: list[dict], wall: float) -> dict[str, float]:
    """Seconds per phase from the arrival times of the status lines of ``python -m search``.

    It prints ``data ...`` once the data is loaded, ``device this machine ... profiling it now`` before the
    device is read or profiled and ``device <description>`` after, ``teacher ...`` once the teacher is
    trained (or read), ``budget ...`` when the search starts, ``final ...`` when the fine-tune starts, and
    the summary at the end. A phase's time is the gap between the line before it and the line after it.
    """
    t: dict[str, float] = {}
    for item in lines:
        words = item["line"].split()
        if not words:
            continue
        key = words[0]
        if key == "device":
            key = "device_start" if "profiling it now" in item["line"] else "device_ready"
        t.setdefault(key, float(item["t_seconds"]))
    out: dict[str, float] = {}
    if "data" in t:
        out["start-up, load data"] = t["data"]
    if "device_start" in t and "device_ready" in t:
        out["profile this machine (latency table, predictor fit)"] = t["device_ready"] - t["device_start"]
    if "teacher" in t:
        before = max(v for k, v in t.items() if v <= t["teacher"] and k != "teacher") if len(t) > 1 else 0.0
        out["built-in teacher training"] = t["teacher"] - before
    if "budget" in t:
        out["search trials, Pareto front export and re-measurement"] = t.get("final", wall) - t["budget"]
    if "final" in t:
        out["final fine-tune, export, measurement, report"] = wall - t["final"]
    return {k: round(v, 2) for k, v in out.items()}


def trial_seconds(run_dir: pathlib.Path) -> dict:
    """Proxy seconds per trained trial, read from the run's SQLite study."""
    con = sqlite3.connect(str(run_dir / "study.db"))
    try:
        rows = con.execute("select trial_id, key, value_json from trial_user_attributes "
                           "where key in ('seconds', 'trained')").fetchall()
    finally:
        con.close()
    by_trial: dict[int, dict] = {}
    for tid, key, value in rows:
        by_trial.setdefault(tid, {})[key] = json.loads(value)
    trained = [d["seconds"] for d in by_trial.values() if d.get("trained") and "seconds" in d]
    skipped = [d["seconds"] for d in by_trial.values() if d.get("trained") is False and "seconds" in d]
    return {"trained": percentile_summary(trained), "over_budget_not_trained": percentile_summary(skipped)}


def predictor_cost(cache: pathlib.Path, *, queries: int, seed: int = 0) -> dict:
    """Microseconds per candidate of ``predict`` and ``predict_many`` with the run's cached predictor."""
    import warnings

    from latency_models import LatencyPredictor
    from search import predict_latency
    from spaces import get_space

    paths = sorted((cache / "devices").glob("*/predictor.json"))
    if not paths:
        raise FileNotFoundError(f"no cached predictor under {cache / 'devices'}")
    fp = json.loads((paths[0].parent / "fingerprint.json").read_text(encoding="utf-8"))
    space = get_space(fp["space"], **fp["options"])
    refit = False
    try:
        predictor = LatencyPredictor.load(paths[0])
    except (ValueError, KeyError, TypeError):  # written by an older predictor format: fit it again, as the search does
        from latency_models import LatencyTable

        predictor, refit = LatencyPredictor.fit(LatencyTable.load(paths[0].parent / "table.json")), True
    rng = np.random.default_rng(seed)
    cands = [space.sample(rng) for _ in range(queries)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor.predict(space.kernels(cands[0]))  # warm-up (lazy imports)
        single = []
        for c in cands:
            t0 = time.perf_counter()
            predictor.predict(space.kernels(c), genes=c.genes)
            single.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        many = predict_latency(predictor, space, cands)
        many_us = (time.perf_counter() - t0) * 1e6 / len(cands)
        t0 = time.perf_counter()
        for c in cands:
            space.kernels(c)
        kernels_us = (time.perf_counter() - t0) * 1e6 / len(cands)
    return {"space": fp["space"], "space_options": fp["options"], "queries": queries,
            "predict_us": percentile_summary(single), "predict_many_us_per_candidate": round(many_us, 1),
            "space_kernels_us_per_candidate": round(kernels_us, 1), "predictor_mode": predictor.mode,
            "predictor_refitted_from_table": refit,
            "latency_ms_range": [float(np.min(many)), float(np.max(many))]}


def markdown(res: dict) -> str:
    q = res["quickstart"]
    t = res["proxy_seconds_per_trial"]["trained"]
    p = res["predictor"]
    rows = [
        "| quantity | value |",
        "|---|---|",
        f"| quick-start `{q['command']}` from a cold cache, wall time | {q['wall_seconds'] / 60:.1f} min "
        + ("" if q["exit_code"] is None else f"(exit code {q['exit_code']})") + " |",
    ]
    for name, sec in res["phases_seconds"].items():
        rows.append(f"| &nbsp;&nbsp;phase: {name.replace('_', ' ')} | {sec:.0f} s |")
    rows += [
        f"| proxy seconds per trained trial (n={t['n']}) | mean {t['mean']:.2f} s, p90 {t['p90']:.2f} s |",
        f"| predictor `predict(candidate)` ({p['queries']} {p['space']} candidates) | mean "
        f"{p['predict_us']['mean']:.0f} µs, p90 {p['predict_us']['p90']:.0f} µs |",
        f"| predictor `predict_many` per candidate | {p['predict_many_us_per_candidate']:.0f} µs |",
        f"| of which `space.kernels(candidate)` | {p['space_kernels_us_per_candidate']:.0f} µs |",
        f"| load average (1 min) at start / end, 2 cores | {res['loadavg_start'][0]:.1f} / {res['loadavg_end'][0]:.1f} |",
    ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/cost", help="results folder")
    ap.add_argument("--queries", type=int, default=200, help="candidates timed through the predictor")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache and run folder")
    ap.add_argument("--reuse", default=None, metavar="WORKDIR",
                    help="do not run the quick start: use a work folder kept by --keep and its printed --log")
    ap.add_argument("--log", default=None, help="with --reuse: the earlier invocation's printed output")
    ap.add_argument("--summarise", action="store_true", help="only rewrite cost.md (and phases) from cost.json")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        res = json.loads((out / "cost.json").read_text(encoding="utf-8"))
        res["phases_seconds"] = phases(res["quickstart"]["lines"], res["quickstart"]["wall_seconds"])
        write_json(out / "cost.json", res)
        (out / "cost.md").write_text(markdown(res), encoding="utf-8")
        print(markdown(res))
        return 0
    load_start = loadavg()
    workdir = pathlib.Path(args.reuse) if args.reuse else pathlib.Path(tempfile.mkdtemp(prefix="karumi-cost-"))
    try:
        quick = quickstart_from_log(workdir, pathlib.Path(args.log)) if args.reuse else run_quickstart(workdir)
        run_dir = pathlib.Path(quick["out"])
        res = {
            "experiment": "cost",
            "command": "python experiments/cost.py --out " + str(args.out),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "loadavg_start": load_start,
            "quickstart": quick,
            "phases_seconds": phases(quick["lines"], quick["wall_seconds"]),
            "proxy_seconds_per_trial": trial_seconds(run_dir),
            "predictor": predictor_cost(pathlib.Path(quick["cache"]), queries=args.queries),
            "quickstart_report": load_snapshot(run_dir),
        }
        res["loadavg_end"] = loadavg()
        write_json(out / "cost.json", res)
        (out / "cost.md").write_text(markdown(res), encoding="utf-8")
        if (run_dir / "report.md").is_file():
            shutil.copy(run_dir / "report.md", out / "quickstart_report.md")
        if (run_dir / "pareto.png").is_file():
            shutil.copy(run_dir / "pareto.png", out / "quickstart_pareto.png")
        print(markdown(res))
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
