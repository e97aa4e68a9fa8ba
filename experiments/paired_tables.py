"""Two or more profiles of one machine, each fitted as a user would, scored on the same held-out timings.

A ``predictor_local.py`` run scores its own table on its own held-out models, timed minutes after its profile:
two runs then differ in their tables *and* in the machine's state when their held-out models were timed. Their
held-out models are the same ones (the same seeds), so this script takes the timings of every ``--held`` run and
scores every ``--tables`` run's predictor (``LatencyPredictor.fit(table)``, the default fit) on each: a paired
comparison of the tables. Per table also its rows, the kernel model's leave-one-out error and the share of the
held-out models' predicted kernel time in kernels the table timed. Fits only, times nothing.

    python experiments/paired_tables.py --tables predictor_local_32_intel,predictor_local_32_intel_ks1 \\
        --held predictor_local_32_intel_retime2,predictor_local_32_intel_ks1 --name paired_tables_32_intel

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
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import write_json  # noqa: E402
from gene_terms import _kernel_model  # noqa: E402
from predictor_local import RESULTS, _exists, _read  # noqa: E402
from weight_term import _held_groups  # noqa: E402

from latency_models import LatencyPredictor, accuracy_metrics  # noqa: E402


def _groups(run: str) -> list[tuple[str, list]]:
    """The non-empty groups of the spaces' held-out models a run timed (no exports: the tables are compared on the
    models they profile)."""
    folder = RESULTS / run
    return [(g, rows) for g, rows in _held_groups(folder, _read(folder, "held.json"), torchvision=False) if rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", required=True, help="predictor_local.py runs whose tables are fitted (comma-separated)")
    ap.add_argument("--held", required=True, help="predictor_local.py runs (or --retime runs) whose held-out "
                                                  "timings score every table (comma-separated)")
    ap.add_argument("--name", default="paired_tables")
    args = ap.parse_args()
    tables, helds = [t for t in args.tables.split(",") if t], [h for h in args.held.split(",") if h]
    for run in tables:
        if not _exists(RESULTS / run, "table.json"):
            ap.error(f"--tables {run}: no committed table under {RESULTS / run}; allowed: a predictor_local.py run")
    for run in helds:
        if not _exists(RESULTS / run, "held.json"):
            ap.error(f"--held {run}: no held-out timings under {RESULTS / run}; allowed: a predictor_local.py run")
    warnings.simplefilter("ignore")
    groups = {h: _groups(h) for h in helds}
    out: dict = {"command": "python experiments/paired_tables.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "tables": {}}
    for run in tables:
        table = _read(RESULTS / run, "table.json")
        pred = LatencyPredictor.fit(table)
        ks = [r.kernel for r in table.kernel_rows]
        km = _kernel_model(table)
        loo = km.loo_errors()
        timed = set(ks)
        res: dict = {"kernel_rows": len(ks), "model_rows": len(table.model_rows),
                     "profile_cpu": table.device.get("cpu_model"), "protocol_kernel_settle_attempts":
                     table.protocol.get("kernel_settle_attempts"), "reference_exponent": pred.reference_exponent,
                     "kernel_loo_rms": float(np.sqrt(np.mean(loo**2))),
                     "kernel_loo_median_abs": float(np.median(np.abs(loo))), "held": {}}
        shares = []  # of the first --held run's models' kernel time, the share in kernels the table timed
        for r in dict(groups[helds[0]])["spaces, all"]:
            t = km.predict(list(r.kernels))
            shares.append(float(t[[k in timed for k in r.kernels]].sum() / t.sum()))
        for h in helds:
            res["held"][h] = {}
            for g, rows in groups[h]:
                predicted = pred.predict_many([r.kernels for r in rows])
                measured = np.array([r.latency_ms for r in rows])
                on_scale = pred.on_scale(measured, np.array([r.reference_ms for r in rows]))
                res["held"][h][g] = {"as_measured": accuracy_metrics(predicted, measured),
                                     "on_scale": accuracy_metrics(predicted, on_scale),
                                     "median_error_as_measured": float(np.median(predicted / measured - 1))}
        res["held_time_share_in_timed_kernels_median"] = float(np.median(shares))
        out["tables"][run] = res
        print(run, {h: {g: f"{m['on_scale']['within_5']:.0%}/{m['on_scale']['within_10']:.0%}"
                        for g, m in v.items()} for h, v in res["held"].items()}, flush=True)
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out, helds), encoding="utf-8")


def _markdown(out: dict, helds: list[str]) -> str:
    lines = ["# Profiles of one machine scored on the same held-out timings", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}; fits only (`LatencyPredictor.fit(table)`, the default fit), nothing timed. "
             "Within ±5 % / ±10 % on the predictor's scale (the reference timed beside each held-out model; as "
             "measured in the JSON).", "",
             "| table | kernel rows | model rows | kernel settle attempts | exponent | kernel LOO rms (median abs) | "
             "held-out kernel time in timed kernels | " + " | ".join(f"held-out timings of `{h}`" for h in helds) + " |",
             "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in helds) + " |"]
    for run, r in out["tables"].items():
        cells = []
        for h in helds:
            cells.append("<br>".join(f"{g}: {m['on_scale']['within_5']:.1%} / {m['on_scale']['within_10']:.1%}"
                                     for g, m in r["held"][h].items()))
        ksa = r["protocol_kernel_settle_attempts"]
        lines.append(f"| {run} | {r['kernel_rows']} | {r['model_rows']} | {'as models' if ksa is None else ksa} | "
                     f"{r['reference_exponent']:g} | {r['kernel_loo_rms']:.1%} ({r['kernel_loo_median_abs']:.1%}) | "
                     f"{r['held_time_share_in_timed_kernels_median']:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
