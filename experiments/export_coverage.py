"""Where the torchvision exports' errors come from: the share of their kernels the table timed alone.

Target 2 of issue 12 asks for models outside the spaces (torchvision exports) within ±10 %. The predictor sums a
stand-alone time per kernel (exact where the table timed that kernel alone, else the kernel model's estimate from
its neighbours) and corrects the sum with the terms its whole-model rows taught it. This experiment asks which of
the two the exports' misses follow: it fits each committed ``predictor_local.py`` run's table with the default fit
(times nothing), predicts that run's held-out torchvision exports, and sets each export's error beside

- the share of its kernels the table timed alone (``LatencyPredictor.kernel_model``'s exact rows), and
- the share of its convolutions whose channel counts are not a multiple of 8 (the 3-channel stem left out), the
  widths the spaces' candidates almost never have,

then groups the exports by the first. Errors are on the predictor's scale where the fit corrects for the machine's
state (``LatencyPredictor.on_scale``, the figure ``predictor_local.py`` reports first), else as measured.

    python experiments/export_coverage.py --name export_coverage

Writes ``experiments/results/NAME.json`` and ``.md``.
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
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS  # noqa: E402
from weight_term import _run_tables  # noqa: E402
from weight_term_auto import DEFAULT_RUNS  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402

#: Bins of the share of an export's kernels timed alone (lower edge inclusive; the last bin is "all of them").
BINS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0), (1.0, 1.01))


def _unaligned(kernel) -> bool:
    cin = kernel.input_shape[0]
    return kernel.op == "conv" and cin != 3 and bool(cin % 8 or (kernel.out_channels or cin) % 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="predictor_local.py runs whose committed tables are fitted")
    ap.add_argument("--name", default="export_coverage")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    t0, load_before = time.time(), loadavg()
    out: dict = {"command": "python experiments/export_coverage.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "exports": []}
    for run in [r for r in args.runs.split(",") if r]:
        table, _, groups = _run_tables(run)
        exports = dict(groups).get("torchvision")
        if not exports:
            continue
        p = LatencyPredictor.fit(table)
        timed = {r.kernel.key() for r in table.kernel_rows}
        predicted = p.predict_many([r.kernels for r in exports])
        share = p.outside_weight([r.kernels for r in exports])
        for r, pred, w in zip(exports, predicted, share):
            measured = float(p.on_scale(r.latency_ms, r.reference_ms))  # as measured without a state correction
            convs = [k for k in r.kernels if k.op == "conv" and k.input_shape[0] != 3]
            out["exports"].append({
                "run": run, "cpu_model": table.device.get("cpu_model"), "model": r.source,
                "measured_ms": measured, "predicted_ms": float(pred), "error": float(pred) / measured - 1.0,
                "kernels": len(r.kernels), "timed_alone": sum(k.key() in timed for k in r.kernels) / len(r.kernels),
                "unaligned_convs": sum(map(_unaligned, convs)) / max(len(convs), 1), "outside_weight": float(w)})
        print(f"{run}: " + ", ".join(f"{e['model']} {e['error']:+.1%} ({e['timed_alone']:.0%} timed)"
                                     for e in out["exports"] if e["run"] == run), flush=True)
    out["bins"] = _bins(out["exports"])
    out["by_alignment"] = _by_alignment(out["exports"])
    err = np.abs([e["error"] for e in out["exports"]])
    out["spearman_timed_alone_vs_abs_error"] = _spearman(np.array([e["timed_alone"] for e in out["exports"]]), err)
    out.update({"minutes": round((time.time() - t0) / 60, 1), "load_average_before_after": [load_before, loadavg()]})
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out), encoding="utf-8")


def _stats(errors: list[float]) -> dict:
    e = np.asarray(errors)
    return {"n": len(e), "within_5": float(np.mean(np.abs(e) <= 0.05)), "within_10": float(np.mean(np.abs(e) <= 0.10)),
            "mean_error": float(e.mean()), "median_abs_error": float(np.median(np.abs(e)))}


def _bins(exports: list[dict]) -> list[dict]:
    out = []
    for lo, hi in BINS:
        sel = [e for e in exports if lo <= e["timed_alone"] < hi]
        if sel:
            out.append({"timed_alone": [lo, min(hi, 1.0)], **_stats([e["error"] for e in sel]),
                        "with_unaligned_convs": sum(e["unaligned_convs"] > 0.1 for e in sel)})
    return out


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks of ``a``, ties given their average rank."""
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=np.float64)
    for v in np.unique(a):
        tie = a == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def _by_alignment(exports: list[dict]) -> list[dict]:
    """The exports split twice: all their kernels timed alone or not, and more than 10 % of their convolutions with
    channel counts that are not a multiple of 8 or not."""
    out = []
    for all_timed in (False, True):
        for unaligned in (True, False):
            sel = [e for e in exports
                   if (e["timed_alone"] >= 1.0) == all_timed and (e["unaligned_convs"] > 0.1) == unaligned]
            if sel:
                out.append({"all_timed_alone": all_timed, "unaligned": unaligned, **_stats([e["error"] for e in sel]),
                            "models": sorted({e["model"].rsplit("_", 1)[0] for e in sel})})
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _markdown(out: dict) -> str:
    lines = ["# The torchvision exports' errors against the share of their kernels timed alone (export_coverage)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, {out['minutes']} min, fits only on the committed tables (nothing timed); load "
             f"average before / after {out['load_average_before_after'][0]} / {out['load_average_before_after'][1]}.",
             "", "Every committed `predictor_local.py` run with held-out torchvision exports, fitted with the default "
             "fit; errors on the predictor's scale where the fit corrects for the machine's state, else as "
             "measured.", "",
             f"Spearman correlation of the share timed alone with the absolute error: "
             f"{out['spearman_timed_alone_vs_abs_error']:.2f} over {len(out['exports'])} exports.", "",
             "| kernels timed alone | exports | within ±5 % | within ±10 % | mean error | median abs. error | "
             "with > 10 % unaligned convolutions |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for b in out["bins"]:
        lo, hi = b["timed_alone"]
        label = "all" if lo >= 1.0 else f"{lo:.0%} to < {hi:.0%}"
        lines.append(f"| {label} | {b['n']} | {b['within_5']:.1%} | {b['within_10']:.1%} | {b['mean_error']:+.1%} | "
                     f"{b['median_abs_error']:.1%} | {b['with_unaligned_convs']} |")
    lines += ["", "Split by whether every kernel was timed alone and by unaligned convolutions (more than 10 % of them "
              "with channel counts that are not a multiple of 8):", "",
              "| kernels timed alone | unaligned convolutions | exports | within ±5 % | within ±10 % | mean error | "
              "median abs. error | models |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in out["by_alignment"]:
        timed, unaligned = "all" if b["all_timed_alone"] else "not all", "> 10 %" if b["unaligned"] else "<= 10 %"
        lines.append(f"| {timed} | {unaligned} | "
                     f"{b['n']} | {b['within_5']:.1%} | {b['within_10']:.1%} | {b['mean_error']:+.1%} | "
                     f"{b['median_abs_error']:.1%} | {', '.join(b['models'])} |")
    lines += ["", "Per export (error, share of kernels timed alone, share of convolutions with channels not a multiple "
              "of 8, the outside model's weight in the blend):", "",
              "| run | model | error | timed alone | unaligned convs | outside weight |",
              "| --- | --- | --- | --- | --- | --- |"]
    for e in out["exports"]:
        lines.append(f"| {e['run']} | {e['model']} | {e['error']:+.1%} | {e['timed_alone']:.0%} | "
                     f"{e['unaligned_convs']:.0%} | {e['outside_weight']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
