"""What does settling cost a profile's kernel jobs, and what does it buy, on this CPU?

A job of the protocol (``karumi-interleaved/3``) is repeated, up to ``settle_attempts`` (8) attempts, while the
reference model timed beside it is more than 3 % above the fastest reference of recent jobs. On the Intel Xeon
behind this VM the reference spends stretches in a level 11-12 % slower in which 32-px models move by 1-3 %
(``experiments/reference_modes.py``), so a kernel job can spend most of its time repeating attempts for a
slowdown its kernels hardly had, and a profile gets fewer kernel rows in its minutes.

Kernels of a committed table (``--run``, a random ``--kernels`` of them) are timed in jobs of 40, the profile's
chunk, in ``--rounds`` rounds; in every round each chunk is timed twice, once with the protocol's settling and
once with none (``settle_attempts=1``), in alternating order. Reported per mode: seconds of wall time per
kernel row, the attempts per job, the reference kept; and per kernel, how the two modes' latencies compare
(median over rounds) beside how each mode repeats itself over rounds.

    python experiments/settle_cost.py --run predictor_local_32_intel --kernels 160 --rounds 4 --name settle_cost_32

Writes ``experiments/results/NAME.json`` and ``.md``; run it alone on the machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _exists, _read  # noqa: E402

from latency_models import cpu_name, kernel_graph, measure_interleaved  # noqa: E402

CHUNK = 40  # kernels per job, as the profile times them
MODES = {"settled": {}, "unsettled": {"settle_attempts": 1}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="predictor_local_32_intel", help="a predictor_local.py run whose committed "
                                                                       "table's kernels are timed")
    ap.add_argument("--kernels", type=int, default=160, help="kernels drawn at random from the table")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="settle_cost_32")
    args = ap.parse_args()
    if not _exists(RESULTS / args.run, "table.json"):
        ap.error(f"--run {args.run}: no committed table under {RESULTS / args.run}; allowed: a predictor_local.py run")
    if args.kernels < CHUNK:
        ap.error(f"--kernels {args.kernels}; allowed: at least {CHUNK} (one job)")
    if args.rounds < 2:
        ap.error(f"--rounds {args.rounds}; allowed: at least 2")
    table = _read(RESULTS / args.run, "table.json")
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(table.kernel_rows), min(args.kernels, len(table.kernel_rows)), replace=False)
    kernels = [table.kernel_rows[i].kernel for i in idx]
    graphs = [kernel_graph(k) for k in kernels]
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load = [loadavg()]
    lat = {m: np.zeros((args.rounds, len(kernels))) for m in MODES}
    jobs: dict[str, list[dict]] = {m: [] for m in MODES}
    t0 = time.time()
    for r in range(args.rounds):
        for start in range(0, len(kernels), CHUNK):
            order = list(MODES) if (r + start // CHUNK) % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                t1 = time.perf_counter()
                ts = measure_interleaved(graphs[start:start + CHUNK], timing={**MODES[mode], "seed": r})
                wall = time.perf_counter() - t1
                lat[mode][r, start:start + len(ts)] = [t.latency_ms for t in ts]
                jobs[mode].append({"round": r, "first": start, "n": len(ts), "wall_s": wall,
                                   "attempt_references_ms": list(ts[0].attempt_references_ms),
                                   "reference_ms": ts[0].reference_ms})
    minutes = (time.time() - t0) / 60
    load.append(loadavg())
    summary = {}
    for mode in MODES:
        js = jobs[mode]
        attempts = [len(j["attempt_references_ms"]) for j in js]
        summary[mode] = {
            "seconds_per_kernel_row": sum(j["wall_s"] for j in js) / sum(j["n"] for j in js),
            "attempts_mean": float(np.mean(attempts)), "jobs_at_most_attempts": int(sum(a >= 8 for a in attempts)),
            "jobs": len(js), "kept_reference_ms_10_50_90": [float(v) for v in np.percentile(
                [j["reference_ms"] for j in js], [10, 50, 90])],
            "repeat_sd_log": float(np.median(np.std(np.log(lat[mode]), axis=0))),
        }
    ratio = np.median(lat["unsettled"], axis=0) / np.median(lat["settled"], axis=0)
    per_round = lat["unsettled"] / lat["settled"]
    out = {"command": "python experiments/settle_cost.py " + " ".join(sys.argv[1:]), "started_utc": started,
           "minutes": round(minutes, 1), "cpu_model": cpu_name(), "table_cpu_model": table.device.get("cpu_model"),
           "load_average_before_after": load, "kernels": len(kernels), "rounds": args.rounds, "modes": summary,
           "unsettled_over_settled": {
               "median_over_rounds": {"median": float(np.median(ratio)),
                                      "p10_p90": [float(v) for v in np.percentile(ratio, [10, 90])],
                                      "within_2": float(np.mean(np.abs(ratio - 1) <= 0.02)),
                                      "within_5": float(np.mean(np.abs(ratio - 1) <= 0.05))},
               "single_round_pairs": {"within_2": float(np.mean(np.abs(per_round - 1) <= 0.02)),
                                      "within_5": float(np.mean(np.abs(per_round - 1) <= 0.05))}},
           "jobs": jobs, "latency_ms": {m: v.tolist() for m, v in lat.items()}}
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out), encoding="utf-8")
    print(_markdown(out))


def _markdown(out: dict) -> str:
    u = out["unsettled_over_settled"]
    m, s = u["median_over_rounds"], u["single_round_pairs"]
    lines = ["# What settling costs and buys a profile's kernel jobs", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']} on {out['cpu_model']} (the table's kernels were timed on "
             f"{out['table_cpu_model']}), {out['minutes']} min, load average (1/5/15 min) before / after: "
             f"{out['load_average_before_after'][0]} / {out['load_average_before_after'][1]}; {out['kernels']} kernels "
             f"in jobs of {CHUNK}, {out['rounds']} rounds, each job once with the protocol's settling and once without.",
             "", "| mode | jobs | s per kernel row | attempts per job (mean) | jobs at 8 attempts | reference kept, p10 / "
             "p50 / p90 ms | repeat sd of a kernel's log latency over rounds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode, r in out["modes"].items():
        q = r["kept_reference_ms_10_50_90"]
        lines.append(f"| {mode} | {r['jobs']} | {r['seconds_per_kernel_row']:.3f} | {r['attempts_mean']:.2f} | "
                     f"{r['jobs_at_most_attempts']} | {q[0]:.4f} / {q[1]:.4f} / {q[2]:.4f} | "
                     f"{100 * r['repeat_sd_log']:.1f} % |")
    lines += ["", f"Unsettled / settled latency per kernel, medians over rounds: median {m['median']:.4f} "
                  f"(p10 {m['p10_p90'][0]:.3f}, p90 {m['p10_p90'][1]:.3f}), {100 * m['within_2']:.1f} % of kernels "
                  f"within ±2 %, {100 * m['within_5']:.1f} % within ±5 %; single rounds' pairs "
                  f"{100 * s['within_2']:.1f} % within ±2 %, {100 * s['within_5']:.1f} % within ±5 %."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
