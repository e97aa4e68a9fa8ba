"""Where a held-out model's miss comes from: the fit's own rows, other tables, and ONNX Runtime's layout reorders.

The predictor misses the 20 held-out MobileNet models of a 128-px profile by a 5-7 % sd (in log), against a noise floor
of about 2 % (the profile's own re-timing) and the same on a re-timing (record, *Exports for timing calibrated on one
image*). ``predictor_local.py`` draws its held-out models from one seed, so the committed runs of one CPU and input size
timed the same models: each run's table, fitted alone, can be scored on the same models. For ``--runs`` (default the
three AMD 128-px tables profiled on different days) and one space this experiment reports:

- per table, the miss (log of predicted / measured, on the predictor's scale) of the space's model rows *in sample*
  (the fit that saw them), *out of fold* (``--folds`` folds of the space's rows left out of the table's model rows and
  fitted again; their kernels stay timed in the table), and of the held-out models;
- per pair of tables, the correlation of their misses on the same held-out models (each table's fit against its own
  run's timings, and against the other run's timings of the same models): a miss that repeats across independent
  profiles is the predictor's (its form, on these models), not the noise of one table;
- from ONNX Runtime's optimised graph of every such model (``ORT_ENABLE_ALL``, as deployed), how many
  ``ReorderInput`` / ``ReorderOutput`` nodes it runs (between the channel-blocked layout and plain NCHW) beside the
  layout changes the predictor's states see (``latency_models.layout_state``, ``32>33`` and ``33>32``), and the
  correlation of the reorders with the misses out of fold and held out; a correction linear in them (per millisecond
  of the prediction, with an intercept), fitted on the out-of-fold misses only and applied to the held-out models.

    python experiments/model_miss.py

Fits only, no timing (ONNX Runtime builds each model's optimised graph once). Writes ``experiments/results/NAME.json``
and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from weight_term import _run_tables  # noqa: E402

import spaces  # noqa: E402
from latency_models import LatencyPredictor, layout_state  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
RUNS = "predictor_local_128_memory,predictor_local_128_fastexport,predictor_local_128_kshare5"


def _stats(miss: np.ndarray) -> dict:
    err = np.exp(miss) - 1.0
    return {"n": len(miss), "sd_log": float(miss.std()), "mean_log": float(miss.mean()),
            "within_5": float(np.mean(np.abs(err) < 0.05)), "within_10": float(np.mean(np.abs(err) < 0.10))}


def _miss(pred: LatencyPredictor, rows: list) -> tuple[np.ndarray, np.ndarray]:
    """(log of predicted / measured on the predictor's scale, predicted ms) of model rows."""
    p = pred.predict_many([r.kernels for r in rows])
    measured = np.array([float(pred.on_scale(r.latency_ms, r.reference_ms)) for r in rows])
    return np.log(p / measured), p


class _Reorders:
    """ONNX Runtime's reorder nodes in the optimised graph of a candidate's ``space.onnx``, one export per candidate."""

    def __init__(self, nchwc: tuple[int, int] | None) -> None:
        self._spaces: dict[str, object] = {}
        self._seen: dict[str, dict] = {}
        self._nchwc = nchwc  # the tables' blocked layout, for the predictor's own layout states

    def __call__(self, row) -> dict:  # noqa: ANN001 - a ModelRow with a candidate
        key = json.dumps(row.candidate, sort_keys=True)
        if key not in self._seen:
            self._seen[key] = self._count(row)
        return self._seen[key]

    def _count(self, row) -> dict:  # noqa: ANN001
        cand = row.candidate
        skey = json.dumps([cand["space"], cand.get("options", {})], sort_keys=True)
        if skey not in self._spaces:
            self._spaces[skey] = spaces.get_space(cand["space"], **cand.get("options", {}))
        space = self._spaces[skey]
        model = space.onnx(spaces.Candidate.from_dict(cand))
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "optimised.onnx")
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.optimized_model_filepath = path
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            nodes = onnx.load(path).graph.node
        out = {"reorders": sum(n.op_type in ("ReorderInput", "ReorderOutput") for n in nodes)}
        prev, seen = 32, 0
        for k in row.kernels:  # the predictor's own layout changes between blocked (32) and plain (33) float kernels
            state = layout_state(k, self._nchwc)
            if state:
                seen += {prev, state} == {32, 33}
                prev = state
        out["predictor_layout_changes"] = seen
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=RUNS, help="predictor_local.py runs of one CPU and input size (comma-separated)")
    ap.add_argument("--space", default="mobilenet")
    ap.add_argument("--folds", type=int, default=4, help="folds of the space's model rows left out of the fit")
    ap.add_argument("--name", default="model_miss")
    args = ap.parse_args()
    runs = args.runs.split(",")
    if len(runs) < 2 or args.folds < 2:
        sys.exit(f"error: --runs {args.runs} --folds {args.folds}; allowed: two or more runs, two or more folds")
    warnings.simplefilter("ignore")
    t0 = time.time()
    out: dict = {"command": " ".join(["python experiments/model_miss.py", *sys.argv[1:]]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "load_average_before": loadavg(), "space": args.space, "runs": {}}
    held: dict[str, list] = {}
    fits: dict[str, LatencyPredictor] = {}
    nchwc: tuple[int, int] | None = None
    oof_rows: list = []
    oof_miss: list[float] = []
    oof_pred: list[float] = []
    for run in runs:
        table, _, groups = _run_tables(run)
        nchwc = nchwc or (tuple(table.device["nchwc"]) if table.device.get("nchwc") else None)
        rows = dict(groups).get(args.space)
        if not rows:
            sys.exit(f"error: --runs {run}: no held-out {args.space} models; allowed: predictor_local.py runs with "
                     "them")
        held[run] = rows
        fits[run] = full = LatencyPredictor.fit(table)
        own = [i for i, r in enumerate(table.model_rows) if r.source == args.space]
        res: dict = {"cpu_model": table.device.get("cpu_model"),
                     "input_size": table.protocol.get("space_options", {}).get("input_size"),
                     "model_rows": len(table.model_rows), "space_rows": len(own),
                     "loo_rmspe": full.fit_info.get("loo_rmspe"),
                     "in_sample": _stats(_miss(full, [table.model_rows[i] for i in own])[0]),
                     "held_out": _stats(_miss(full, rows)[0])}
        order = np.random.default_rng(0).permutation(own)
        miss_of: dict[int, tuple[float, float]] = {}
        for f in range(args.folds):
            drop = {int(i) for i in order[f::args.folds]}
            part = copy.deepcopy(table)
            part.model_rows[:] = [r for i, r in enumerate(table.model_rows) if i not in drop]
            left = sorted(drop)
            m, p = _miss(LatencyPredictor.fit(part), [table.model_rows[i] for i in left])
            miss_of.update({i: (float(a), float(b)) for i, a, b in zip(left, m, p)})
        res["out_of_fold"] = _stats(np.array([v[0] for v in miss_of.values()]))
        for i, (m, p) in sorted(miss_of.items()):
            oof_rows.append(table.model_rows[i])
            oof_miss.append(m)
            oof_pred.append(p)
        out["runs"][run] = res
        print(run, {k: res[k] for k in ("in_sample", "out_of_fold", "held_out")}, flush=True)
    # the same held-out models in every run (one seed): their misses under each table
    keys = [json.dumps(r.candidate, sort_keys=True) for r in held[runs[0]]]
    for run in runs[1:]:
        if [json.dumps(r.candidate, sort_keys=True) for r in held[run]] != keys:
            sys.exit(f"error: --runs: {run} timed other held-out {args.space} models than {runs[0]}; allowed: runs "
                     "of one seed (predictor_local.py's)")
    scored = {(a, b): _miss(fits[a], held[b]) for a in runs for b in runs}  # (miss, predicted ms)
    miss = {ab: m for ab, (m, _) in scored.items()}
    pairs = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            pairs.append({"tables": [a, b], "own_timings": float(np.corrcoef(miss[a, a], miss[b, b])[0, 1]),
                          "same_timings": float(np.corrcoef(miss[a, a], miss[b, a])[0, 1]),
                          "timings_of_one_table": float(np.corrcoef(miss[a, a], miss[a, b])[0, 1])})
    out["held_out_miss_correlation"] = pairs
    shared = np.mean([miss[r, r] for r in runs], axis=0)
    # ONNX Runtime's reorders, out of fold (every table's rows) and held out
    reorders = _Reorders(nchwc)
    ro = [reorders(r) for r in oof_rows]
    rh = [reorders(r) for r in held[runs[0]]]
    hp = np.mean([scored[r, r][1] for r in runs], axis=0)
    y_oof, p_oof = np.array(oof_miss), np.array(oof_pred)
    x_oof = np.array([f["reorders"] for f in ro]) / p_oof
    x_held = np.array([f["reorders"] for f in rh]) / hp
    out["reorders"] = {
        "held_out": {"ort_reorders": [f["reorders"] for f in rh],
                     "predictor_layout_changes": [f["predictor_layout_changes"] for f in rh],
                     "shared_miss": shared.tolist()},
        "out_of_fold_rows": len(ro),
        "ort_reorders_median": {"out_of_fold": float(np.median([f["reorders"] for f in ro])),
                                "held_out": float(np.median([f["reorders"] for f in rh]))},
        "predictor_layout_changes_median": {
            "out_of_fold": float(np.median([f["predictor_layout_changes"] for f in ro])),
            "held_out": float(np.median([f["predictor_layout_changes"] for f in rh]))},
        "correlation_with_miss": {
            "reorders, out of fold": float(np.corrcoef([f["reorders"] for f in ro], y_oof)[0, 1]),
            "reorders per predicted ms, out of fold": float(np.corrcoef(x_oof, y_oof)[0, 1]),
            "reorders, held out (mean miss over the tables)": float(np.corrcoef([f["reorders"] for f in rh],
                                                                                shared)[0, 1]),
            "reorders per predicted ms, held out (mean miss)": float(np.corrcoef(x_held, shared)[0, 1])}}
    coef = np.linalg.lstsq(np.c_[np.ones(len(y_oof)), x_oof], y_oof, rcond=None)[0]
    out["reorder_correction"] = {"coef": coef.tolist(), "by_table": {
        run: _stats(miss[run, run] - np.c_[np.ones(len(shared)), x_held] @ coef) for run in runs}}
    out["minutes"] = round((time.time() - t0) / 60, 1)
    out["load_average_after"] = loadavg()
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text("\n".join(_markdown(out)) + "\n", encoding="utf-8")
    print("\n".join(_markdown(out)))


def _pct(s: dict) -> str:
    return f"{100 * s['sd_log']:.1f} % ({100 * s['within_5']:.1f} / {100 * s['within_10']:.1f} %)"


def _markdown(out: dict) -> list[str]:
    runs = list(out["runs"])
    short = {r: r.removeprefix("predictor_local_") for r in runs}
    lines = [f"# Where the held-out {out['space']} models' miss comes from (model_miss)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, fits only, {out['minutes']} min, load average before / after "
             f"{out['load_average_before']} / {out['load_average_after']}. Miss: log of predicted / measured on the "
             "predictor's scale; shown as its sd, with the shares within ±5 / ±10 % in brackets.", "",
             "| table | model rows (space) | LOO RMSPE of the fit | in sample | out of fold | held out |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r, res in out["runs"].items():
        loo = res["loo_rmspe"]
        lines.append(f"| `{short[r]}` | {res['model_rows']} ({res['space_rows']}) | "
                     f"{'-' if loo is None else f'{100 * loo:.1f} %'} | {_pct(res['in_sample'])} | "
                     f"{_pct(res['out_of_fold'])} | {_pct(res['held_out'])} |")
    lines += ["", "Correlation of two tables' misses on the same held-out models (each fit against its own run's "
                  "timings; both fits against the first run's timings; one fit against both runs' timings):", "",
              "| tables | own timings | same timings | one fit, both timings |", "| --- | --- | --- | --- |"]
    for p in out["held_out_miss_correlation"]:
        a, b = p["tables"]
        lines.append(f"| `{short[a]}`, `{short[b]}` | {p['own_timings']:+.2f} | {p['same_timings']:+.2f} | "
                     f"{p['timings_of_one_table']:+.2f} |")
    ro = out["reorders"]
    lines += ["", f"ONNX Runtime's reorders (optimised graph) per model, median: out of fold "
                  f"{ro['ort_reorders_median']['out_of_fold']:g} ({ro['out_of_fold_rows']} rows of the tables), held "
                  f"out {ro['ort_reorders_median']['held_out']:g}; layout changes the predictor's states see: "
                  f"{ro['predictor_layout_changes_median']['out_of_fold']:g} and "
                  f"{ro['predictor_layout_changes_median']['held_out']:g}.", "",
              "| correlation with the miss | r |", "| --- | --- |"]
    lines += [f"| {k} | {v:+.2f} |" for k, v in ro["correlation_with_miss"].items()]
    c = out["reorder_correction"]
    lines += ["", "A correction linear in the reorders per predicted ms (with an intercept), fitted on the out-of-fold "
                  f"misses of all the tables' rows (the log miss less {c['coef'][0]:+.4f} and "
                  f"{c['coef'][1]:+.4f} x reorders / predicted ms: about {-1000 * c['coef'][1]:.1f} µs added per "
                  "reorder), applied to each table's held-out misses:", "",
              "| table | held out | corrected |", "| --- | --- | --- |"]
    lines += [f"| `{short[r]}` | {_pct(out['runs'][r]['held_out'])} | {_pct(c['by_table'][r])} |" for r in runs]
    return lines


if __name__ == "__main__":
    main()
