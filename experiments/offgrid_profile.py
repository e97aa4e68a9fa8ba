"""The profiler's off-grid share: what the float32 kernels at widths off the multiples of 8 buy, in one run's table.

Since 2026-12-06 every adaptive round of ``latency_models.profile`` gives 15 % of its kernels to float32 kernels of
the pool's families at channel counts that are not a multiple of 8 (``latency_models.offgrid_variants``), so that the
models users bring (ShuffleNetV2 1.0x: 58 / 116 channels per branch; RegNetY's excitations: 12-110) have timed
neighbours of their own kind (``export_coverage.py``: the exports with such widths, never timed, were 18.8 % within
±10 %). This experiment takes a ``predictor_local.py`` run profiled with the share and fits its table twice: as
profiled, and without the rows the share added (the off-grid variants of the spaces' kernel pool that no other
model of the run also executes), then scores both on the run's own held-out timings: the torchvision exports, the
random widths of the spaces and their whole float32 models. The table without them has fewer rows than a profile
without the share would have had in the same minutes (the share's rows were not spent elsewhere): said beside it.

    python experiments/offgrid_profile.py --run predictor_local_128_intel_offgrid

Fits only, no timing. Writes ``experiments/results/NAME.json`` and ``.md`` (NAME: ``offgrid_profile``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import write_json  # noqa: E402
from offgrid_siblings import _cell, _export_lines, _score  # noqa: E402
from predictor_local import RESULTS  # noqa: E402
from weight_term import _run_tables  # noqa: E402

import spaces  # noqa: E402
from latency_models import LatencyPredictor, LatencyTable, family, offgrid_variants  # noqa: E402
from search import kernel_pool  # noqa: E402

#: The groups of held-out timings scored, as ``weight_term._run_tables`` names them.
GROUPS = ("torchvision", "spaces, all", "spaces, float32, all")


def _offgrid_rows(table: LatencyTable) -> set[int]:
    """Indices of ``table``'s kernel rows that the off-grid share added: variants of the spaces' pool (rebuilt as
    ``search.profile_spaces`` built it) that no model row of another source (an ``--extra`` model) executes."""
    size = table.protocol["space_options"]["input_size"]  # predictor_local.py makes the spaces at their defaults else
    pool = kernel_pool([spaces.get_space(s, input_size=size) for s in table.protocol["spaces"]])
    offgrid = set(offgrid_variants(pool)) - set(pool)
    others = {k for r in table.model_rows if r.source not in table.protocol["spaces"] for k in r.kernels}
    return {i for i, r in enumerate(table.kernel_rows) if r.kernel in offgrid and r.kernel not in others}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="predictor_local_128_intel_offgrid",
                    help="a predictor_local.py run profiled with the off-grid share, with held-out torchvision exports")
    ap.add_argument("--name", default="offgrid_profile")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # calibration-range warnings of the torchvision exports: scored anyway
    table, _, groups = _run_tables(args.run)
    groups = {g: rows for g, rows in groups if g in GROUPS}
    if "torchvision" not in groups:
        sys.exit(f"error: --run {args.run}: no held-out torchvision exports; allowed: a predictor_local.py run "
                 "that timed them")
    drop = _offgrid_rows(table)
    if not drop:
        sys.exit(f"error: --run {args.run}: its table holds no off-grid rows; allowed: a run profiled with "
                 "latency_models.profile's offgrid_share > 0 (since 2026-12-06)")
    without = LatencyTable.from_dict({**table.to_dict(), "kernel_rows": [
        r.to_dict() for i, r in enumerate(table.kernel_rows) if i not in drop]})
    run = json.loads((RESULTS / f"{args.run}.json").read_text())
    out: dict = {"command": "python experiments/offgrid_profile.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "run": args.run,
                 "run_command": run.get("command"), "cpu_model": table.device.get("cpu_model"),
                 "kernel_rows": len(table.kernel_rows), "offgrid_rows": len(drop),
                 "offgrid_families": _count(table, drop)}
    for label, t in (("with", table), ("without", without)):
        pred = LatencyPredictor.fit(t)
        out[label] = {g: _score(pred, t, rows) for g, rows in groups.items()}
        print(f"{label} the off-grid rows: " + ", ".join(
            f"{g} {s['within_5']:.1%} / {s['within_10']:.1%}" for g, s in out[label].items()), flush=True)
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text(_markdown(out), encoding="utf-8")


def _count(table: LatencyTable, rows: set[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in sorted(rows):
        f = family(table.kernel_rows[i].kernel)
        counts[f] = counts.get(f, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _markdown(out: dict) -> str:
    w, wo = out["with"], out["without"]
    lines = ["# The profiler's off-grid share (offgrid_profile)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, fits only, on `{out['run']}`'s table ({out['cpu_model']}; profiled with "
             f"`{out['run_command']}`): {out['offgrid_rows']} of its {out['kernel_rows']} kernel rows are the "
             "off-grid share's (" + ", ".join(f"{f} {n}" for f, n in out["offgrid_families"].items()) + "). "
             "Scored on the run's held-out timings, on the predictor's scale where the fit corrects for the machine's "
             "state. The table without them has that many fewer rows than a profile without the share would have "
             "timed in the same minutes.", "",
             "| held out | with the off-grid rows: within ±5 % / ±10 % | without |", "| --- | --- | --- |"]
    for g in w:
        lines.append(f"| {g} ({w[g]['n']}) | {_cell(w[g])} | {_cell(wo[g])} |")
    lines += ["", *_export_lines(w["torchvision"], wo["torchvision"], ("with", "without"))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
