"""Whole models outside the spaces: the predictor with its outside model blended in and without it, side by side.

``LatencyPredictor.fit(table)`` fits, besides its main model-rows fit, a four-parameter model on the whole models a
profile timed outside the spaces (``profile_models``: torchvision's, the user's) and blends it in, by a gate over
the table's whole models, for the models that resemble those more than the spaces' candidates, when
cross-validation on the table's rows says it helps (``latency_models._outside``). This experiment refits committed
``predictor_local.py`` tables both ways (``outside_models=True`` / ``False``, at the exponent of the first fit),
times nothing, and scores:

- each model outside the spaces in the table, left out of the table (all its rows) and predicted by the two fits
  of the rest: models no fit saw, of the kind the blend is for;
- the held-out random models of the spaces, their float32 versions and the torchvision exports (never in the
  table) of the ``predictor_local.py`` run, on the predictor's scale.

    python experiments/outside_models.py --tables predictor_local_128_paths,predictor_local_128_maxpool,predictor_local_128_uniform,predictor_local_96_se --name outside_models

``--base RUN --add V1,V2,... --as NEW`` first copies the tables of ``predictor_local.py`` run RUN to
``experiments/results/NEW/`` and adds the named models (:data:`VARIANTS`: torchvision architectures at other widths
than the exports', so other models, never the ones predicted) to its table with ``latency_models.profile_models``
(this times them, under the protocol: run it alone on the machine), then scores NEW like the others (name it in
``--tables`` too).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _exists, _read, _with_layout  # noqa: E402

from latency_models import LatencyPredictor, LatencyTable, accuracy_metrics  # noqa: E402


#: Other models of the exports' kinds: torchvision architectures at widths no export has (random weights, 10 classes).
VARIANTS = {
    "mobilenet_v2_w050": lambda tv: tv.models.MobileNetV2(width_mult=0.5, num_classes=10),
    "mobilenet_v2_w075": lambda tv: tv.models.MobileNetV2(width_mult=0.75, num_classes=10),
    "mobilenet_v3_small_w075": lambda tv: tv.models.mobilenet_v3_small(weights=None, num_classes=10, width_mult=0.75),
    "mobilenet_v3_small_w125": lambda tv: tv.models.mobilenet_v3_small(weights=None, num_classes=10, width_mult=1.25),
    "mnasnet0_35": lambda tv: tv.models.MNASNet(alpha=0.35, num_classes=10),
    "shufflenet_v2_c72": lambda tv: tv.models.ShuffleNetV2([4, 8, 4], [24, 72, 144, 288, 1024], num_classes=10),
    "shufflenet_v2_c88": lambda tv: tv.models.ShuffleNetV2([4, 8, 4], [24, 88, 176, 352, 1024], num_classes=10),
    # RegNetX / RegNetY-200MF of the RegNet paper (Radosavovic et al., 2020, table of the models): 8 channels per
    # group, as RegNetY-400MF has (torchvision's other RegNets in the profile have 16 or more)
    "regnet_x_200mf": lambda tv: tv.models.RegNet(tv.models.regnet.BlockParams.from_init_params(
        depth=13, w_0=24, w_a=36.44, w_m=2.49, group_width=8), num_classes=10),
    "regnet_y_200mf": lambda tv: tv.models.RegNet(tv.models.regnet.BlockParams.from_init_params(
        depth=13, w_0=24, w_a=36.44, w_m=2.49, group_width=8, se_ratio=0.25), num_classes=10),
}


def _add_variants(base: str, names: list[str], new: str) -> dict:
    """Copy run ``base``'s tables to ``new`` and add the ``names`` of :data:`VARIANTS` with ``profile_models``."""
    import gzip
    import shutil

    import torch
    import torchvision

    from latency_models import profile_models
    from spaces.compress import export_onnx

    src, dst = RESULTS / base, RESULTS / new
    (dst / "onnx").mkdir(parents=True, exist_ok=True)
    for f in ("table.json", "held.json", "held_float.json", "torchvision.json"):
        if (src / f).is_file():
            shutil.copyfile(src / f, dst / f)
        elif (src / (f + ".gz")).is_file():
            (dst / f).write_bytes(gzip.decompress((src / (f + ".gz")).read_bytes()))
    size = int(_read(dst, "table.json").protocol["space_options"]["input_size"])
    torch.set_num_threads(1)
    paths = []
    for n in names:
        path = dst / "onnx" / f"{n}_{size}.onnx"
        export_onnx(VARIANTS[n](torchvision).eval(), (3, size, size), str(path))
        paths.append(path)
    loads, t0 = [loadavg()], time.time()
    profile_models([str(p) for p in paths], out=dst / "table.json", names=[p.stem for p in paths])
    loads.append(loadavg())
    for f in ("table.json", "held.json", "held_float.json"):  # committed gzipped, as predictor_local.py's
        if (dst / f).is_file():
            (dst / (f + ".gz")).write_bytes(gzip.compress((dst / f).read_bytes(), mtime=0))
            (dst / f).unlink()
    return {"base": base, "added": names, "profile_models_minutes": (time.time() - t0) / 60,
            "load_average_before_after": loads}


def _on_scale(pred: LatencyPredictor, rows: list) -> np.ndarray:
    m = np.array([r.latency_ms for r in rows], dtype=np.float64)
    if pred.reference_exponent and all(r.reference_ms for r in rows):
        m = pred.on_scale(m, np.array([r.reference_ms for r in rows]))
    return m


def _score(pred: LatencyPredictor, rows: list) -> tuple[dict, list[float]]:
    p = pred.predict_many([r.kernels for r in rows])
    m = _on_scale(pred, rows)
    return accuracy_metrics(p, m), (p / m - 1.0).tolist()


def _left_out(table: LatencyTable, exponent: float) -> list[dict]:
    """Each model outside the spaces left out of ``table`` and predicted by both fits of the rest."""
    by_model: dict[tuple, list] = {}
    for r in table.model_rows:
        if not r.candidate:
            by_model.setdefault(tuple(r.kernels), []).append(r)
    out = []
    for kernels, rows in by_model.items():
        rest = [r for r in table.model_rows if not (not r.candidate and tuple(r.kernels) == kernels)]
        sub = LatencyTable(device=table.device, protocol=table.protocol, kernel_rows=table.kernel_rows,
                           model_rows=rest)
        entry = {"model": rows[0].source, "rows": len(rows)}
        for label, flag in (("without", False), ("with", True)):
            pred = LatencyPredictor.fit(sub, reference_exponent=exponent, outside_models=flag)
            measured = float(np.median(_on_scale(pred, rows)))
            entry[label] = float(pred.predict(list(kernels)) / measured - 1.0)
            entry[f"{label}_blend"] = pred.outside is not None
        out.append(entry)
        logging.getLogger("outside_models").info("%s", entry)
    return out


def _line(label: str, a: dict, b: dict) -> str:
    return (f"| {label} | {100 * a['within_10']:.1f} -> {100 * b['within_10']:.1f} | {100 * a['within_5']:.1f} -> "
            f"{100 * b['within_5']:.1f} | {100 * a['rmspe']:.1f} -> {100 * b['rmspe']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", required=True, help="comma-separated predictor_local.py runs under experiments/results")
    ap.add_argument("--name", default="outside_models")
    ap.add_argument("--base", default=None, help="a predictor_local.py run whose tables --add copies")
    ap.add_argument("--add", default="", help=f"models to add to a copy of --base's table; allowed: {', '.join(VARIANTS)}")
    ap.add_argument("--as", dest="as_", default=None, help="the name of the copy with --add's models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    names = [t for t in args.tables.split(",") if t]
    added = None
    if args.add or args.base or args.as_:
        add = [a for a in args.add.split(",") if a]
        bad = [a for a in add if a not in VARIANTS]
        if bad or not add:
            raise SystemExit(f"--add {args.add!r} is not allowed; allowed: a comma-separated list of {', '.join(VARIANTS)}")
        if not args.base or not args.as_ or not _exists(RESULTS / args.base, "table.json"):
            raise SystemExit("--add needs --base RUN (a predictor_local.py run committed under experiments/results) "
                             "and --as NEW")
        added = _add_variants(args.base, add, args.as_)
    for t in names:
        if t != args.as_ and not _exists(RESULTS / t, "table.json"):
            raise SystemExit(f"--tables: {t!r} has no experiments/results/{t}/table.json; allowed: runs of "
                             "predictor_local.py committed there")
    started, loads = time.time(), [loadavg()]
    command = f"python experiments/outside_models.py --tables {args.tables} --name {args.name}" + (
        f" --base {args.base} --add {args.add} --as {args.as_}" if added else "")
    report: dict = {"command": command, "added": added,
                    "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "tables": {}}
    md = [f"# The outside model blended in, and not ({args.name})", "",
          f"Command: `{report['command']}`  ", ""]
    for name in names:
        work = RESULTS / name
        table = _with_layout(_read(work, "table.json"), {})
        with_ = LatencyPredictor.fit(table)
        without = LatencyPredictor.fit(table, reference_exponent=with_.reference_exponent, outside_models=False)
        info = with_.fit_info.get("outside_models", {})
        entry: dict = {"exponent": with_.reference_exponent, "outside_models": info, "groups": {}}
        md += [f"## {name}", "",
               f"Machine-state exponent {with_.reference_exponent:g}; {info.get('models', 0)} distinct models outside "
               f"the spaces in the table; the fit's choice: {info.get('chosen', 'no kernel rows')}"
               + (f", gate penalty {info['gate_penalty']:g} (cross-validated RMSPE on the table's rows, the candidates "
                  f"and the other models weighing half each: main fit alone {100 * info['cv_rmspe_own']:.1f} %, blended "
                  + ", ".join(f"penalty {h} {100 * v:.1f} %" for h, v in info['cv_rmspe_by_gate_penalty'].items())
                  + ")" if info.get("chosen") == "blend" else "") + ".", ""]
        groups = [("held-out random models of the spaces", "held.json"),
                  ("their float32 versions", "held_float.json"), ("torchvision exports", "torchvision.json")]
        md += ["| models (never in the table) | within ±10 %: without -> with | within ±5 % | RMSPE % | outside model's "
               "weight: median / max |", "| --- | --- | --- | --- | --- |"]
        for label, fname in groups:
            if not _exists(work, fname):
                continue
            rows = _read(work, fname).model_rows
            (a, ea), (b, eb) = _score(without, rows), _score(with_, rows)
            gate = with_.outside_weight([r.kernels for r in rows]).tolist()
            entry["groups"][label] = {"without": a, "with": b, "errors_without": ea, "errors_with": eb,
                                      "models": [r.source for r in rows], "outside_weight": gate}
            md.append(_line(f"{label} ({len(rows)})", a, b) + f" {np.median(gate):.3f} / {np.max(gate):.3f} |")
        tv = entry["groups"].get("torchvision exports")
        if tv:
            md += ["", "Exports, error without -> with: " + ", ".join(
                f"{m} {100 * x:+.0f} -> {100 * y:+.0f} % (weight {g:.2f})" for m, x, y, g in
                zip(tv["models"], tv["errors_without"], tv["errors_with"], tv["outside_weight"])) + "."]
        if info.get("models", 0) >= 2:
            lo = _left_out(table, with_.reference_exponent)
            entry["left_out"] = lo
            e0, e1 = np.array([x["without"] for x in lo]), np.array([x["with"] for x in lo])
            md += ["", f"Each model outside the spaces left out of the table and predicted by both fits of the rest "
                       f"({len(lo)} models; the blend chosen in {sum(x['with_blend'] for x in lo)} of the {len(lo)} fits): "
                       f"within ±10 % {100 * np.mean(np.abs(e0) < 0.1):.1f} -> {100 * np.mean(np.abs(e1) < 0.1):.1f} %, "
                       f"RMSPE {100 * np.sqrt(np.mean(e0**2)):.1f} -> {100 * np.sqrt(np.mean(e1**2)):.1f} %.", "",
                   "| model | without | with |", "| --- | --- | --- |"]
            md += [f"| {x['model']} | {100 * x['without']:+.1f} % | {100 * x['with']:+.1f} %"
                   f"{'' if x['with_blend'] else ' (no blend)'} |" for x in lo]
        md.append("")
        report["tables"][name] = entry
    loads.append(loadavg())
    report["minutes"] = (time.time() - started) / 60
    report["load_average_before_after"] = loads
    md.insert(3, f"Started {report['started_utc']}, {report['minutes']:.1f} min; "
                 + (f"`{added['base']}`'s tables copied to `{args.as_}` and {', '.join(added['added'])} added to its "
                    f"table with `profile_models` ({added['profile_models_minutes']:.1f} min, load average "
                    f"{added['load_average_before_after'][0]} / {added['load_average_before_after'][1]}); the rest"
                    if added else "")
                 + f" times nothing (fits committed tables); load average before / after: {loads[0]} / {loads[1]}. "
                 "Errors are predicted / measured - 1 on the predictor's scale.")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    write_json(RESULTS / f"{args.name}.json", report)
    print(f"wrote {RESULTS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
