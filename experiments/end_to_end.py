"""End to end: the teacher against the model the search selects at a binding budget, on two data sets.

For each data set (``digits``, the default; ``shapes``, the procedural 32x32 RGB data set of
``search/_synthetic.py``, harder and generated offline), the data, the built-in teacher and this machine's
latency profile are made once (``$KARUMI_CACHE``); the budget is chosen where it binds (``--budget-quantile``
of the predicted latency of 2,000 random candidates of the whole space, as in ``search_baselines.py``); then
``search.run`` does the whole job: search, Pareto front, final distillation fine-tune, ONNX export and
re-measurement. Reported: test accuracy (PyTorch and the exported ONNX model in ONNX Runtime), predicted
and measured latency (ONNX Runtime on this CPU, 1 thread, the latency table's protocol), stored size,
and speed-up against the teacher, from the run's own ``pareto.json`` and ``best/final.json``.

    python experiments/end_to_end.py --out experiments/results/end_to_end
    python experiments/end_to_end.py --space prune --data shapes --out experiments/results/end_to_end_prune
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from search import SearchOptions  # noqa: E402
from experiments._common import choose_budget, load_setup, load_snapshot, loadavg, write_json

DATA = ("digits", "shapes")


def run_one(data: str, *, quantile: float, budget_ms: float | None, opts: dict[str, Any],
            workdir: pathlib.Path) -> dict[str, Any]:
    """Set up ``data`` once, choose the budget, run ``search.run`` and collect its numbers."""
    import numpy as np

    import search

    t0, l0 = time.perf_counter(), loadavg()
    setup = load_setup(data=data, space=opts["space"], seed=opts["seed"], teacher_epochs=opts["teacher_epochs"],
                       profile_min=opts["profile_min"])
    chosen, lat = choose_budget(setup, quantile=quantile)
    budget = float(budget_ms) if budget_ms else chosen
    setup_s = time.perf_counter() - t0
    out = workdir / data
    result = search.run(budget_ms=budget, data=data, out=out, **opts)
    snap = load_snapshot(out)
    t, f, s = result.teacher, result.final, result.selected
    rec: dict[str, Any] = {
        "data": data,
        "data_description": setup.data.describe(),
        "budget_ms": budget,
        "budget_feasible_share_random": float(np.mean(lat <= budget)),
        "command": search_command(data, budget, opts),
        "setup_seconds": setup_s,
        "run_seconds": result.seconds,
        "trials_finished": result.trials_finished,
        "n_feasible": result.pareto.n_feasible,
        "teacher": {"test_accuracy": result.teacher_test_accuracy, "val_accuracy": t.accuracy,
                    "predicted_latency_ms": t.latency_ms, "measured_latency_ms": t.measured_latency_ms,
                    "size_bytes": t.size_bytes},
        "selected": None,
        "loadavg_start": l0,
        "loadavg_end": loadavg(),
        "snapshot": snap,
    }
    if s is not None and f is not None:
        rec["selected"] = {
            "trial": s.trial, "candidate": f.candidate.to_dict(), "val_accuracy_proxy": s.accuracy,
            "test_accuracy": f.test_accuracy, "onnx_test_accuracy": f.onnx_test_accuracy,
            "predicted_latency_ms": f.latency_ms, "measured_latency_ms": f.measured_latency_ms,
            "measured_fp32_latency_ms": f.measured_fp32_latency_ms, "size_bytes": f.size_bytes,
            "measured_teacher_latency_ms": f.measured_teacher_latency_ms,
            "onnx_bytes": f.onnx_bytes,
            "meets_budget_measured": None if f.measured_latency_ms is None else f.measured_latency_ms <= budget,
            # the teacher timed side by side with the shipped file (not the front's earlier measurement)
            "speedup_measured": _ratio(f.measured_teacher_latency_ms or t.measured_latency_ms, f.measured_latency_ms),
            "speedup_predicted": _ratio(t.latency_ms, f.latency_ms),
            "size_reduction": _ratio(t.size_bytes, f.size_bytes),
            "accuracy_change_points": 100 * (f.onnx_test_accuracy - result.teacher_test_accuracy),
        }
    return rec


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else float(a) / float(b)


def search_command(data: str, budget: float, opts: dict[str, Any]) -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in opts.items() if k not in ("space",))
    return f"python -m search --budget-ms {budget:g} --data {data} --space {opts['space']} {flags}"


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{format(v, spec)}{unit}"


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "| data set | budget (ms) | model | test accuracy (ONNX) | predicted latency | measured latency | size | "
        "measured speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        t, s = r["teacher"], r["selected"]
        t_ms = (s or {}).get("measured_teacher_latency_ms") or t["measured_latency_ms"]  # beside the shipped file
        lines.append(f"| {r['data']} | {r['budget_ms']:g} | teacher (built-in CNN) | {_fmt(t['test_accuracy'], '.2%')} | "
                     f"{_fmt(t['predicted_latency_ms'], '.3f', ' ms')} | {_fmt(t_ms, '.3f', ' ms')} | "
                     f"{_fmt(t['size_bytes'] / 1e3, '.1f', ' kB')} | 1.00x |")
        if s is None:
            lines.append(f"| {r['data']} | {r['budget_ms']:g} | selected | no feasible trial | | | | |")
            continue
        lines.append(f"| {r['data']} | {r['budget_ms']:g} | selected (trial {s['trial']}) | "
                     f"{_fmt(s['onnx_test_accuracy'], '.2%')} | {_fmt(s['predicted_latency_ms'], '.3f', ' ms')} | "
                     f"{_fmt(s['measured_latency_ms'], '.3f', ' ms')} | {_fmt(s['size_bytes'] / 1e3, '.1f', ' kB')} | "
                     f"{_fmt(s['speedup_measured'], '.2f', 'x')} |")
    lines.append("")
    for r in res["runs"]:
        lines.append(f"- {r['data']}: {r['data_description']}; {r['trials_finished']} trials, {r['n_feasible']} feasible; "
                     f"{100 * r['budget_feasible_share_random']:.0f}% of random candidates meet the budget; "
                     f"`{r['command']}`; load average {r['loadavg_start'][0]:.1f} -> {r['loadavg_end'][0]:.1f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/end_to_end", help="results folder")
    ap.add_argument("--data", nargs="+", default=list(DATA), help="data sets (default digits shapes)")
    ap.add_argument("--budget-quantile", type=float, default=0.3, help="budget quantile of random candidates")
    ap.add_argument("--budget-ms", type=float, default=None, help="a fixed budget instead (every data set)")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--timeout-min", type=float, default=6.0)
    ap.add_argument("--proxy-epochs", type=int, default=SearchOptions.proxy_epochs)
    ap.add_argument("--proxy-samples", type=int, default=SearchOptions.proxy_samples)
    ap.add_argument("--final-epochs", type=int, default=15)
    ap.add_argument("--teacher-epochs", type=int, default=12)
    ap.add_argument("--profile-min", type=float, default=3.0)
    ap.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--space", default="mobilenet", help="the space searched (default mobilenet)")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = {"space": args.space, "seed": 0, "trials": args.trials, "timeout_min": args.timeout_min,
            "proxy_epochs": args.proxy_epochs, "proxy_samples": args.proxy_samples,
            "final_epochs": args.final_epochs, "teacher_epochs": args.teacher_epochs, "profile_min": args.profile_min}
    workdir = pathlib.Path(args.keep) if args.keep else pathlib.Path(tempfile.mkdtemp(prefix="karumi-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"experiment": "end_to_end",
                           "command": "python experiments/end_to_end.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "karumi_cache": os.environ.get("KARUMI_CACHE", "~/.cache/karumi"),
                           "cpu_count": os.cpu_count(), "options": opts, "runs": []}
    path = out / "end_to_end.json"
    if path.is_file():  # keep the data sets of an earlier invocation that this one does not redo
        res["runs"] = [r for r in json.loads(path.read_text(encoding="utf-8")).get("runs", []) if r["data"] not in args.data]
    for data in args.data:
        print(f"== {data}", flush=True)
        rec = run_one(data, quantile=args.budget_quantile, budget_ms=args.budget_ms, opts=opts, workdir=workdir)
        res["runs"].append(rec)
        for name in ("report.md", "pareto.png", "pareto.json"):
            src = workdir / data / name
            if src.is_file():
                shutil.copy(src, out / f"{data}_{name}")
        write_json(path, res)
        (out / "end_to_end.md").write_text(markdown(res), encoding="utf-8")
        print(markdown(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
