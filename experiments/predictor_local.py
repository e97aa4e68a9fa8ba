"""Target 1: profile this machine (ONNX Runtime, 1 thread) for <= 10 minutes, then predict held-out models.

Steps: ``profile`` the built-in spaces (fbnet, mobilenet, shufflenet) within ``--budget-min``; time
``--n`` random whole models per space with a different seed (never in the table; checked); fit the
predictor on the table; report n, share within ±5 % / ±10 %, RMSPE and Spearman, per space and overall.

    python experiments/predictor_local.py --budget-min 10 --n 100 --clock thread_cpu --statistic min

Writes ``experiments/results/predictor_local.json`` and ``.md`` (and the tables under
``experiments/results/predictor_local/``). The machine's load during the run is recorded (load average
before and after, from /proc/loadavg), because on a shared machine it decides how noisy timings are.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import spaces  # noqa: E402
from latency_models import LatencyPredictor, LatencyTable, accuracy_metrics  # noqa: E402
from search import measure_spaces, profile_spaces  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SPACES = ("fbnet", "mobilenet", "shufflenet")


def _load() -> list[float]:
    try:
        return [float(x) for x in pathlib.Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=100, help="held-out models per space")
    ap.add_argument("--clock", choices=("wall", "thread_cpu"), default="wall")
    ap.add_argument("--statistic", choices=("median", "min"), default="median")
    ap.add_argument("--name", default="predictor_local")
    ap.add_argument("--description", default="2-core dev VM (Intel Xeon)",
                    help="free-text device description stored in the table")
    ap.add_argument("--repeat-only", type=int, default=0, metavar="N",
                    help="only re-measure the first N held-out models of an earlier run (the measurement noise floor)")
    args = ap.parse_args()
    if args.repeat_only:
        repeatability(args)
        return
    logging.basicConfig(level=logging.ERROR)
    work = RESULTS / args.name
    work.mkdir(parents=True, exist_ok=True)
    space_objs = [spaces.get_space(s) for s in SPACES]
    load_before = _load()
    t0 = time.time()
    table = profile_spaces(space_objs, device_name="karumi-dev-x86", out=work / "table.json", threads=1,
                    budget_min=args.budget_min, clock=args.clock, statistic=args.statistic,
                    description=args.description)
    t_profile = time.time() - t0
    load_mid = _load()
    held = measure_spaces(space_objs, n=args.n, device_name="karumi-dev-x86", out=work / "held.json",
                          clock=args.clock, statistic=args.statistic)
    load_after = _load()
    seen = {json.dumps(r.candidate, sort_keys=True) for r in table.model_rows}
    overlap = sum(json.dumps(r.candidate, sort_keys=True) in seen for r in held.model_rows)
    if overlap:
        raise SystemExit(f"{overlap} held-out models are in the table: not a held-out test")
    t1 = time.time()
    pred = LatencyPredictor.fit(table)
    t_fit = time.time() - t1
    pred.save(work / "table.predictor.json")
    rows = held.model_rows
    predicted = pred.predict_many([r.kernels for r in rows], genes=[(r.candidate or {}).get("genes") for r in rows])
    measured = np.array([r.latency_ms for r in rows])
    src = np.array([r.source for r in rows])
    per_space = {s: accuracy_metrics(predicted[src == s], measured[src == s]) for s in SPACES}
    overall = accuracy_metrics(predicted, measured)
    # throughput of predict_many on fresh candidates (kernels() included, then kernel lists alone)
    rng = np.random.default_rng(5)
    cands = [space_objs[i % 3].sample(rng) for i in range(3000)]
    fresh = LatencyPredictor.load(work / "table.predictor.json")
    ts = time.time()
    fresh.predict_many([space_objs[i % 3].kernels(c) for i, c in enumerate(cands)])
    per_s_cands = len(cands) / (time.time() - ts)
    klists = [space_objs[i % 3].kernels(c) for i, c in enumerate(cands)]
    fresh2 = LatencyPredictor.load(work / "table.predictor.json")
    ts = time.time()
    fresh2.predict_many(klists)
    per_s_cold = len(klists) / (time.time() - ts)
    ts = time.time()
    fresh2.predict_many(klists)
    per_s_warm = len(klists) / (time.time() - ts)
    result = {
        "command": f"python experiments/predictor_local.py --budget-min {args.budget_min:g} --n {args.n} "
                   f"--clock {args.clock} --statistic {args.statistic} --name {args.name}",
        "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "device": table.device, "protocol": table.protocol,
        "profile_minutes": table.extra.get("spent_s", t_profile) / 60.0,
        "kernel_rows": len(table.kernel_rows), "model_rows": len(table.model_rows),
        "held_out_models": len(rows), "held_out_overlap_with_table": overlap,
        "load_average_before_profile_mid_after": [load_before, load_mid, load_after],
        "fit_seconds": t_fit, "fit_info": pred.fit_info,
        "overall": overall, "per_space": per_space,
        "predict_many_per_second": {"candidates_incl_kernels()": per_s_cands, "kernel_lists_cold_cache": per_s_cold,
                                    "kernel_lists_warm_cache": per_s_warm},
        "targets": {"within_10": 0.99, "within_5": 0.95},
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Latency predictor on this machine ({args.clock} clock, {args.statistic} of {table.protocol['timed_runs']} runs)",
        "",
        f"Command: `{result['command']}`  ",
        f"Finished {result['finished_utc']}; profile {result['profile_minutes']:.1f} min: {len(table.kernel_rows)} kernel rows, "
        f"{len(table.model_rows)} model rows; {len(rows)} held-out models (none in the table).  ",
        f"Load average (1/5/15 min) before / between / after: {load_before} / {load_mid} / {load_after} on 2 shared cores.",
        "",
        "| space | n | within ±5% | within ±10% | RMSPE | Spearman |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in list(per_space.items()) + [("all", overall)]:
        lines.append(f"| {name} | {m['n']} | {100 * m['within_5']:.1f}% | {100 * m['within_10']:.1f}% | "
                     f"{100 * m['rmspe']:.2f}% | {m['spearman']:.4f} |")
    lines += ["", "Targets: >= 95% within ±5%, >= 99% within ±10%.  ",
              f"predict_many: {per_s_cands:,.0f} candidates/s including `space.kernels(candidate)`, "
              f"{per_s_cold:,.0f} kernel lists/s cold cache, {per_s_warm:,.0f}/s warm."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def repeatability(args: argparse.Namespace) -> None:
    """Time the first N held-out models again, same protocol: how far a second measurement lands from the first."""
    from latency_models import measure_onnx

    work = RESULTS / args.name
    if not (work / "held.json").exists() and (work / "held.json.gz").exists():  # committed results are gzipped
        import gzip

        (work / "held.json").write_bytes(gzip.decompress((work / "held.json.gz").read_bytes()))
    held = LatencyTable.load(work / "held.json")
    proto = held.protocol
    first, again = [], []
    load_before = _load()
    for row in held.model_rows[: args.repeat_only]:
        cand = spaces.Candidate.from_dict(row.candidate)
        model = spaces.get_space(cand.space, **dict(cand.options)).onnx(cand)
        again.append(measure_onnx(model, clock=proto["clock"], statistic=proto["statistic"]))
        first.append(row.latency_ms)
    rel = np.abs(np.array(again) / np.array(first) - 1.0)
    name = "" if args.name == "predictor_local" else f" --name {args.name}"
    rep = {"command": f"python experiments/predictor_local.py --repeat-only {args.repeat_only}{name}",
           "n": len(rel), "within_5": float(np.mean(rel <= 0.05)), "within_10": float(np.mean(rel <= 0.10)),
           "rms_relative_difference": float(np.sqrt(np.mean(rel**2))), "load_average_before_after": [load_before, _load()],
           "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}
    result = json.loads((RESULTS / f"{args.name}.json").read_text())
    result["repeatability"] = rep
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = (RESULTS / f"{args.name}.md").read_text().rstrip("\n")
    md = md.split("\n\nMeasurement noise floor")[0]
    md += (f"\n\nMeasurement noise floor (`{rep['command']}`, {rep['finished_utc']}): the first {rep['n']} held-out "
           f"models timed again under the same protocol: {100 * rep['within_5']:.1f}% of the second measurements "
           f"within ±5% of the first, {100 * rep['within_10']:.1f}% within ±10%, RMS difference "
           f"{100 * rep['rms_relative_difference']:.1f}% (load average {rep['load_average_before_after']}). No predictor "
           "can be more accurate than the measurements it is scored against.\n")
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
