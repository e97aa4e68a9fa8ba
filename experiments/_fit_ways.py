"""Fit the committed tables two ways and score both on their runs' held-out timings (fits only, no timing).

Shared by the experiments that compare one option of ``LatencyPredictor.fit`` on and off (``block_padding.py``,
``transition_penalty.py``, ``nonnegative_families.py``, ``nested_families.py``, ``stem_families.py``,
``depthwise_channels.py``, ``float16_layout.py``): each of the ``predictor_local.py`` runs named is fitted both ways
and scored on its held-out models (the spaces' random widths, their whole float32 models, the torchvision exports: on
the predictor's scale where the fit corrects for the machine's state); the summary gives each group's share within ±5 /
±10 % (mean over the tables) and each export's mean error over the tables, both ways. ``--jobs N`` fits N tables at
once in processes of their own (a fit is single-threaded: on two cores ``--jobs 2`` halves the time).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import sys
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from _common import loadavg, write_json
from offgrid_siblings import _score
from predictor_local import RESULTS
from weight_term import _run_tables
from weight_term_auto import DEFAULT_RUNS, SHOWN

from latency_models import LatencyPredictor

#: One way to fit: its label in the results, and the keyword arguments of ``LatencyPredictor.fit``.
Way = tuple[str, dict[str, Any]]
#: The sixteen tables and the two with nine models of the exports' kinds added where target 2 is decided (32, 128 px).
RUNS_WITH_NINE = DEFAULT_RUNS + ",predictor_local_32_memory_variants9,predictor_local_128_pool_variants9"


def main(script: str, description: str, ways: Sequence[Way], title: str, what: str, *,
         default_runs: str = DEFAULT_RUNS) -> dict:
    """The command line of ``experiments/SCRIPT.py``: ``--runs`` (the committed tables, default ``default_runs``: the
    sixteen of ``weight_term_auto.py``) and ``--name`` (default ``script``), then :func:`run`. The markdown opens with
    ``title``, the command, the run's time and load, and ``what`` (the tables and the two ways, in a sentence)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--runs", default=default_runs, help="predictor_local.py runs whose committed tables are fitted")
    ap.add_argument("--name", default=script)
    ap.add_argument("--jobs", type=int, default=1, help="tables fitted at once, one process each (fits are "
                                                        "single-threaded; the results do not depend on it)")
    args = ap.parse_args()
    if args.jobs < 1:
        sys.exit(f"error: --jobs {args.jobs}; allowed: 1 or more")

    def header(out: dict) -> list[str]:
        return [f"# {title} ({script})", "", f"Command: `{out['command']}`  ",
                f"Run {out['started_utc']}, fits only, {out['minutes']} min, load average before / after "
                f"{out['load_average_before']} / {out['load_average_after']}: {what}", ""]

    return run(" ".join([f"python experiments/{script}.py", *sys.argv[1:]]), args.name, args.runs, ways, header,
               jobs=args.jobs)


def _fit_run(table_run: str, ways: Sequence[Way]) -> dict:
    """One run's table fitted each way, scored on its held-out groups."""
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    table, _, groups = _run_tables(table_run)
    res: dict = {"cpu_model": table.device.get("cpu_model"), "nchwc": table.device.get("nchwc")}
    for label, kwargs in ways:
        pred = LatencyPredictor.fit(table, **kwargs)
        res[label] = {g: _score(pred, table, rows) for g, rows in groups if g in SHOWN}
    return res


def run(command: str, name: str, runs: str, ways: Sequence[Way], header: Callable[[dict], list[str]], *,
        jobs: int = 1) -> dict:
    """Fit every run of ``runs`` (comma-separated) each of the two ``ways`` (``jobs`` tables at once), write
    ``RESULTS/name.json`` and ``.md`` (``header(results)``: the markdown's first lines, above the tables) and return
    the results."""
    labels = [label for label, _ in ways]
    first, second = labels
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    t0 = time.time()
    out: dict = {"command": command, "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "load_average_before": loadavg(), "runs": {}}
    names = [r for r in runs.split(",") if r]
    with concurrent.futures.ProcessPoolExecutor(jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        fitted = (pool.map if pool else map)(_fit_run, names, [ways] * len(names))  # in the runs' order
        for table_run, res in zip(names, fitted):
            out["runs"][table_run] = res
            print(table_run, " | ".join(f"{g}: {res[first][g]['within_10']:.0%} -> {res[second][g]['within_10']:.0%}"
                                        for g in res[second]), flush=True)
    out["minutes"] = round((time.time() - t0) / 60, 1)
    out["load_average_after"] = loadavg()
    out["summary"] = summary(out["runs"], labels)
    write_json(RESULTS / f"{name}.json", out)
    (RESULTS / f"{name}.md").write_text("\n".join([*header(out), *tables(out, labels)]) + "\n", encoding="utf-8")
    return out


def summary(runs: dict, labels: Sequence[str]) -> dict:
    """Per group and way, the mean over the tables of the share within ±5 / ±10 %; per export and way, its mean and
    mean absolute error over the tables."""
    groups: dict = {}
    for g in SHOWN:
        per = {label: [r[label][g] for r in runs.values() if g in r[label]] for label in labels}
        if per[labels[-1]]:
            groups[g] = {label: {"tables": len(v), "within_5": float(np.mean([m["within_5"] for m in v])),
                                 "within_10": float(np.mean([m["within_10"] for m in v]))} for label, v in per.items()}
    exports: dict = {}
    for r in runs.values():
        if "torchvision" not in r[labels[-1]]:
            continue
        for label in labels:
            for row in r[label]["torchvision"]["rows"]:
                model = row["model"].rsplit("_", 1)[0]  # the input size off: one model over the tables
                exports.setdefault(model, {}).setdefault(label, []).append(row["error"])
    return {"groups": groups, "exports": {m: {label: {"tables": len(e), "mean_error": float(np.mean(e)),
                                                      "mean_abs_error": float(np.mean(np.abs(e))),
                                                      "within_10": float(np.mean(np.abs(np.asarray(e)) <= 0.10))}
                                              for label, e in v.items()} for m, v in exports.items()}}


def tables(out: dict, labels: Sequence[str]) -> list[str]:
    """The three markdown tables of ``out``: per group, per export, per table (first way, then the second)."""
    s, (a_, b_) = out["summary"], labels
    lines = [f"| held out | tables | {a_}: within ±5 % / ±10 %, mean over the tables | {b_} |",
             "| --- | --- | --- | --- |"]
    for g, v in s["groups"].items():
        a, b = v[a_], v[b_]
        lines.append(f"| {g} | {b['tables']} | {a['within_5']:.1%} / {a['within_10']:.1%} | "
                     f"{b['within_5']:.1%} / {b['within_10']:.1%} |")
    lines += ["", f"| export | tables | {a_}: mean error, mean abs error, within ±10 % | {b_} |",
              "| --- | --- | --- | --- |"]
    for m, v in s["exports"].items():
        a, b = v[a_], v[b_]
        lines.append(f"| {m} | {b['tables']} | {a['mean_error']:+.1%}, {a['mean_abs_error']:.1%}, {a['within_10']:.0%} "
                     f"| {b['mean_error']:+.1%}, {b['mean_abs_error']:.1%}, {b['within_10']:.0%} |")
    lines += ["", f"| table | blocked layout | {a_}: exports / random widths / float32 within ±10 % | {b_} |",
              "| --- | --- | --- | --- |"]
    for run_, r in out["runs"].items():
        def cells(label: str) -> str:
            return " / ".join(f"{r[label][g]['within_10']:.0%}" if g in r[label] else "-" for g in
                              ("torchvision", "spaces, all", "spaces, float32, all"))
        lines.append(f"| {run_} | {r['nchwc']} | {cells(a_)} | {cells(b_)} |")
    return lines
