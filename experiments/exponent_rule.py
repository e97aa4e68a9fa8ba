"""The machine-state exponent, chosen by leave-one-out alone or only where it earns its place.

``LatencyPredictor.fit(reference_exponent="auto")`` puts every row on the table's reference scale with the exponent of
:data:`~latency_models._predictor.REFERENCE_EXPONENTS` (then the best +- 0.5) that gives the lowest leave-one-out
RMSPE on the model rows. On a calm table the rows' references spread about 1 %, so an exponent of 4.5 moves them by
about 5 %, and the choice between 0 and 4.5 can rest on a hundredth of the error: on ``predictor_local_32_memory_
variants9`` (AMD, 32 px, references 0.450-0.456 ms) the fit chose 4.5 for a leave-one-out RMSPE of 3.94 % against
3.96 % at 0, and ResNet-18, held out, went from -1 % to -35 %. This experiment fits every committed table of
``latency_status.py`` at each exponent of the half-step grid 0-4.5 (the weight term as the default fit chose it) and
scores each fit on the run's held-out timings (first and re-timed, on the fit's scale), then asks what each rule
would have chosen and scored:

- ``auto``: today's rule (the coarse grid, then the best +- 0.5; the lowest leave-one-out RMSPE);
- ``margin M``: the same exponents evaluated, the smallest whose leave-one-out RMSPE is within ``M`` (relative) of the
  lowest: an exponent must lower the error by more than ``M`` to be taken over a smaller one;
- ``0``: as measured.

    python experiments/exponent_rule.py

Fits only, times nothing. Writes ``experiments/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from latency_status import GROUPS, PROFILED, WITH_NINE, _cpu, _second_timings, _stat  # noqa: E402
from offgrid_siblings import _score  # noqa: E402
from predictor_local import RESULTS, _read  # noqa: E402
from weight_term import _held_groups, _run_tables  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402

#: The exponents ``LatencyPredictor.fit(reference_exponent="auto")`` evaluates (its docstring): this coarse grid, then
#: the best of it +- the step.
REFERENCE_EXPONENTS, _EXPONENT_STEP = (0.0, 1.0, 2.0, 3.0, 4.0), 0.5
GRID = tuple(float(b) for b in np.arange(0.0, max(REFERENCE_EXPONENTS) + _EXPONENT_STEP + 1e-9, _EXPONENT_STEP))
MARGINS = (0.005, 0.01, 0.02, 0.05)


def per_exponent(run: str) -> dict:
    """The default fit's choices, then a fit at every exponent of :data:`GRID` with its weight term, scored."""
    table, _, groups = _run_tables(run)
    seconds = [(name, _held_groups(folder, _read(folder, "held.json"))) for name, folder in _second_timings(run)]
    auto = LatencyPredictor.fit(table)
    term = auto.weight_term
    out: dict = {"cpu": _cpu(table), "input_size": table.protocol.get("space_options", {}).get("input_size"),
                 "auto_exponent": auto.reference_exponent, "weight_term": term, "by_exponent": {}}
    refs = np.array([r.reference_ms for r in table.model_rows if r.reference_ms])
    out["reference_spread"] = float(refs.max() / refs.min() - 1.0) if len(refs) else None
    out["reference_p95_over_p5"] = float(np.quantile(refs, 0.95) / np.quantile(refs, 0.05) - 1.0) if len(refs) else None
    for b in GRID:
        pred = auto if b == auto.reference_exponent else LatencyPredictor.fit(table, reference_exponent=b,
                                                                              weight_term=term)
        rec = {"loo_rmspe": pred.fit_info.get("loo_rmspe"),
               "first": {GROUPS[g]: _stat(_score(pred, table, rows)) for g, rows in groups if g in GROUPS}}
        if seconds:
            name, again = seconds[0]
            rec["retimed"] = {GROUPS[g]: _stat(_score(pred, table, rows)) for g, rows in again if g in GROUPS}
        out["by_exponent"][f"{b:g}"] = rec
    return out


def choose(rec: dict, rule: str) -> float:
    """The exponent ``rule`` picks from one table's per-exponent leave-one-out errors (the exponents the default fit
    evaluates: the coarse grid, then the best of it +- the step)."""
    loo = {float(b): r["loo_rmspe"] for b, r in rec["by_exponent"].items()}
    if rule == "0":
        return 0.0
    coarse = [float(b) for b in REFERENCE_EXPONENTS]
    best = min(coarse, key=lambda b: loo[b])
    seen = sorted({*coarse, *(b for b in (best - _EXPONENT_STEP, best + _EXPONENT_STEP) if b >= 0)})
    low = min(loo[b] for b in seen)
    if rule == "auto":
        return min(seen, key=lambda b: loo[b])
    margin = float(rule.split()[1])
    return min(b for b in seen if loo[b] <= (1.0 + margin) * low)


def summarise(runs: dict) -> dict:
    rules = ["auto", *(f"margin {m:g}" for m in MARGINS), "0"]
    out: dict = {}
    for rule in rules:
        picks = {run: choose(r, rule) for run, r in runs.items()}
        s: dict = {"exponents": picks}
        for when in ("first", "retimed"):
            for g in GROUPS.values():
                vals = [r["by_exponent"][f"{picks[run]:g}"].get(when, {}).get(g) for run, r in runs.items()]
                vals = [v for v in vals if v]
                if vals:
                    s[f"{when}: {g}"] = {"tables": len(vals), "within_5": float(np.mean([v["within_5"] for v in vals])),
                                         "within_10": float(np.mean([v["within_10"] for v in vals]))}
        out[rule] = s
    return out


def markdown(out: dict) -> list[str]:
    s = out["summary"]
    rules = list(s)
    lines = ["# The machine-state exponent: lowest leave-one-out error, or only where it earns its place "
             "(exponent_rule)", "", f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, fits only, {out['minutes']} min, load average before / after "
             f"{out['load_average_before']} / {out['load_average_after']}. Every committed table of "
             "`latency_status.py` fitted at each exponent 0-4.5 (the weight term as the default fit chose it), scored "
             "on its run's held-out timings on that fit's scale; each rule's pick scored. Within ±5 / ±10 %, mean "
             "over the tables, in per cent.", "",
             "| held out | tables | " + " | ".join(rules) + " |",
             "| --- | --- | " + " | ".join("---" for _ in rules) + " |"]
    keys = [k for k in s["auto"] if k != "exponents"]
    for k in keys:
        cells = [f"{100 * s[r][k]['within_5']:.1f} / {100 * s[r][k]['within_10']:.1f}" for r in rules]
        lines.append(f"| {k} | {s['auto'][k]['tables']} | " + " | ".join(cells) + " |")
    lines += ["", "Per table: the reference spread (max / min - 1 of the model rows' references), the leave-one-out "
              "RMSPE (%) at each exponent, each rule's pick, and the exports within ±10 % / random widths within ±5 % "
              "at the pick of `auto` and of `margin 0.02`.", "",
              "| table | CPU | px | ref spread % | LOO RMSPE by exponent 0 / 0.5 / ... / 4.5 | "
              + " | ".join(rules) + " | exports, rw ±5: auto -> margin 0.02 |",
              "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in rules) + " | --- |"]
    for run, r in out["runs"].items():
        loo = " / ".join(f"{100 * v['loo_rmspe']:.2f}" for v in r["by_exponent"].values())

        def cell(rule: str) -> str:
            f = r["by_exponent"][f"{s[rule]['exponents'][run]:g}"]["first"]
            ex = f.get("exports", {}).get("within_10")
            return f"{'-' if ex is None else f'{100 * ex:.0f}'}, {100 * f['random widths']['within_5']:.0f}"

        lines.append(f"| `{run.removeprefix('predictor_local_')}` | {r['cpu']} | {r['input_size']} | "
                     f"{100 * (r['reference_spread'] or 0):.1f} | {loo} | "
                     + " | ".join(f"{s[rule]['exponents'][run]:g}" for rule in rules)
                     + f" | {cell('auto')} -> {cell('margin 0.02')} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=f"{PROFILED},{WITH_NINE}",
                    help="predictor_local.py runs (or outside_models.py --as tables) with a committed table")
    ap.add_argument("--name", default="exponent_rule")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    t0 = time.time()
    out: dict = {"command": " ".join(["python experiments/exponent_rule.py", *sys.argv[1:]]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "load_average_before": loadavg(), "runs": {}}
    for run in [r for r in args.runs.split(",") if r]:
        t1 = time.time()
        out["runs"][run] = r = per_exponent(run)
        print(run, f"auto {r['auto_exponent']:g}", json.dumps({b: round(100 * v["loo_rmspe"], 2)
                                                              for b, v in r["by_exponent"].items()}),
              f"({time.time() - t1:.0f} s)", flush=True)
    out["minutes"] = round((time.time() - t0) / 60, 1)
    out["load_average_after"] = loadavg()
    out["summary"] = summarise(out["runs"])
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text("\n".join(markdown(out)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
