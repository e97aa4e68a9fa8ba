"""Kernels on ONNX Runtime's plain NCHW path, and the neighbours the kernel model corrects them from.

On x86 ONNX Runtime runs float convolutions in its channel-blocked layout (NCHWc) only when their channels fit
it (``latency_models._layout``): a grouped convolution needs a whole block per group (16 channels here), a
depthwise one a multiple of the alignment (4). Those that do not run a plain NCHW implementation, which at equal
MACs is several times slower here (RegNetY-400MF's grouped 3x3 convolutions, 8 channels per group). The
kernel model corrects its per-family physical fit from the nearest measured kernels of the family; before this
experiment the neighbours came from either path, so the few plain-path rows of a family (ResNeXt-50's 4- and
8-channel groups) were drowned by the blocked ones, and a single plain-path row (a depthwise convolution at 122
channels) carried its correction to blocked kernels beside it. Now a neighbour on the other path counts only
when the kernel's own path has none near (``KernelModel(..., nchwc=...)``, ``_PATH_GAP``).

Part 1 (times one-kernel graphs): RegNetY-400MF's grouped convolutions at the table's input size and depthwise
3x3 convolutions at 16x16 around ShuffleNetV2 1.0's widths, under the protocol
(``latency_models.measure_interleaved``: an ONNX-Runtime-only worker, interleaved blocks, 1 thread), put on the
committed predictor's scale with the reference timed beside each, against the kernel model of the committed
table with and without the path separation (leave-one-out: a kernel the table measured is predicted without
its own row).

Part 2 (times nothing, ``--apply``): on the committed tables of ``predictor_local.py`` runs, the predictor
fitted twice (with and without the path separation, the same machine-state exponent: the first fit's), scored on
the held-out models of the spaces and the torchvision exports on the predictor's scale.

    python experiments/layout_paths.py --table predictor_local_128_maxpool \\
        --apply predictor_local_128_maxpool,predictor_local_128_uniform,predictor_local_128_layout --name layout_paths
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _read, _torchvision, _with_layout  # noqa: E402

import latency_models._kernel_model as kernel_model_module  # noqa: E402
from latency_models import (Kernel, LatencyPredictor, accuracy_metrics, kernel_graph, kernels_from_onnx,  # noqa: E402
                            measure_interleaved)
from latency_models._features import kernel_key  # noqa: E402
from latency_models._layout import plain_path  # noqa: E402

_GAP = kernel_model_module._PATH_GAP


def _with_gap(gap: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the kernel model's path gap set to ``gap`` (0: the model before)."""
    kernel_model_module._PATH_GAP = gap
    try:
        return fn(*args, **kwargs)
    finally:
        kernel_model_module._PATH_GAP = _GAP


def _kernels(size: int, tmp: pathlib.Path) -> list[tuple[str, Kernel]]:
    path = _torchvision(["regnet_y_400mf"], size, tmp)[0]
    ks, _ = kernels_from_onnx(str(path))
    grouped = list(dict.fromkeys(k for k in ks if k.op == "conv" and 1 < k.groups < k.input_shape[0]))
    dw = [Kernel("conv", (c, 16, 16), out_channels=c, kernel_size=3, groups=c)
          for c in (112, 116, 120, 122, 124, 128, 232, 464)]
    return [("regnet_y_400mf grouped", k) for k in grouped] + [("depthwise 3x3", k) for k in dw]


def part1(table_name: str, rounds: int) -> dict:
    pred = LatencyPredictor.load(RESULTS / table_name / "table.predictor.json")
    nchwc = pred._nchwc
    size = int(pred.protocol["space_options"]["input_size"])
    with tempfile.TemporaryDirectory() as tmp:
        kernels = _kernels(size, pathlib.Path(tmp))
    graphs = [kernel_graph(k) for _, k in kernels]
    runs = [measure_interleaved(graphs) for _ in range(rounds)]
    km = pred.kernel_model
    with_gap = km.predict([k for _, k in kernels], exact=False)
    without = _with_gap(0.0, km.predict, [k for _, k in kernels], exact=False)
    rows = []
    for i, (group, k) in enumerate(kernels):
        on_scale = [float(pred.on_scale(r[i].latency_ms, r[i].reference_ms)) for r in runs]
        m = float(np.median(on_scale))
        rows.append({"group": group, "kernel": k.to_dict(), "plain_path": plain_path(k, nchwc),
                     "in_table": kernel_key(k) in km.exact,
                     "measured_ms": m, "measured_by_round_ms": on_scale,
                     "predicted_ms": float(with_gap[i]), "predicted_before_ms": float(without[i])})
    return {"table": table_name, "nchwc": list(nchwc) if nchwc else None, "rounds": rounds, "kernels": rows}


def _score(pred: LatencyPredictor, rows: list) -> dict:
    predicted = pred.predict_many([r.kernels for r in rows])
    measured = np.array([r.latency_ms for r in rows])
    if pred.reference_exponent and all(r.reference_ms for r in rows):
        measured = pred.on_scale(measured, np.array([r.reference_ms for r in rows]))
    return {**accuracy_metrics(predicted, measured),
            "errors": {r.source + (f"#{i}" if r.candidate else ""): float(p / m - 1)
                       for i, (r, p, m) in enumerate(zip(rows, predicted, measured))}}


def _scores(pred: LatencyPredictor, held: list, tv: list) -> dict:
    """The fit's own errors and its scores on the held-out models of the spaces (all, and per space) and the
    exports (kernels the table did not measure are predicted with the gap in force)."""
    out = {"fit_loo_rmspe": pred.fit_info["loo_rmspe"],
           "kernel_loo_rmspe": float(np.sqrt(np.mean(pred.kernel_model.loo_errors() ** 2))),
           "spaces": _score(pred, held), "torchvision": _score(pred, tv)}
    for space in dict.fromkeys(r.source for r in held):
        out[space] = _score(pred, [r for r in held if r.source == space])
    return out


def part2(names: list[str]) -> dict:
    out = {}
    for name in names:
        work = RESULTS / name
        table = _with_layout(_read(work, "table.json"), {})
        held, tv = _read(work, "held.json"), _read(work, "torchvision.json")
        after = LatencyPredictor.fit(table)
        before = _with_gap(0.0, LatencyPredictor.fit, table, reference_exponent=after.reference_exponent)
        res = {"nchwc": table.device.get("nchwc"), "reference_exponent": after.reference_exponent}
        for label, pred, gap in (("before", before, 0.0), ("after", after, _GAP)):
            res[label] = _with_gap(gap, _scores, pred, held.model_rows, tv.model_rows)
        out[name] = res
        print(f"{name}: spaces within 10 % {res['before']['spaces']['within_10']:.1%} -> "
              f"{res['after']['spaces']['within_10']:.1%}, torchvision {res['before']['torchvision']['within_10']:.1%}"
              f" -> {res['after']['torchvision']['within_10']:.1%}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default="predictor_local_128_maxpool",
                    help="part 1: the predictor_local.py run whose committed predictor and input size are used")
    ap.add_argument("--rounds", type=int, default=5, help="part 1: worker runs, each timing every graph")
    ap.add_argument("--apply", default="", help="part 2: comma-separated predictor_local.py runs to fit and score")
    ap.add_argument("--name", default="layout_paths")
    args = ap.parse_args()
    started, load_before = dt.datetime.now(dt.timezone.utc), loadavg()
    out = {"command": "python " + " ".join(sys.argv), "started_utc": started.replace(microsecond=0).isoformat()}
    out["part1"] = part1(args.table, args.rounds)
    out["load_average_after_part1"] = loadavg()
    out["part2"] = part2([s for s in args.apply.split(",") if s])
    out["load_average_before_after"] = [load_before, loadavg()]
    out["minutes"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)
    write_json(RESULTS / f"{args.name}.json", out)
    _markdown(args.name, out)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _markdown(name: str, r: dict) -> None:
    p1 = r["part1"]
    lines = [f"# Plain-path kernels and the kernel model's neighbours ({name})", "",
             f"Command: `{r['command']}`  ",
             f"Started {r['started_utc']}, {r['minutes']} min; load average (1/5/15 min) before / after part 1 / end: "
             f"{r['load_average_before_after'][0]} / {r['load_average_after_part1']} / "
             f"{r['load_average_before_after'][1]} on 2 shared cores; ONNX Runtime layout (block, alignment) "
             f"{p1['nchwc']}.", "",
             f"## Part 1: one-kernel graphs under the protocol ({p1['rounds']} worker runs, median), against the kernel "
             f"model of `{p1['table']}` (leave-one-out; ms on the predictor's scale)", "",
             "| kernels | input (C, H, W) | groups | stride | path | in table | measured ms | before: predicted, ratio | "
             "after: predicted, ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in p1["kernels"]:
        kd = k["kernel"]
        lines.append(f"| {k['group']} | {tuple(kd['input_shape'])} | {kd.get('groups', 1)} | {kd.get('stride', 1)} | "
                     f"{'plain' if k['plain_path'] else 'blocked'} | {'yes' if k['in_table'] else 'no'} | "
                     f"{k['measured_ms']:.4f} | "
                     f"{k['predicted_before_ms']:.4f}, {k['predicted_before_ms'] / k['measured_ms']:.2f} | "
                     f"{k['predicted_ms']:.4f}, {k['predicted_ms'] / k['measured_ms']:.2f} |")
    if r["part2"]:
        lines += ["", "## Part 2: the predictor fitted on committed tables, before / after (held-out models, "
                  "on the predictor's scale)", "",
                  "| table | exponent | fit LOO RMSPE | kernel LOO RMSPE | spaces within ±10% (±5%) | fbnet / mobilenet / "
                  "shufflenet within ±10% | spaces RMSPE | torchvision within ±10% | torchvision RMSPE |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for table, res in r["part2"].items():
            b, a = res["before"], res["after"]

            def both(f):
                return f"{f(b)} -> {f(a)}"
            spaces = [s for s in b if s in ("fbnet", "mobilenet", "shufflenet")]
            lines.append(
                f"| {table} | {res['reference_exponent']} | {both(lambda x: _pct(x['fit_loo_rmspe']))} | "
                f"{both(lambda x: _pct(x['kernel_loo_rmspe']))} | "
                f"{both(lambda x: _pct(x['spaces']['within_10']) + ' (' + _pct(x['spaces']['within_5']) + ')')} | "
                f"{both(lambda x: ' / '.join(_pct(x[s]['within_10']) for s in spaces))} | "
                f"{both(lambda x: _pct(x['spaces']['rmspe']))} | {both(lambda x: _pct(x['torchvision']['within_10']))} | "
                f"{both(lambda x: _pct(x['torchvision']['rmspe']))} |")
        lines += ["", "Torchvision exports one by one (error = predicted / measured - 1, before -> after):", ""]
        for table, res in r["part2"].items():
            eb, ea = res["before"]["torchvision"]["errors"], res["after"]["torchvision"]["errors"]
            lines.append(f"- {table}: " + ", ".join(f"{m} {100 * eb[m]:+.0f} -> {100 * ea[m]:+.0f} %" for m in eb))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
