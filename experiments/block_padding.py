"""Blocked convolutions priced on whole blocks: the kernel model with and without the channels padded to the block.

ONNX Runtime's blocked layout (NCHWc, 16 channels a block with AVX-512) computes a convolution on whole blocks: at 104
or 116 channels it does the work of 112 or 128. The kernel model's physical fit counted the channels as given, so a
convolution at such a width, never timed alone, was predicted from its aligned neighbours as about 10-20 % cheaper
than it runs (``export_coverage.py``: RegNetY-400MF, 1x1 convolutions at 104, 208 and 440 channels, under-predicted on
every table). Since 2026-12-06 ``KernelModel`` counts a blocked float convolution's channels padded to whole blocks
(``LatencyPredictor.fit(block_padding=True)``, the default). This experiment fits the sixteen committed tables of
``weight_term_auto.py`` both ways and scores them on their runs' held-out timings: the torchvision exports, the
spaces' random widths and their whole float32 models, each export's mean error over the tables beside it.

    python experiments/block_padding.py

Fits only, no timing (about 15 minutes on 2 cores). Writes ``experiments/results/NAME.json`` and ``.md``.
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
from offgrid_siblings import _score  # noqa: E402
from predictor_local import RESULTS  # noqa: E402
from weight_term import _run_tables  # noqa: E402
from weight_term_auto import DEFAULT_RUNS, SHOWN  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402

WAYS = (("as given", False), ("padded", True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="predictor_local.py runs whose committed tables are fitted")
    ap.add_argument("--name", default="block_padding")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    t0 = time.time()
    out: dict = {"command": " ".join(["python experiments/block_padding.py", *sys.argv[1:]]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "load_average_before": loadavg(), "runs": {}}
    for run in [r for r in args.runs.split(",") if r]:
        table, _, groups = _run_tables(run)
        res: dict = {"cpu_model": table.device.get("cpu_model"), "nchwc": table.device.get("nchwc")}
        for label, padding in WAYS:
            pred = LatencyPredictor.fit(table, block_padding=padding)
            res[label] = {g: _score(pred, table, rows) for g, rows in groups if g in SHOWN}
        out["runs"][run] = res
        print(run, " | ".join(f"{g}: {res['as given'][g]['within_10']:.0%} -> {res['padded'][g]['within_10']:.0%}"
                              for g in res["padded"]), flush=True)
    out["minutes"] = round((time.time() - t0) / 60, 1)
    out["load_average_after"] = loadavg()
    out["summary"] = _summary(out["runs"])
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out), encoding="utf-8")


def _summary(runs: dict) -> dict:
    """Per group and way, the mean over the tables of the share within ±5 / ±10 %; per export and way, its mean and
    mean absolute error over the tables."""
    groups: dict = {}
    for g in SHOWN:
        per = {label: [r[label][g] for r in runs.values() if g in r[label]] for label, _ in WAYS}
        if per["padded"]:
            groups[g] = {label: {"tables": len(v), "within_5": float(np.mean([m["within_5"] for m in v])),
                                 "within_10": float(np.mean([m["within_10"] for m in v]))} for label, v in per.items()}
    exports: dict = {}
    for r in runs.values():
        if "torchvision" not in r["padded"]:
            continue
        for label, _ in WAYS:
            for row in r[label]["torchvision"]["rows"]:
                model = row["model"].rsplit("_", 1)[0]  # the input size off: one model over the tables
                exports.setdefault(model, {}).setdefault(label, []).append(row["error"])
    return {"groups": groups, "exports": {m: {label: {"tables": len(e), "mean_error": float(np.mean(e)),
                                                      "mean_abs_error": float(np.mean(np.abs(e))),
                                                      "within_10": float(np.mean(np.abs(np.asarray(e)) <= 0.10))}
                                              for label, e in v.items()} for m, v in exports.items()}}


def _markdown(out: dict) -> str:
    s = out["summary"]
    lines = ["# Blocked convolutions priced on whole blocks (block_padding)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, fits only, {out['minutes']} min, load average before / after "
             f"{out['load_average_before']} / {out['load_average_after']}: the sixteen committed tables fitted with the "
             "kernel model's channels as given and padded to whole blocks (`LatencyPredictor.fit(block_padding=...)`), "
             "scored on their runs' held-out timings (on the predictor's scale where the fit corrects for the "
             "machine's state). Tables without a recorded blocked layout are the same both ways.", "",
             "| held out | tables | as given: within ±5 % / ±10 %, mean over the tables | padded |",
             "| --- | --- | --- | --- |"]
    for g, v in s["groups"].items():
        a, b = v["as given"], v["padded"]
        lines.append(f"| {g} | {b['tables']} | {a['within_5']:.1%} / {a['within_10']:.1%} | "
                     f"{b['within_5']:.1%} / {b['within_10']:.1%} |")
    lines += ["", "| export | tables | as given: mean error, mean abs error, within ±10 % | padded |",
              "| --- | --- | --- | --- |"]
    for m, v in s["exports"].items():
        a, b = v["as given"], v["padded"]
        lines.append(f"| {m} | {b['tables']} | {a['mean_error']:+.1%}, {a['mean_abs_error']:.1%}, {a['within_10']:.0%} "
                     f"| {b['mean_error']:+.1%}, {b['mean_abs_error']:.1%}, {b['within_10']:.0%} |")
    lines += ["", "| table | blocked layout | as given: exports / random widths / float32 within ±10 % | padded |",
              "| --- | --- | --- | --- |"]
    for run, r in out["runs"].items():
        def cells(label: str) -> str:
            return " / ".join(f"{r[label][g]['within_10']:.0%}" if g in r[label] else "-" for g in
                              ("torchvision", "spaces, all", "spaces, float32, all"))
        lines.append(f"| {run} | {r['nchwc']} | {cells('as given')} | {cells('padded')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
