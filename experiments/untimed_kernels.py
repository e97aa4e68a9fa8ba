"""What the kernels a profile never timed alone cost the held-out models: time them, and fit again.

A 128-px profile times about 2,200 kernels alone; a random-width MobileNet model has channel counts of its own, so
of the 20 held-out MobileNet models' kernels the table holds 18 % (FBNet's: 62 %), and the rest are predicted by the
kernel model (:class:`latency_models.KernelModel`: a physical fit per family, corrected by the nearest timed
neighbours). This experiment times, under the protocol and in one job, every kernel of a run's held-out models of one
space that its table lacks, interleaved with ``--anchors`` kernels the table did time (the same families, drawn at
random): the anchors' new / recorded ratio is the machine's state against the table's, and the new timings are put on
the predictor's scale with its median. Reported:

- the kernel model's error on the new kernels (never in its rows: out of sample), each way of
  ``LatencyPredictor.fit(depthwise_channels_once=...)``, per family;
- per held-out model, the kernel model's error weighted by the family multipliers, as a share of the model's time;
- the held-out models' scores (the space's and all spaces') fitted on the committed table and on the table with the new
  kernels added, each way: how much of their miss timing every kernel alone would take away (an oracle: a user's
  models' kernels are not known when the device is profiled).

    python experiments/untimed_kernels.py --run predictor_local_128_fastexport --space mobilenet --anchors 200

Times about 700 kernels (4 minutes at 128 px); run it alone on the machine. Writes ``experiments/results/NAME.json``
and ``.md`` (default name ``untimed_kernels_RUN_SPACE``, ``predictor_local_`` dropped).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import copy  # noqa: E402
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
from offgrid_siblings import _score  # noqa: E402
from predictor_local import RESULTS  # noqa: E402
from weight_term import _run_tables  # noqa: E402

from latency_models import Kernel, LatencyPredictor, family, kernel_graph, measure_interleaved  # noqa: E402

CHUNK = 40  # kernels per protocol job, as the profiler times them
WAYS = (("three times", False), ("once", True))


def _time_kernels(kernels: list[Kernel]) -> list[tuple[float, float | None]]:
    out = []
    t0 = time.time()
    for i in range(0, len(kernels), CHUNK):
        chunk = kernels[i:i + CHUNK]
        out += [(t.latency_ms, t.reference_ms) for t in measure_interleaved([kernel_graph(k) for k in chunk])]
        print(f"  {len(out)}/{len(kernels)} kernels timed, {time.time() - t0:.0f} s", flush=True)
    return out


def _kernel_errors(km, kernels: list[Kernel], truth: np.ndarray) -> dict:
    e = np.log(km.predict(kernels) / truth)
    w = truth / truth.sum()
    by: dict[str, list] = collections.defaultdict(list)
    for k, v, t in zip(kernels, e, truth):
        by[family(k)].append((float(v), float(t)))
    fams = {f: {"n": len(v), "ms": sum(t for _, t in v), "rms_log": float(np.sqrt(np.mean([x * x for x, _ in v]))),
                "mean_log": float(np.mean([x for x, _ in v]))} for f, v in by.items()}
    return {"rms_log": float(np.sqrt(np.mean(e**2))), "time_weighted_rms_log": float(np.sqrt(np.sum(w * e**2))),
            "mean_log": float(e.mean()), "families": dict(sorted(fams.items(), key=lambda x: -x[1]["ms"]))}


def _model_shares(pred: LatencyPredictor, rows: list, truth: dict[str, float]) -> list[float]:
    """Per model: the kernel model's error on its newly timed kernels, times their family multipliers, over its
    measured time (on the predictor's scale)."""
    km = pred.kernel_model
    out = []
    for r in rows:
        ks = list(r.kernels)
        p = km.predict(ks)
        measured = float(pred.on_scale(r.latency_ms, r.reference_ms))
        out.append(sum(pred.family_mult.get(family(k), 1.0) * (v - truth[k.key()]) for k, v in zip(ks, p)
                       if k.key() in truth) / measured)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="predictor_local_128_fastexport", help="a predictor_local.py run with a committed "
                                                                            "table and held-out models")
    ap.add_argument("--space", default="mobilenet", help="whose held-out models' kernels are timed")
    ap.add_argument("--anchors", type=int, default=200, help="kernels the table timed, timed again beside them")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.anchors < 20:
        sys.exit(f"error: --anchors {args.anchors}: too few to read the machine's state; allowed: 20 or more")
    name = args.name or f"untimed_kernels_{args.run.removeprefix('predictor_local_')}_{args.space}"
    warnings.simplefilter("ignore")
    table, _, groups = _run_tables(args.run)
    held = dict(groups).get(args.space)
    if not held:
        sys.exit(f"error: --space {args.space}: the run has no held-out models of it; allowed: "
                 f"{', '.join(g for g, rows in groups if rows and g in ('fbnet', 'mobilenet', 'shufflenet'))}")
    status = json.loads((RESULTS / "latency_status.json").read_text())["runs"].get(args.run, {})
    exponent = status.get("reference_exponent", "auto")
    preds = {label: LatencyPredictor.fit(table, reference_exponent=exponent, depthwise_channels_once=once)
             for label, once in WAYS}
    timed = {r.kernel.key() for r in table.kernel_rows}
    new: dict[str, Kernel] = {}
    for r in held:
        for k in r.kernels:
            if k.key() not in timed:
                new.setdefault(k.key(), k)
    kernels = list(new.values())
    fams = {family(k) for k in kernels}
    rng = np.random.default_rng(0)
    pool = [r.kernel for r in table.kernel_rows if family(r.kernel) in fams]
    anchors = [pool[i] for i in rng.choice(len(pool), min(args.anchors, len(pool)), replace=False)]
    jobs = kernels + anchors
    order = rng.permutation(len(jobs))
    print(f"{len(kernels)} kernels of {len(held)} held-out {args.space} models not in the table, {len(anchors)} "
          f"anchors; load {loadavg()}", flush=True)
    out: dict = {"command": "python experiments/untimed_kernels.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "load_average_before": loadavg(), "run": args.run, "space": args.space,
                 "cpu_model": table.device.get("cpu_model"), "reference_exponent": exponent,
                 "held_out_models": len(held), "held_out_kernels_timed_alone_share": float(np.mean(
                     [np.mean([k.key() in timed for k in r.kernels]) for r in held]))}
    t0 = time.time()
    timings = _time_kernels([jobs[j] for j in order])
    out["timing_minutes"] = round((time.time() - t0) / 60, 1)
    res = {jobs[j].key(): t for j, t in zip(order, timings)}
    # on the predictor's scale (the kernel rows it was fitted on, put on the table's state): the anchors' median ratio
    recorded = preds["once"].kernel_model.exact
    ratios = np.array([res[k.key()][0] / recorded[k.key()] for k in anchors])
    scale = float(np.median(ratios))
    truth = {k.key(): res[k.key()][0] / scale for k in kernels}
    out["anchor_ratio_quantiles"] = dict(zip(("p10", "p25", "p50", "p75", "p90"),
                                             np.quantile(ratios, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist()))
    t_new = np.array([truth[k.key()] for k in kernels])
    out["kernel_model_out_of_sample"] = {label: _kernel_errors(p.kernel_model, kernels, t_new)
                                         for label, p in preds.items()}
    out["model_share_of_kernel_error"] = {}
    for label, p in preds.items():
        s = np.array(_model_shares(p, held, truth))
        out["model_share_of_kernel_error"][label] = {"mean": float(s.mean()), "sd": float(s.std())}
    added = copy.deepcopy(table)
    for k in kernels:
        added.add_kernel(k, truth[k.key()], reference_ms=table.reference_ms)
    out["scores"] = {}
    for tname, tb in (("committed table", table), ("held-out kernels timed", added)):
        for label, once in WAYS:
            p = preds[label] if tb is table else LatencyPredictor.fit(tb, reference_exponent=exponent,
                                                                      depthwise_channels_once=once)
            out["scores"][f"{tname}, {label}"] = {g: _score(p, tb, dict(groups)[g])
                                                   for g in (args.space, "spaces, all")}
    out["timings"] = {"new": [[k.to_dict(), *res[k.key()]] for k in kernels],
                      "anchors": [[k.to_dict(), recorded[k.key()], *res[k.key()]] for k in anchors]}
    out["load_average_after"] = loadavg()
    write_json(RESULTS / f"{name}.json", out)
    (RESULTS / f"{name}.md").write_text("\n".join(_markdown(out)) + "\n", encoding="utf-8")
    print("\n".join(_markdown(out)))


def _markdown(out: dict) -> list[str]:
    q = out["anchor_ratio_quantiles"]
    lines = [f"# The untimed kernels of {out['run']}'s held-out {out['space']} models (untimed_kernels)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']} on {out['cpu_model']}, {out['timing_minutes']} min of timing, load average "
             f"before / after {out['load_average_before']} / {out['load_average_after']}. {out['held_out_models']} "
             f"held-out models, {out['held_out_kernels_timed_alone_share']:.0%} of their kernels in the table; "
             f"{len(out['timings']['new'])} kernels timed, beside {len(out['timings']['anchors'])} anchors whose new / "
             f"recorded ratio (the machine's state against the table's) ran p10 {q['p10']:.3f}, p25 {q['p25']:.3f}, "
             f"median {q['p50']:.3f}, p75 {q['p75']:.3f}, p90 {q['p90']:.3f}.", "",
             "## The kernel model on them (out of sample)", "",
             "| depthwise channels | rms log error | time-weighted | mean | per model, its share of the model's time: "
             "sd |",
             "| --- | --- | --- | --- | --- |"]
    for label, e in out["kernel_model_out_of_sample"].items():
        s = out["model_share_of_kernel_error"][label]
        lines.append(f"| {label} | {e['rms_log']:.3f} | {e['time_weighted_rms_log']:.3f} | {e['mean_log']:+.3f} | "
                     f"{s['sd']:.3f} (mean {s['mean']:+.3f}) |")
    lines += ["", "Per family (the ten with the most time; rms log error, each way):", "",
              "| family | kernels | ms | three times | once |", "| --- | --- | --- | --- | --- |"]
    a, b = (out["kernel_model_out_of_sample"][w]["families"] for w, _ in WAYS)
    for f, v in list(a.items())[:10]:
        lines.append(f"| {f} | {v['n']} | {v['ms']:.2f} | {v['rms_log']:.3f} | {b[f]['rms_log']:.3f} |")
    lines += ["", "## The held-out models", "",
              f"| fitted on, depthwise channels | {out['space']}: within ±5 / ±10 %, error sd | all spaces: "
              "within ±5 / ±10 %, error sd |", "| --- | --- | --- |"]
    for label, s in out["scores"].items():
        cells = []
        for g in (out["space"], "spaces, all"):
            e = np.array([r["error"] for r in s[g]["rows"]])
            cells.append(f"{np.mean(abs(e) < 0.05):.1%} / {np.mean(abs(e) < 0.10):.1%}, {e.std():.3f}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return lines


if __name__ == "__main__":
    main()
