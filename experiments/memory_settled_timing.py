"""Does the protocol's settling on the memory probe make weight-heavy models re-time within ±2 %?

``karumi-interleaved/3`` settles a job that holds a model file of at least ``memory_settle_mb`` MiB on its memory
probe too (``memory_settle_tolerance``, step 6 of ``latency_models/_worker.py``). ``memory_settling.py`` chose the
rule by reading it, with others, from jobs forced to make every attempt; this one times with the protocol as it
runs, through :func:`latency_models.measure_interleaved`, the rule on (the defaults) and off
(``memory_settle_tolerance=None``) side by side: the torchvision exports of a ``predictor_local.py`` run (at its
input size) are timed ``--rounds`` times, four to a job as ``measure_models`` times them, each round once under
each setting in a random order, the models in a fresh order each time. For each setting: how far apart every
pair of rounds of every model is (within ±2 / 5 / 10 %), the attempts its jobs made and its seconds.

    python experiments/memory_settled_timing.py --run predictor_local_128_memory --rounds 12

Writes ``experiments/results/NAME.json`` and ``.md`` (``--name``, default ``memory_settled_timing_<size>``).
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
from latency_models import PROTOCOL_NAME, default_protocol, measure_interleaved  # noqa: E402
from predictor_local import _run_exports  # noqa: E402
from settled_timing import _agreement  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CHUNK = 4  # models per worker job, as measure_models times them


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="predictor_local_128_memory", help="the predictor_local.py run whose "
                    "torchvision exports (at its input size) are timed")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--memory-settle-tolerance", type=float, default=0.05, help="the setting timed beside "
                    "reference settling alone (default %(default)s)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.rounds < 2:
        raise SystemExit(f"error: --rounds={args.rounds}; allowed: 2 or more (agreement needs two timings)")
    if not 0.0 <= args.memory_settle_tolerance <= 1.0:
        raise SystemExit(f"error: --memory-settle-tolerance={args.memory_settle_tolerance}; allowed: 0 to 1")
    settings = {f"settling on the probe at {100 * args.memory_settle_tolerance:g} %":
                {"memory_settle_tolerance": args.memory_settle_tolerance},
                "reference settling only": {"memory_settle_tolerance": None}}
    size, names, paths = _run_exports(args.run)
    name = args.name or f"memory_settled_timing_{size}"
    size_bytes = [os.path.getsize(p) for p in paths]
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load0, t0 = loadavg(), time.time()
    n, rng = len(names), np.random.default_rng(20261205)
    lat = {s: np.zeros((args.rounds, n)) for s in settings}
    attempts: dict[str, list[int]] = {s: [] for s in settings}
    settled_jobs: dict[str, list[bool]] = {s: [] for s in settings}
    seconds = dict.fromkeys(settings, 0.0)
    for rd in range(args.rounds):
        for s in rng.permutation(list(settings)):
            order = rng.permutation(n)
            t1 = time.time()
            for j in range(0, n, CHUNK):
                idx = order[j:j + CHUNK]
                timings = measure_interleaved([paths[i] for i in idx], timing=settings[s])
                lat[s][rd, idx] = [t.latency_ms for t in timings]
                attempts[s].append(len(timings[0].attempt_references_ms))
                settled_jobs[s].append(timings[0].memory_settled)
            seconds[s] += time.time() - t1
        print(f"round {rd + 1}/{args.rounds}: {time.time() - t0:.0f} s", flush=True)
    agreement = {s: {"all": _agreement(x), **{names[i]: _agreement(x[:, [i]]) for i in range(n)}}
                 for s, x in lat.items()}
    protocol = default_protocol()
    out = {"command": f"python experiments/memory_settled_timing.py --run {args.run} --rounds {args.rounds}"
                      + (f" --memory-settle-tolerance {args.memory_settle_tolerance:g}"
                         if args.memory_settle_tolerance != 0.05 else "")
                      + (f" --name {args.name}" if args.name else ""),
           "protocol": PROTOCOL_NAME, "settle_tolerance": protocol["settle_tolerance"],
           "memory_settle_tolerance": args.memory_settle_tolerance,
           "memory_settle_mb": protocol["memory_settle_mb"], "memory_probe_mb": protocol["memory_probe_mb"],
           "input_size": size, "models": names, "size_bytes": size_bytes, "started_utc": started,
           "seconds": time.time() - t0, "loadavg_before": load0, "loadavg_after": loadavg(),
           "seconds_by_setting": seconds, "attempts_per_job": {s: float(np.mean(a)) for s, a in attempts.items()},
           "jobs_settled_on_memory": {s: float(np.mean(b)) for s, b in settled_jobs.items()},
           "agreement": agreement, "latency_ms": lat, "attempts": attempts}
    write_json(RESULTS / f"{name}.json", out)
    lines = [f"# The protocol's settling on the memory probe, on and off: {n} exports at {size} px timed "
             f"{args.rounds} times ({name})", "",
             f"Command: `{out['command']}`  ",
             f"Started {started}, {out['seconds'] / 60:.1f} min; load average before / after: {load0} / "
             f"{out['loadavg_after']} on 2 shared cores; protocol {PROTOCOL_NAME} (settle_tolerance "
             f"{out['settle_tolerance']:g}, memory probe {out['memory_probe_mb']:g} MiB, memory_settle_tolerance "
             f"{out['memory_settle_tolerance']:g} for jobs holding a file of {out['memory_settle_mb']:g} MiB or "
             f"more), {CHUNK} models per worker job, 1 thread; each round timed once under each setting, in a "
             f"random order; every pair of rounds of every model compared.", "",
             "| setting | jobs settled on the probe | attempts per job | seconds | pairs | within ±2 % | within ±5 % | "
             "within ±10 % | median | 90th pct | worst |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s, a in agreement.items():
        m = a["all"]
        lines.append(f"| {s} | {100 * out['jobs_settled_on_memory'][s]:.0f} % | {out['attempts_per_job'][s]:.2f} | "
                     f"{seconds[s]:.0f} | {m['pairs']} | {100 * m['within_2']:.1f} % | {100 * m['within_5']:.1f} % | "
                     f"{100 * m['within_10']:.1f} % | {m['median_pct']:.1f} % | {m['p90_pct']:.1f} % | "
                     f"{m['worst_pct']:.1f} % |")
    lines += ["", "Per model (its ONNX file's size), within ±2 % of each other (pairs of rounds):", "",
              "| setting | " + " | ".join(f"{m} ({b / 2**20:.0f} MiB)" for m, b in zip(names, size_bytes)) + " |",
              "| --- | " + " | ".join("---" for _ in names) + " |"]
    for s, a in agreement.items():
        lines.append(f"| {s} | " + " | ".join(f"{100 * a[m]['within_2']:.0f} %" for m in names) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
