"""The cost per megabyte of weights chosen per table: ``LatencyPredictor.fit(weight_term="auto")``, the default.

``fit(weight_term=True)`` adds each kernel's megabytes of stored weights to the predictor's physical stage (a kernel
timed alone finds its weights in the cache; inside a whole model they are read again on every run). Measured on
the committed tables of 2026-12-05 (``weight_term.py``) it helped some tables and hurt others, so it stayed off.
Since then the Intel tables' kernel model changed (families short of rows, 2026-12-05 evening) and there the term
lowers the fit's own leave-one-out error by 7-33 %. ``"auto"`` fits both ways over the machine-state exponents and
adds the term when it lowers the leave-one-out RMSPE on the table's model rows by at least 5 % of it
(``latency_models._predictor.WEIGHT_TERM_MARGIN``, chosen on these tables: see its comment): the table decides.

This experiment fits each committed ``predictor_local.py`` run's table three ways (``weight_term=False``, ``True``
and ``"auto"``; times nothing) and scores each on that run's held-out timings: random widths of the spaces, whole
float32 models and torchvision exports, on the predictor's scale where the fit corrects for the machine's state
(``LatencyPredictor.on_scale``, the figure ``predictor_local.py`` reports first), else as measured.

    python experiments/weight_term_auto.py --name weight_term_auto

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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _scores  # noqa: E402
from weight_term import _run_tables  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402

DEFAULT_RUNS = ("predictor_local_32_intel,predictor_local_32_intel_shuffle8,predictor_local_128_intel,"
                "predictor_local_128_intel_shuffle8,predictor_local_128_intel_cover,predictor_local_32_memory,"
                "predictor_local_96_memory,predictor_local_128_memory,predictor_local_224_memory,predictor_local_32_pool,"
                "predictor_local_128_pool,predictor_local_224_pool,predictor_local_128_settled8,predictor_local_128_paths,"
                "predictor_local_96_se,predictor_local_128_layout")
FITS = (("off", False), ("on", True), ("auto", "auto"))
SHOWN = ("spaces, all", "spaces, float32, all", "torchvision")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="predictor_local.py runs whose committed tables are fitted")
    ap.add_argument("--name", default="weight_term_auto")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    t0, load_before = time.time(), loadavg()
    out: dict = {"command": "python experiments/weight_term_auto.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": {}}
    for run in [r for r in args.runs.split(",") if r]:
        table, _, groups = _run_tables(run)
        res: dict = {"cpu_model": table.device.get("cpu_model"), "kernel_rows": len(table.kernel_rows),
                     "model_rows": len(table.model_rows)}
        for label, option in FITS:
            s = time.perf_counter()
            p = LatencyPredictor.fit(table, weight_term=option)
            fit_s = time.perf_counter() - s
            scores = {}
            for g, rows in groups:
                if rows:
                    sc = _scores(p, rows, 1.0)
                    scale = "on_scale" if "on_scale" in sc else "as_measured"
                    scores[g] = {"scored": scale, **{k: sc[scale][k] for k in ("within_5", "within_10", "rmspe")}}
            res[label] = {"weight_term": p.weight_term, "reference_exponent": p.reference_exponent,
                          "loo_rmspe": p.fit_info.get("loo_rmspe"), "fit_seconds": fit_s,
                          "weight_ms_per_mb": float(p.theta0[-1]) if p.weight_term else None,
                          "choice": p.fit_info.get("weight_term"), "held_out": scores}
            print(f"{run} {label}: weight_term={p.weight_term} exponent {p.reference_exponent:g} LOO "
                  f"{p.fit_info.get('loo_rmspe', float('nan')):.4f}; " + ", ".join(
                      f"{g} {m['within_5']:.0%}/{m['within_10']:.0%}" for g, m in scores.items()), flush=True)
        out["runs"][run] = res
    out.update({"minutes": round((time.time() - t0) / 60, 1), "load_average_before_after": [load_before, loadavg()]})
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out), encoding="utf-8")


def _cell(m: dict | None) -> str:
    return "-" if not m else f"{m['within_5']:.1%} / {m['within_10']:.1%} ({m['rmspe']:.1%})"


def _markdown(out: dict) -> str:
    lines = ["# The cost per megabyte of weights, chosen per table by the fit (weight_term_auto)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, {out['minutes']} min, fits only on the committed tables (nothing timed); load "
             f"average before / after {out['load_average_before_after'][0]} / {out['load_average_before_after'][1]}.",
             "", "Each cell: held-out models within ±5 % / ±10 % (RMSPE), on the predictor's scale (as measured where "
             "the fit chose exponent 0). `auto` is the default fit: the weight term when it lowers the leave-one-out "
             "RMSPE of the table's own model rows by at least 5 % of it (each way at its best machine-state exponent; "
             "the margin was chosen on these tables).", "",
             "| run | CPU | LOO RMSPE off / on | auto | " + " | ".join(f"{g}: off -> auto" for g in SHOWN) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in SHOWN) + " |"]
    for run, r in out["runs"].items():
        off, on, auto = r["off"], r["on"], r["auto"]
        cells = []
        for g in SHOWN:
            a, b = off["held_out"].get(g), auto["held_out"].get(g)
            cells.append("-" if a is None else (_cell(a) + " (same)" if auto["weight_term"] == off["weight_term"]
                                                 else f"{_cell(a)} -> {_cell(b)}"))
        lines.append(f"| {run} | {r['cpu_model']} | {off['loo_rmspe']:.1%} / {on['loo_rmspe']:.1%} | "
                     f"{'on' if auto['weight_term'] else 'off'} | " + " | ".join(cells) + " |")
    lines += ["", "Where auto chose the term, per space (random widths, within ±5 % / ±10 %, off -> auto):", ""]
    for run, r in out["runs"].items():
        if r["auto"]["weight_term"]:
            lines.append(f"- {run}: " + ", ".join(
                f"{s} {_cell(r['off']['held_out'].get(s))} -> {_cell(r['auto']['held_out'].get(s))}"
                for s in ("fbnet", "mobilenet", "shufflenet") if s in r["off"]["held_out"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
