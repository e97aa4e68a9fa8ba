"""Where the latency predictor stands on this machine: every committed table of the current protocol, fitted with
today's default ``LatencyPredictor.fit`` and scored on its run's held-out timings (fits only, times nothing).

The tables under ``experiments/results/predictor_local_*/`` were profiled on different days, on the two CPUs this VM
lands on (an AMD EPYC and an Intel Xeon), by the code of their day; their README paragraphs quote what that day's
fit scored. This script scores all of them with the fit as it is now, so that one table of figures says where
issue 12's targets stand: for each table, the held-out random-width models of the spaces, their whole float32
versions and the torchvision exports (on the predictor's scale where the fit corrects for the machine's state,
``LatencyPredictor.on_scale``), on their first timing and, where the run was timed again (``NAME_retime``), on the
second; and the noise floor beside them, how far the second timing is from the first.

    python experiments/latency_status.py --jobs 2

``--jobs N`` fits N tables at once, one process each (a fit is single-threaded; the figures do not depend on it).
Writes ``experiments/results/latency_status.json`` and ``.md``. Run it alone for its minutes to mean anything; its
figures do not depend on the machine's load. A table profiled after that run is scored on its own and merged into the
committed figures, the other tables' entries kept as they are (valid while the default fit is the one they were
scored with; ``tests/experiments/test_latency_status.py`` refits one of them to check):

    python experiments/latency_status.py --add predictor_local_224_fastexport
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from offgrid_siblings import _score  # noqa: E402
from predictor_local import RESULTS, _exists, _read, _timed_twice  # noqa: E402
from weight_term import _held_groups, _run_tables  # noqa: E402

from latency_models import LatencyPredictor, state_gap  # noqa: E402

#: The tables of protocol karumi-interleaved/3 that predictor_local.py profiled (target 1, and target 2 as profiled).
PROFILED = ("predictor_local_32_memory,predictor_local_32_noprobe,predictor_local_32_pool,predictor_local_32_intel,"
            "predictor_local_32_intel_ks1,predictor_local_32_intel_shuffle8,predictor_local_32_intel_drift,"
            "predictor_local_96_memory,"
            "predictor_local_128_aligned,predictor_local_128_settled,predictor_local_128_settled8,"
            "predictor_local_128_memory,predictor_local_128_pool,predictor_local_128_fastexport,"
            "predictor_local_128_kshare5,predictor_local_128_intel,predictor_local_128_intel_shuffle8,"
            "predictor_local_128_intel_cover,predictor_local_128_intel_offgrid,"
            "predictor_local_128_intel_offgrid2,predictor_local_128_intel_offgrid3,predictor_local_224_memory,"
            "predictor_local_224_pool,predictor_local_224_fastexport")
#: The same tables with nine other models of the exports' kinds added (outside_models.py --as): target 2 as it allows.
WITH_NINE = ("predictor_local_32_memory_variants9,predictor_local_32_pool_variants9,"
             "predictor_local_32_intel_shuffle8_variants9,predictor_local_32_intel_drift_variants9,"
             "predictor_local_128_pool_variants9,"
             "predictor_local_224_pool_variants9")
GROUPS = {"spaces, all": "random widths", "spaces, float32, all": "float32", "torchvision": "exports"}
TARGET_5, TARGET_10, TARGET_EXPORTS = 0.80, 0.95, 0.90


def _cpu(table) -> str:
    model = (table.device.get("cpu_model") or "").lower()
    return "Intel" if "intel" in model else "AMD" if "amd" in model else model or "?"


def _record(run: str) -> dict:
    """What a run's own JSON says about how it was profiled (a table made by outside_models.py has none)."""
    path = RESULTS / f"{run}.json"
    if not path.is_file():  # outside_models.py --as BASE_variants9: the base run's profile, nine models added
        base = run.rsplit("_variants", 1)[0]
        return _record(base) if base != run else {}
    rec = json.loads(path.read_text())
    return {k: rec.get(k) for k in ("finished_utc", "profile_minutes", "command")}


def _second_timings(run: str) -> list[tuple[str, pathlib.Path]]:
    """The run's re-timings (``predictor_local.py --retime RUN``): ``RUN_retime``, ``RUN_retime2``, ..."""
    out = []
    for suffix in ("_retime", "_retime2", "_retime3"):
        folder = RESULTS / f"{run}{suffix}"
        if _exists(folder, "held.json"):
            out.append((f"{run}{suffix}", folder))
    return out


def status(run: str) -> dict:
    """Fit ``run``'s committed table with the default fit; score its held-out timings, first and re-timed."""
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports, in every process
    t0 = time.time()
    table, held, groups = _run_tables(run)
    pred = LatencyPredictor.fit(table)
    out: dict = {"cpu": _cpu(table), "input_size": table.protocol.get("space_options", {}).get("input_size"),
                 **_record(run), "kernel_rows": len(table.kernel_rows), "model_rows": len(table.model_rows),
                 "reference_exponent": pred.reference_exponent, "loo_rmspe": pred.fit_info.get("loo_rmspe"),
                 "first": {GROUPS[g]: _stat(_score(pred, table, rows)) for g, rows in groups if g in GROUPS},
                 "first_state": _state(pred, groups), "second": {}}
    cand = lambda r: json.dumps(r.candidate, sort_keys=True)  # noqa: E731
    for name, folder in _second_timings(run):
        again = _held_groups(folder, _read(folder, "held.json"))
        first = dict(groups)
        out["second"][name] = {
            "scores": {GROUPS[g]: _stat(_score(pred, table, rows)) for g, rows in again if g in GROUPS},
            "state": _state(pred, again),
            "floor": {GROUPS[g]: _timed_twice(pred, first[g], rows, cand if g != "torchvision" else lambda r: r.source)
                      for g, rows in again if g in GROUPS and g in first}}
    out["fit_seconds"] = round(time.time() - t0, 1)
    return out


def _state(pred: LatencyPredictor, groups: list) -> dict | None:
    """Where a timing's machine state stood against the table's (``latency_models.state_gap`` of its random widths'
    and exports' references: what ``python -m latency_models evaluate`` says of it)."""
    return state_gap(pred, [r.reference_ms for g, rows in groups if g in ("spaces, all", "torchvision") for r in rows])


def _stat(scored: dict) -> dict:
    return {k: scored[k] for k in ("n", "within_5", "within_10", "mean_error", "median_abs_error")}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _pair(s: dict | None) -> str:
    return "-" if not s else f"{_pct(s['within_5'])} / {_pct(s['within_10'])}"


def markdown(out: dict) -> list[str]:
    lines = ["# Where the latency predictor stands (latency_status)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, fits only, {out['minutes']} min, load average before / after "
             f"{out['load_average_before']} / {out['load_average_after']}. Every committed table of protocol "
             "karumi-interleaved/3, fitted with the default `LatencyPredictor.fit` of this commit and scored on its "
             "run's held-out timings (never in the table), on the predictor's scale. Within ±5 / ±10 % in per cent; "
             "`re-timed`: the same predictor on the run's second timing of the same models (`--retime`), and the "
             "floor: the share of the random-width models whose second timing is within ±2 / ±5 % of their first. "
             "A `_variants9` table is its base run's table with nine other models of the exports' kinds added "
             "(`outside_models.py --as`), scored on the base run's held-out timings.",
             *(f"Added with the same fit: `{a['command']}` ({a['started_utc']}, {a['minutes']} min): "
               + ", ".join(f"`{r.removeprefix('predictor_local_')}`" for r in a["runs"]) + "."
               for a in out.get("additions", [])), "",
             "`state`: the re-timing's reference over the table's (the median of its models'), against the table's "
             "model rows' 5th-95th percentile; `outside` where `latency_models.state_gap` (what `python -m "
             "latency_models evaluate` prints) says the re-timing ran in a state the table's rows never saw.", "",
             "| table | CPU | px | profiled | profile min | kernel / model rows | LOO RMSPE | random widths | "
             "float32 | exports (±10) | re-timed: random widths | float32 | exports (±10) | floor ±2 / ±5 (sd) | "
             "re-timed: state (table) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run, r in out["runs"].items():
        f = r["first"]
        row = [f"`{run.removeprefix('predictor_local_')}`", r["cpu"], str(r["input_size"]),
               (r.get("finished_utc") or "-")[:16].replace("T", " "),
               "-" if r.get("profile_minutes") is None else f"{r['profile_minutes']:.1f}",
               f"{r['kernel_rows']} / {r['model_rows']}", _pct(r["loo_rmspe"]), _pair(f.get("random widths")),
               _pair(f.get("float32")), _pct(f.get("exports", {}).get("within_10"))]
        seconds = list(r["second"].values())
        if seconds:
            s, fl = seconds[0]["scores"], seconds[0]["floor"].get("random widths")
            row += [_pair(s.get("random widths")), _pair(s.get("float32")), _pct(s.get("exports", {}).get("within_10")),
                    "-" if not fl else f"{_pct(fl['retime_within_2'])} / {_pct(fl['retime_within_5'])} "
                                       f"({_pct(fl['sd_log_retime_over_first'])})", _state_cell(seconds[0].get("state"))]
        else:
            row += ["-"] * 5
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Targets of issue 12, per CPU and input size (tables listed where met on the first timing):", "",
              "| CPU | px | tables | target 1 (random widths ≥ 80 / 95 %) met on | best random widths (±5 / ±10) | "
              "target 2 (exports ≥ 90 % within ±10 %) met on | best exports |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, t in out["targets"].items():
        cpu, px = key.split("/")
        lines.append(f"| {cpu} | {px} | {t['tables']} | {', '.join(t['target_1_met']) or 'none'} | "
                     f"{t['best_random_widths']} | {', '.join(t['target_2_met']) or 'none'} | {t['best_exports']} |")
    return lines


def _state_cell(gap: dict | None) -> str:
    if not gap:
        return "-"
    lo, hi = gap["table_state_range"]
    return f"{gap['state_ratio']:.3f} ({lo:.3f}-{hi:.3f}){', **outside**' if gap['state_outside'] else ''}"


def _met_1(rw: dict) -> bool:
    return rw["within_5"] >= TARGET_5 and rw["within_10"] >= TARGET_10


def targets(runs: dict) -> dict:
    """Per CPU and input size: the tables on which target 1 and target 2 are met (first timing), and the best of
    each (random widths: a table meeting target 1 first, then the larger sum of the two shares; the first on ties)."""
    groups: dict[tuple[str, int], list[tuple[str, dict]]] = {}
    for run, r in runs.items():
        groups.setdefault((r["cpu"], r["input_size"]), []).append((run.removeprefix("predictor_local_"), r["first"]))
    out: dict = {}
    for (cpu, size), tables in sorted(groups.items()):
        rws = [(name, f["random widths"]) for name, f in tables if f.get("random widths")]
        exs = [(name, f["exports"]) for name, f in tables if f.get("exports")]
        best_rw = max(rws, key=lambda t: (_met_1(t[1]), t[1]["within_5"] + t[1]["within_10"]), default=None)
        best_ex = max(exs, key=lambda t: t[1]["within_10"], default=None)
        out[f"{cpu}/{size}"] = {
            "tables": len(tables), "target_1_met": [name for name, rw in rws if _met_1(rw)],
            "target_2_met": [name for name, ex in exs if ex["within_10"] >= TARGET_EXPORTS],
            "best_random_widths": f"{_pair(best_rw[1])} (`{best_rw[0]}`)" if best_rw else "-",
            "best_exports": f"{_pct(best_ex[1]['within_10'])} (`{best_ex[0]}`)" if best_ex else "-"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=f"{PROFILED},{WITH_NINE}",
                    help="predictor_local.py runs (or outside_models.py --as tables) with a committed table")
    ap.add_argument("--add", default="", help="score only these runs (comma-separated) and merge them into the "
                                              "committed NAME.json, keeping its other runs' entries")
    ap.add_argument("--name", default="latency_status")
    ap.add_argument("--jobs", type=int, default=1, help="tables fitted at once, one process each (fits are "
                                                        "single-threaded; the figures do not depend on it)")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs {args.jobs}; allowed: 1 or more")
    t0 = time.time()
    command = " ".join(["python experiments/latency_status.py", *sys.argv[1:]])
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if args.add:
        path = RESULTS / f"{args.name}.json"
        if not path.is_file():
            ap.error(f"--add: no committed {path.name} to add to; allowed: after a full run "
                     f"(python experiments/latency_status.py --name {args.name})")
        out = json.loads(path.read_text())
        todo = [r for r in args.add.split(",") if r]
    else:
        out = {"command": command, "started_utc": started, "load_average_before": loadavg(), "runs": {}}
        todo = [r for r in args.runs.split(",") if r]
    with concurrent.futures.ProcessPoolExecutor(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        for run, r in zip(todo, (pool.map if pool else map)(status, todo)):  # in the runs' order
            out["runs"][run] = r
            rw = r["first"].get("random widths")
            print(f"{run}: random widths {_pair(rw)}, exports {_pct(r['first'].get('exports', {}).get('within_10'))} "
                  f"({r['fit_seconds']} s)", flush=True)
    minutes = round((time.time() - t0) / 60, 1)
    if args.add:
        order = [r for r in f"{PROFILED},{WITH_NINE}".split(",") if r in out["runs"]]
        out["runs"] = {r: out["runs"][r] for r in order + [r for r in out["runs"] if r not in order]}
        out.setdefault("additions", []).append({"command": command, "started_utc": started, "runs": todo,
                                                "minutes": minutes, "load_average": loadavg()})
    else:
        out["minutes"], out["load_average_after"] = minutes, loadavg()
    out["targets"] = targets(out["runs"])
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text("\n".join(markdown(out)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
