"""Does settling (protocol ``karumi-interleaved/3``) make a re-timing agree with the first timing?

The held-out models of a committed ``predictor_local.py`` run (its candidates, exported again with
``space.onnx``), timed ``--rounds`` times in a fresh order each round, a few models per worker job as
``measure_models`` times them. Every job settles (the protocol's step 4: an attempt whose reference is more
than ``settle_tolerance`` above the fastest recent reference is repeated, the fastest kept), and each
``Timing`` carries the model's latency in every attempt: the first is what the same job reported under ``/2``.
Compared side by side from the same jobs: for every model and every pair of rounds, how far apart the two
timings are, as measured and on the reference's scale (``latency * (table_reference / reference) ** e``,
``e`` the exponent the run's state fit chose), for a job stopped after 1 (no settling), 2, 4 and
``--attempts`` attempts, read from the same jobs. The cost: attempts per job and seconds.

    python experiments/settled_timing.py --run predictor_local_128_bias_b --rounds 5

``--check RUN`` times nothing: it reads a ``predictor_local.py --retime`` run (its held-out models timed a
second time, under ``/2``) with its source run, finds the models whose two timings disagree by more than 5 %
on the reference's scale, and says which of them had a timing that settling would have repeated: a job whose
reference was more than the protocol's ``settle_tolerance`` above the fastest reference of the ``FLOOR_JOBS``
jobs before it (a job: consecutive rows that share one reference timing).

    python experiments/settled_timing.py --check predictor_local_128_bias_b_retime

Writes ``experiments/results/settled_timing.json`` and ``.md`` (``--name``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import itertools  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import _read, _run_record  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CHUNK = 4  # models per worker job, as measure_models times them
FLOOR_JOBS = 8  # the recent jobs whose fastest reference is the floor, as latency_models._protocol keeps it


def _flagged(rows: list, tolerance: float) -> list[bool]:
    """Per row: whether its job's reference was more than ``tolerance`` above the fastest reference of the
    :data:`FLOOR_JOBS` jobs before it (the first job has no floor here: not flagged)."""
    jobs: list[float] = []
    out, flag = [], False
    for i, r in enumerate(rows):
        if i == 0 or r.reference_ms != rows[i - 1].reference_ms:
            flag = bool(jobs) and r.reference_ms > (1 + tolerance) * min(jobs[-FLOOR_JOBS:])
            jobs.append(r.reference_ms)
        out.append(flag)
    return out


def check(name: str) -> None:
    """``--check``: which disagreeing re-timings of a committed ``--retime`` run settling would have repeated."""
    import json

    from latency_models import default_protocol

    record = _run_record(name)
    source = record.get("table_from")
    if not source:
        raise SystemExit(f"error: {name} is not a --retime run (no table_from in its record); allowed: NAME_retime")
    exponent, table_ref = float(record.get("reference_exponent") or 0.0), float(record["table_reference_ms"])
    tol = float(default_protocol()["settle_tolerance"])
    lines = [f"# Would settling have repeated the timings that disagreed? ({name})", "",
             f"Command: `python experiments/settled_timing.py --check {name}`  ",
             f"The held-out models of `{source}` and their second timing in `{name}` (both under the protocol "
             f"`{record['protocol'].get('name')}`, no settling), on the reference's scale (x ({table_ref:.4f} / "
             f"reference) ** {exponent:g}). Flagged: a timing whose job's reference was more than {100 * tol:g} % "
             f"above the fastest of the {FLOOR_JOBS} jobs before it in the same run, which `/3` would have timed "
             "again.", "",
             "| file | models | re-timed within ±5 % | disagreeing by more than 5 % | of those, a timing flagged | "
             "of the agreeing, a timing flagged |", "| --- | --- | --- | --- | --- | --- |"]
    out = {"command": f"python experiments/settled_timing.py --check {name}", "source": source, "files": {}}
    for file in ("held.json", "held_float.json"):
        try:
            first, second = _read(RESULTS / source, file).model_rows, _read(RESULTS / name, file).model_rows
        except FileNotFoundError:
            continue
        f1, f2 = _flagged(first, tol), _flagged(second, tol)
        key = lambda r: json.dumps(r.candidate, sort_keys=True)  # noqa: E731
        by = {key(r): (r, f) for r, f in zip(first, f1)}
        pairs = [(by[key(r)], (r, f)) for r, f in zip(second, f2) if key(r) in by]
        on = lambda r: r.latency_ms * (table_ref / r.reference_ms) ** exponent  # noqa: E731
        off = np.array([abs(on(b) / on(a) - 1) > 0.05 for (a, _), (b, _) in pairs])
        flag = np.array([fa or fb for (_, fa), (_, fb) in pairs])
        out["files"][file] = {"models": len(pairs), "disagreeing": int(off.sum()),
                              "disagreeing_flagged": int((off & flag).sum()), "agreeing_flagged": int((~off & flag).sum())}
        lines.append(f"| {file} | {len(pairs)} | {100 * (1 - off.mean()):.1f} % | {int(off.sum())} | "
                     f"{int((off & flag).sum())} | {int((~off & flag).sum())} of {int((~off).sum())} |")
    write_json(RESULTS / f"settled_check_{name}.json", out)
    (RESULTS / f"settled_check_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _agreement(x: np.ndarray) -> dict:
    """x: (rounds, models) latencies. Every pair of rounds of every model: |log ratio| summaries."""
    d = np.concatenate([np.abs(np.log(x[a] / x[b])) for a, b in itertools.combinations(range(len(x)), 2)])
    r = np.expm1(d)
    return {"pairs": int(len(d)), "within_2": float((r <= 0.02).mean()), "within_5": float((r <= 0.05).mean()),
            "within_10": float((r <= 0.10).mean()), "median_pct": float(np.median(r) * 100),
            "p90_pct": float(np.quantile(r, 0.9) * 100), "worst_pct": float(r.max() * 100)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="predictor_local_128_bias_b", help="the predictor_local.py run whose held-out "
                    "models are timed")
    ap.add_argument("--spaces", default="mobilenet,shufflenet", help="which of its spaces (comma-separated)")
    ap.add_argument("--float", action="store_true", help="its float32 held-out models as well (held_float)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--attempts", type=int, default=None,
                    help="settle_attempts for this run (default: the protocol's); every k up to it is reported")
    ap.add_argument("--name", default="settled_timing")
    ap.add_argument("--check", metavar="RUN", default=None,
                    help="time nothing: which disagreeing re-timings of the --retime run RUN settling would have repeated")
    args = ap.parse_args()
    if args.check:
        return check(args.check)
    if args.rounds < 2:
        raise SystemExit(f"error: --rounds={args.rounds}; allowed: 2 or more (agreement needs two timings)")
    import torch

    import spaces
    from latency_models import PROTOCOL_NAME, default_protocol, measure_interleaved

    torch.set_num_threads(1)
    record = _run_record(args.run)
    exponent = float(record.get("reference_exponent") or 0.0)
    table_ref = float(record["table_reference_ms"])
    wanted = [s for s in args.spaces.split(",") if s]
    rows = [r for r in _read(RESULTS / args.run, "held.json").model_rows if r.source in wanted]
    labels = [f"{r.source}" for r in rows]
    if args.float:
        extra = [r for r in _read(RESULTS / args.run, "held_float.json").model_rows if r.source in wanted]
        rows, labels = rows + extra, labels + [f"{r.source}, float32" for r in extra]
    if not rows:
        raise SystemExit(f"error: no held-out models of {wanted} in {args.run}; allowed: its spaces")
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load0, t0 = loadavg(), time.time()
    params = default_protocol(**({"settle_attempts": args.attempts} if args.attempts else {}))
    most = int(params["settle_attempts"])
    n, rng = len(rows), np.random.default_rng(20261204)
    # per round and model: the reference and this model's latency in every attempt of its job
    att_ref = [[()] * n for _ in range(args.rounds)]
    att_lat = [[()] * n for _ in range(args.rounds)]
    attempts: list[int] = []
    seconds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, r in enumerate(rows):
            cand = spaces.Candidate.from_dict(r.candidate)
            path = pathlib.Path(tmp) / f"m{i}.onnx"
            path.write_bytes(spaces.get_space(cand.space, **cand.options).onnx(cand).SerializeToString())
            paths.append(str(path))
        for rd in range(args.rounds):
            order = rng.permutation(n)
            for j in range(0, n, CHUNK):
                idx = order[j:j + CHUNK]
                t = time.perf_counter()
                res = measure_interleaved([paths[i] for i in idx], threads=1,
                                          timing={"settle_attempts": most})
                seconds.append(time.perf_counter() - t)
                attempts.append(len(res[0].attempt_references_ms))
                for i, tm in zip(idx, res):
                    att_ref[rd][i], att_lat[rd][i] = tm.attempt_references_ms, tm.attempt_latency_ms
            print(f"round {rd + 1}/{args.rounds}: {time.time() - t0:.0f} s", flush=True)

    def kept(k: int) -> tuple[np.ndarray, np.ndarray]:
        """Latency and reference of every timing had the job stopped after at most k attempts (the fastest
        reference of those kept; the attempts a job made do not depend on k, only where it stops)."""
        lat, ref = np.zeros((args.rounds, n)), np.zeros((args.rounds, n))
        for rd in range(args.rounds):
            for i in range(n):
                refs_k = att_ref[rd][i][:k]
                a = int(np.argmin(refs_k))
                lat[rd, i], ref[rd, i] = att_lat[rd][i][a], refs_k[a]
        return lat, ref

    def scale(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return x * (table_ref / ref) ** exponent

    ks = sorted({k for k in (1, 2, 4, most) if k <= most})
    label = {k: "1 attempt (no settling)" if k == 1 else f"at most {k} attempts" for k in ks}
    variants = {k: kept(k) for k in ks}
    groups = {g: np.array([lab == g for lab in labels]) for g in dict.fromkeys(labels)}
    groups["all"] = np.ones(n, dtype=bool)
    agreement = {}
    for g, m in groups.items():
        agreement[g] = {}
        for k in ks:
            lat, ref = variants[k]
            agreement[g][f"{label[k]}, as measured"] = _agreement(lat[:, m])
            agreement[g][f"{label[k]}, on the reference's scale"] = _agreement(scale(lat, ref)[:, m])
    out = {"command": f"python experiments/settled_timing.py --run {args.run} --rounds {args.rounds}"
                      + (f" --spaces {args.spaces}" if args.spaces != "mobilenet,shufflenet" else "")
                      + (" --float" if args.float else "")
                      + (f" --attempts {args.attempts}" if args.attempts else "")
                      + (f" --name {args.name}" if args.name != "settled_timing" else ""),
           "protocol": PROTOCOL_NAME, "settle_tolerance": params["settle_tolerance"],
           "settle_attempts": most, "started_utc": started, "seconds": time.time() - t0,
           "loadavg_before": load0, "loadavg_after": loadavg(), "exponent": exponent,
           "table_reference_ms": table_ref, "models": labels,
           "jobs": len(attempts), "attempts_per_job": np.bincount(attempts).tolist(),
           "job_seconds_median": float(np.median(seconds)), "agreement": agreement,
           "attempt_references_ms": [[list(x) for x in row] for row in att_ref],
           "attempt_latency_ms": [[list(x) for x in row] for row in att_lat]}
    write_json(RESULTS / f"{args.name}.json", out)
    mean = sum(k * c for k, c in enumerate(out["attempts_per_job"])) / max(len(attempts), 1)
    first_refs = np.array([[x[0] for x in row] for row in att_ref])
    lines = [f"# Settling: the same models timed {args.rounds} times ({args.name})", "",
             f"Command: `{out['command']}`  ",
             f"Started {started}, {out['seconds'] / 60:.1f} min; load average before / after: {load0} / "
             f"{out['loadavg_after']} on 2 shared cores; protocol {PROTOCOL_NAME} (settle_tolerance "
             f"{params['settle_tolerance']:g}, at most {most} attempts), {CHUNK} models per worker job, 1 thread. "
             f"The held-out models of `{args.run}`; every pair of rounds of every model compared. `1 attempt`: each "
             f"job's first attempt (what it reported without settling); `at most k attempts`: the attempt the job "
             f"would have kept had it stopped after k (the same jobs: settling's gain side by side). On the "
             f"reference's scale: latency x ({table_ref:.4f} / reference) ** {exponent:g}.", "",
             f"Jobs: {len(attempts)}, attempts per job {dict((k, c) for k, c in enumerate(out['attempts_per_job']) if c)} "
             f"(mean {mean:.2f}); median job {out['job_seconds_median']:.2f} s. References of the first attempts: "
             f"{first_refs.min():.4f}-{first_refs.max():.4f} ms; of the kept attempts: {variants[most][1].min():.4f}-"
             f"{variants[most][1].max():.4f} ms.", "",
             "| models | n | timing | pairs | within ±2 % | within ±5 % | within ±10 % | median | 90th pct | worst |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g, m in groups.items():
        for lab, a in out["agreement"][g].items():
            lines.append(f"| {g} | {int(m.sum())} | {lab} | {a['pairs']} | {100 * a['within_2']:.1f} % | "
                         f"{100 * a['within_5']:.1f} % | {100 * a['within_10']:.1f} % | {a['median_pct']:.1f} % | "
                         f"{a['p90_pct']:.1f} % | {a['worst_pct']:.1f} % |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
