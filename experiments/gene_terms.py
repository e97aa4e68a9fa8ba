"""Costs per gene value in a profiled device's predictor: what they did, and why they are now off by default.

A predictor fitted on model rows alone (a published benchmark) tells models apart by their candidates' genes, so
it learns a cost per categorical gene value (``depths[1]=2``, per-layer choices). Until 2026-12-05 a predictor of
a profiled device (kernel rows too) learnt them as well, whenever the fit's leave-one-out error chose them; a model
given as kernels or as ONNX (``predict("model.onnx")``, what other projects import, and every experiment here) has
no genes and was predicted with their training mean, taken over every space of the table. On the 32-px profile of
a second CPU (``predictor_local_32_intel``, an Intel Xeon with AVX-512) that mean was -0.061 ms, added to models
of 0.1-1.7 ms. ``LatencyPredictor.fit(gene_terms=None)`` (the default now) learns them from model rows alone;
``gene_terms=True`` is the old behaviour. This experiment fits the committed tables of ``predictor_local.py``
runs both ways (times nothing) and scores each on that run's held-out models (random widths, predicted from their
kernels as measured and on the predictor's scale, and with their genes given, as the search predicts), whole
float32 models and torchvision exports, and by ``--folds``-fold cross-validation over the table's candidates.

    python experiments/gene_terms.py --runs predictor_local_32_intel,predictor_local_32_memory,\\
        predictor_local_96_memory,predictor_local_128_memory,predictor_local_224_memory --name gene_terms

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

from _common import write_json  # noqa: E402
from predictor_local import RESULTS  # noqa: E402
from weight_term import SPACES, _cv, _run_tables  # noqa: E402

from latency_models import KernelModel, LatencyPredictor, LatencyTable, accuracy_metrics  # noqa: E402

FITS = {"gene terms (before)": True, "without (default)": None}


def _scores(pred: LatencyPredictor, rows: list) -> dict:
    """As measured, on the predictor's scale, and (candidates) with their genes given, as the search predicts."""
    measured = np.array([r.latency_ms for r in rows])
    plain = pred.predict_many([r.kernels for r in rows])
    out = {"as_measured": accuracy_metrics(plain, measured),
           "on_scale": accuracy_metrics(plain, pred.on_scale(measured, np.array([r.reference_ms for r in rows]))),
           "median_error": float(np.median(plain / measured - 1.0))}
    genes = [(r.candidate or {}).get("genes") for r in rows]
    if all(g is not None for g in genes):
        out["genes_given"] = accuracy_metrics(pred.predict_many([r.kernels for r in rows], genes=genes), measured)
    return out


def _kernel_model(table: LatencyTable) -> KernelModel:
    """The kernel model of ``table``'s kernel rows as measured (not on a reference scale), with its device's layout."""
    return KernelModel([r.kernel for r in table.kernel_rows], [r.latency_ms for r in table.kernel_rows],
                       nchwc=tuple(table.device["nchwc"]) if table.device.get("nchwc") else None)


def _context(table: LatencyTable, held: LatencyTable) -> dict:
    """What makes a table harder to fit, beside the gene terms: its rows, the kernel model's leave-one-out error
    (each kernel row predicted from the others), and the reference timed beside its rows and beside the held-out
    models (p10 / p50 / p90, ms: a machine that changed state between the two shows here)."""
    ks = [r.kernel for r in table.kernel_rows]
    loo = _kernel_model(table).loo_errors()

    def q(rows: list) -> list[float]:
        ref = [r.reference_ms for r in rows if r.reference_ms]
        return [round(float(v), 4) for v in np.percentile(ref, [10, 50, 90])] if ref else []

    return {"kernel_rows": len(ks), "model_rows": len(table.model_rows),
            "kernel_loo_rms": float(np.sqrt(np.mean(loo**2))), "kernel_loo_median_abs": float(np.median(np.abs(loo))),
            "reference_ms_kernel_rows": q(table.kernel_rows), "reference_ms_model_rows": q(table.model_rows),
            "reference_ms_held_out": q(held.model_rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="predictor_local_32_intel,predictor_local_32_memory,predictor_local_96_memory,"
                                      "predictor_local_128_memory,predictor_local_224_memory",
                    help="predictor_local.py runs whose committed tables are fitted (comma-separated)")
    ap.add_argument("--folds", type=int, default=8, help="cross-validation folds over the table's candidates "
                                                         "(0: none)")
    ap.add_argument("--name", default="gene_terms")
    args = ap.parse_args()
    if args.folds < 0 or args.folds == 1:
        ap.error(f"--folds {args.folds}; allowed: 0 (none) or at least 2")
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    t0 = time.time()
    out: dict = {"command": "python experiments/gene_terms.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": {}}
    for run in [r for r in args.runs.split(",") if r]:
        table, held, groups = _run_tables(run)
        res: dict = {"cpu_model": table.device.get("cpu_model"), "table": _context(table, held)}
        for label, gene_terms in FITS.items():
            p = LatencyPredictor.fit(table, gene_terms=gene_terms)
            res[label] = {
                "reference_exponent": p.reference_exponent, "loo_rmspe": p.fit_info.get("loo_rmspe"),
                "lambda_gene": p.fit_info.get("lambda_gene"), "gene_values": len(p.gene_ms),
                "gene_mean_ms": p.gene_mean_ms,
                "held_out": {g: _scores(p, rows) for g, rows in groups if rows},
                "cv": _cv(table, p, args.folds, gene_terms=gene_terms) if args.folds else None,
            }
            print(f"{run} {label}: " + ", ".join(
                f"{g} {m['as_measured']['within_5']:.0%}/{m['as_measured']['within_10']:.0%}"
                for g, m in res[label]["held_out"].items()), flush=True)
        out["runs"][run] = res
    out["minutes"] = round((time.time() - t0) / 60, 1)
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out, args.folds), encoding="utf-8")


def _pair(m: dict | None) -> str:
    return f"{m['within_5']:.1%} / {m['within_10']:.1%} ({m['rmspe']:.1%})" if m else "-"


def _markdown(out: dict, folds: int) -> str:
    lines = ["# Costs per gene value in a profiled device's predictor (gene_terms)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, {out['minutes']} min; fits only, on the committed tables of each run (nothing "
             "timed). Cells: the share of models within ±5 % / ±10 % (RMSPE). Held-out models are predicted from "
             "their kernels (as `predict(\"model.onnx\")` does) and scored as measured and on the predictor's scale "
             "(`LatencyPredictor.on_scale`, the reference timed beside each), and with their genes given (as the "
             "search predicts its candidates); cross-validation: "
             f"{folds} folds over the table's own candidates, on the full fit's reference scale, from their kernels.",
             "", "| run (CPU) | fit | exponent | table LOO RMSPE | gene values, their mean ms | group | as measured "
             "| median error | on the predictor's scale | genes given | cross-validated |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run, res in out["runs"].items():
        for label in FITS:
            r = res[label]
            cv = r["cv"] or {}
            for g, m in r["held_out"].items():
                lines.append(f"| {run} ({res['cpu_model']}) | {label} | {r['reference_exponent']:g} "
                             f"| {r['loo_rmspe']:.1%} | {r['gene_values']}, {r['gene_mean_ms']:+.4f} | {g} "
                             f"| {_pair(m['as_measured'])} | {m['median_error']:+.1%} | {_pair(m['on_scale'])} "
                             f"| {_pair(m.get('genes_given'))} | {_pair(cv.get(g))} |")
    lines += ["", "The tables themselves (the kernel model's leave-one-out error over the kernel rows; the reference "
              "timed beside the rows and beside the held-out models, p10 / p50 / p90 ms):", "",
              "| run | CPU | kernel rows | model rows | kernel LOO rms / median abs | reference: kernel rows "
              "| model rows | held-out models |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run, res in out["runs"].items():
        c = res["table"]
        lines.append(f"| {run} | {res['cpu_model']} | {c['kernel_rows']} | {c['model_rows']} "
                     f"| {c['kernel_loo_rms']:.1%} / {c['kernel_loo_median_abs']:.1%} | "
                     + " | ".join(" / ".join(f"{v:.3f}" for v in c[k]) for k in
                                  ("reference_ms_kernel_rows", "reference_ms_model_rows", "reference_ms_held_out"))
                     + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
