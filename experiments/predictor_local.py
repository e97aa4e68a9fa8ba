"""Targets 1 and 2 of issue 12: this CPU, the project's timing protocol (named in each result), models of the spaces and beyond.

At one input size (``--input-size``, the user's resolution): profile the built-in spaces (fbnet, mobilenet,
shufflenet; ``--spaces``) within ``--budget-min`` minutes; add OTHER torchvision models (``--extra``, e.g. a
ResNet-34 for a ResNet's plain 3x3 convolutions) with ``latency_models.profile_models``; time ``--n`` random
held-out models per space (a different seed, never in the table: checked; a random width per layer), ``--n-float``
held-out whole float32 models per space (what a search ships where no quantisation pays) and the torchvision
exports to predict (``--torchvision``, never profiled); fit the predictor two ways: on the table as measured
(``reference_exponent=0``) and with the machine-state correction (``reference_exponent="auto"``: every row put
on the table's reference scale with the exponent the fit's leave-one-out error chooses); report n, the share
within ±5 % / ±10 %, RMSPE and Spearman, per space and for the torchvision models, against the latencies as
measured, put on the predictor's scale by the reference timed beside each (``LatencyPredictor.on_scale``),
and with one scalar for the machine's state taken out (the median of predicted/measured, reported). When the
table's calibration models include uniform-precision ones (profiles since 2026-12-03), the report also fits
the same table on its random-width calibration models only and on the same number half uniform, side by side.

    python experiments/predictor_local.py --input-size 32 --budget-min 6 --n 30 \\
        --name predictor_local_32

Writes ``experiments/results/NAME.json`` and ``.md`` (the tables under ``experiments/results/NAME/``).
The load average before, between and after is recorded: on a shared machine it decides how noisy timings are.

``--rescore NAME`` times nothing: it fits and scores again on the tables a previous run committed under
``experiments/results/NAME/`` (``table.json.gz``, ``held.json.gz``, ``held_float.json`` when the run timed
it, ``torchvision.json``), keeping that run's
command, duration and load averages. A table measured before tables recorded ONNX Runtime's blocked layout
(``device["nchwc"]``, which the predictor's layout terms use) gets this machine's when it was measured on the
same CPU with the same ONNX Runtime version (noted in the JSON and the report).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import spaces  # noqa: E402
from latency_models import (KERNEL_SHARE, LatencyPredictor, LatencyTable, WorkloadModel, accuracy_metrics,  # noqa: E402
                            cpu_name, kernels_from_onnx, measure_models, nchwc_layout,
                            profile_models)
from search import measure_spaces, profile_spaces  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _torchvision(names: list[str], size: int, folder: pathlib.Path) -> list[pathlib.Path]:
    import torch
    import torchvision

    from spaces.compress import export_onnx

    torch.set_num_threads(1)
    paths = []
    for name in names:
        path = folder / f"{name}_{size}.onnx"
        if not path.exists():
            model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
            export_onnx(model, (3, size, size), str(path))
        paths.append(path)
    return paths


def _scalar(pred: LatencyPredictor, rows: list) -> float:
    """The one scalar for the machine's state: the median of predicted / measured over ``rows``."""
    return float(np.median(pred.predict_many([r.kernels for r in rows]) / np.array([r.latency_ms for r in rows])))


def _scores(pred: LatencyPredictor, rows: list, scalar: float) -> dict:
    """Metrics of ``pred`` on model rows: as measured, on the predictor's scale, and with one scalar taken out."""
    predicted = pred.predict_many([r.kernels for r in rows])
    measured = np.array([r.latency_ms for r in rows])
    out = {"as_measured": accuracy_metrics(predicted, measured)}
    if pred.reference_exponent and all(r.reference_ms for r in rows):
        on_scale = pred.on_scale(measured, np.array([r.reference_ms for r in rows]))
        out["on_scale"] = accuracy_metrics(predicted, on_scale)
    out["one_scalar"] = {**accuracy_metrics(predicted / scalar, measured), "scalar": scalar}
    out["rows"] = [{"source": r.source, "measured_ms": float(m), "predicted_ms": float(p),
                    "reference_ms": r.reference_ms} for r, m, p in zip(rows, measured, predicted)]
    return out


def _as_read_before(kernels: list) -> list:
    """The kernels as the ONNX reader listed them before it knew squeeze-and-excitation models: no ``scale``
    or ``act`` kernels, and hard-swish / hard-sigmoid / sigmoid / swish not fused (reported unknown, 0 ms)."""
    import dataclasses

    plain = ("none", "relu", "relu6")
    return [k if k.activation in plain else dataclasses.replace(k, activation="none")
            for k in kernels if k.op not in ("scale", "act")]


def _read(folder: pathlib.Path, name: str) -> LatencyTable:
    """A table a run wrote under ``folder`` (committed gzipped or not: ``LatencyTable.load`` reads both)."""
    plain = folder / name
    return LatencyTable.load(plain if plain.exists() else folder / (name + ".gz"))


def _with_layout(table: LatencyTable, meta: dict) -> LatencyTable:
    """A table measured before devices recorded ONNX Runtime's blocked layout (``device["nchwc"]``) gets this
    machine's, when it was measured on this CPU with this ONNX Runtime version (noted in ``meta``)."""
    import onnxruntime

    dev = table.device
    if "nchwc" not in dev and dev.get("cpu_model") == cpu_name() and dev.get("runtime_version") == onnxruntime.__version__:
        dev["nchwc"] = list(nchwc_layout() or []) or None
        meta["nchwc"] = f"{dev['nchwc']} (read on this machine at re-scoring: same CPU, same ONNX Runtime)"
    return table


def _run_record(name: str) -> dict:
    """The record of the run that made the tables of ``experiments/results/NAME/``: its ``NAME.json``, or for a
    folder that ``outside_models.py --base RUN --add ... --as NAME`` made, RUN's with the models it added."""
    path = RESULTS / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    for made in sorted(RESULTS.glob("outside_models*.json")):
        rec = json.loads(made.read_text())
        added = rec.get("added")
        if added and rec.get("command", "").endswith(f"--as {name}"):
            base = _run_record(added["base"])
            return {**base, "command": f"{base['command']}`, then `{rec['command']}",
                    "profile_minutes": base["profile_minutes"] + added["profile_models_minutes"],
                    "extra": ", ".join([*(s for s in base["extra"].split(", ") if s), *added["added"]])}
    raise SystemExit(f"error: no record of the run {name!r}: neither experiments/results/{name}.json nor an "
                     f"outside_models*.json that made it (--as {name})")


def _run_exports(name: str) -> tuple[int, list[str], list[str]]:
    """The torchvision exports of the run ``name`` at its input size: (input size, model names, ONNX paths), the
    files under ``experiments/results/NAME/onnx/`` (made again when missing)."""
    record = _run_record(name)
    size = int(record["protocol"]["space_options"]["input_size"])
    names = record["command"].split("--torchvision ")[1].split()[0].split(",")
    onnx_dir = RESULTS / name / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    return size, names, [str(p) for p in _torchvision(names, size, onnx_dir)]


def _exists(folder: pathlib.Path, name: str) -> bool:
    """Whether ``folder`` holds ``name`` as it is or gzipped (as :func:`_read` reads it)."""
    return (folder / name).is_file() or (folder / (name + ".gz")).is_file()


def _timed_twice(pred: LatencyPredictor, first: list, second: list, key) -> dict | None:
    """The same models in two timings (matched by ``key``), both on ``pred``'s scale: how far the second timing
    is from the first, and whether ``pred``'s errors are the same on both (a model's error that survives a
    re-timing is the predictor's, not the timing's)."""
    by = {key(r): r for r in first}
    pairs = [(by[key(r)], r) for r in second if key(r) in by]
    if len(pairs) < 3:
        return None
    a = np.array([float(pred.on_scale(x.latency_ms, x.reference_ms)) for x, _ in pairs])
    b = np.array([float(pred.on_scale(y.latency_ms, y.reference_ms)) for _, y in pairs])
    p = pred.predict_many([list(y.kernels) for _, y in pairs])
    d, ea, eb = np.abs(b / a - 1), np.log(p / a), np.log(p / b)
    return {"n": len(pairs), "retime_within_2": float((d <= 0.02).mean()), "retime_within_5": float((d <= 0.05).mean()),
            "retime_within_10": float((d <= 0.10).mean()),
            "sd_log_retime_over_first": float(np.log(b / a).std()), "sd_log_error_first": float(ea.std()),
            "sd_log_error_second": float(eb.std()), "error_correlation": float(np.corrcoef(ea, eb)[0, 1])}


def _uniform(row) -> bool | None:
    """Whether a calibration model row has one bit width in all its layers (None: not a space's candidate)."""
    if not row.candidate:
        return None
    return len({k.bits for k in row.kernels if k.op in ("conv", "linear")}) == 1


def _calibration_ab(table: LatencyTable, groups: dict[str, list]) -> list[dict]:
    """The calibration set's composition, side by side on one table: fitted on its calibration models with a
    random width per layer only (what profiles drew before uniform-precision models), and on the same number
    of rows, half of them uniform-precision models; the other models (``--extra``) in both. Scored on the
    predictor's scale."""
    mixed = [r for r in table.model_rows if _uniform(r) is False]
    uniform = [r for r in table.model_rows if _uniform(r) is True]
    other = [r for r in table.model_rows if _uniform(r) is None]
    half = min(len(mixed) // 2, len(uniform))
    if half < 8:
        return []
    out = []
    for label, rows in ((f"random widths only: {len(mixed)} models", mixed),
                        (f"{len(mixed) - half} random widths + {half} uniform", mixed[:len(mixed) - half] + uniform[:half])):
        sub = LatencyTable(device=table.device, protocol=table.protocol, kernel_rows=table.kernel_rows,
                           model_rows=rows + other)
        pred = LatencyPredictor.fit(sub)
        scores = {}
        for group, rs in groups.items():
            if rs:
                s = _scores(pred, rs, 1.0)
                errors = [r["predicted_ms"] / float(pred.on_scale(r["measured_ms"], r["reference_ms"])) - 1
                          for r in s["rows"]] if "on_scale" in s else [r["predicted_ms"] / r["measured_ms"] - 1 for r in s["rows"]]
                scores[group] = {**s.get("on_scale", s["as_measured"]), "median_error": float(np.median(errors))}
        out.append({"calibration": label, "reference_exponent": pred.reference_exponent, "scores": scores})
    return out


def report(name: str, table: LatencyTable, held: LatencyTable, tv: LatencyTable, space_names: list[str],
           meta: dict, held_float: LatencyTable | None = None) -> None:
    """Fit both ways, score, write ``NAME.json`` and ``NAME.md``, print the table."""
    work = RESULTS / name
    t0 = time.time()
    fits = {"as_measured": LatencyPredictor.fit(table, reference_exponent=0)}
    t_plain = time.time() - t0
    fits["state"] = LatencyPredictor.fit(table)  # reference_exponent="auto"
    t_state = time.time() - t0 - t_plain
    if table.device.get("nchwc"):  # the same fit without ONNX Runtime's layout terms, for comparison
        plain = LatencyTable(device={**table.device, "nchwc": None}, protocol=table.protocol,
                             kernel_rows=table.kernel_rows, model_rows=table.model_rows)
        fits["state_no_layout"] = LatencyPredictor.fit(plain, reference_exponent=fits["state"].reference_exponent)
    if "table_from" not in meta:  # a --retime run's predictor is its source's
        fits["state"].save(work / "table.predictor.json")
    res: dict = {}
    # one scalar per fit, taken over every held-out model of the spaces, applied to all groups
    scalars = {fit: _scalar(p, held.model_rows) for fit, p in fits.items()}
    floats = held_float.model_rows if held_float is not None else []
    for label, rows in [*((s, [r for r in held.model_rows if r.source == s]) for s in space_names),
                        ("spaces, all", held.model_rows),
                        *((f"{s}, float32", [r for r in floats if r.source == s]) for s in space_names if floats),
                        *((("spaces, float32, all", floats),) if floats else ()), ("torchvision", tv.model_rows)]:
        res[label] = {fit: _scores(p, rows, scalars[fit]) for fit, p in fits.items()}
    ab = _calibration_ab(table, {"spaces, random widths": held.model_rows, "spaces, float32": floats,
                                 "torchvision": tv.model_rows})
    ref = table.reference_ms
    state = fits["state"]
    twice: dict = {}
    if "table_from" in meta:  # a --retime run: the first timings are its source run's
        src = RESULTS / meta["table_from"]
        cand = lambda r: json.dumps(r.candidate, sort_keys=True)  # noqa: E731
        groups = [("held.json", cand, [*((s_, lambda r, s_=s_: r.source == s_) for s_ in space_names),
                                       ("spaces, all", lambda r: True)], held.model_rows)]
        if held_float is not None and _exists(src, "held_float.json"):
            groups.append(("held_float.json", cand, [("spaces, float32, all", lambda r: True)], held_float.model_rows))
        groups.append(("torchvision.json", lambda r: r.source, [("torchvision", lambda r: True)], tv.model_rows))
        for fname, key, labels, rows in groups:
            if not _exists(src, fname):
                continue
            first = _read(src, fname).model_rows
            for label, keep in labels:
                t2 = _timed_twice(state, [r for r in first if keep(r)], [r for r in rows if keep(r)], key)
                if t2:
                    twice[label] = t2
    result = {
        **meta, "device": table.device, "protocol": table.protocol, "table_reference_ms": ref,
        "kernel_rows": len(table.kernel_rows), "model_rows": len(table.model_rows),
        "fit_seconds": {"as_measured": t_plain, "state": t_state},
        "reference_exponent": state.reference_exponent, "fit_info": {f: p.fit_info for f, p in fits.items()},
        "one_scalar": scalars, "results": res, "calibration_ab": ab, "timed_twice": twice,
        "targets": {"spaces": {"within_10": 0.95, "within_5": 0.80}, "torchvision": {"within_10": 0.90}},
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    size = table.protocol.get("space_options", {}).get("input_size", "?")
    loo = state.fit_info.get("loo_rmspe_by_exponent", {})
    lines = [f"# Latency predictor on this CPU at {size}x{size} (protocol {table.protocol['name']}, 1 thread)", "",
             f"Command: `{meta['command']}`  "]
    if "rescored" in meta:
        lines.append(f"Fitted and scored again on that run's tables: `{meta['rescored']}` ({meta['rescored_utc']})  ")
    if "nchwc" in meta:
        lines.append(f"ONNX Runtime's blocked layout (block, channel alignment) for the predictor's layout terms: "
                     f"{meta['nchwc']}  ")
    lines += [f"Measured {meta['finished_utc']}; profile {meta['profile_minutes']:.1f} min: {len(table.kernel_rows)} "
              f"kernel rows, {len(table.model_rows)} model rows (incl. {meta['extra'] or 'no'} other models); held-out "
              f"models never in the table; load average (1/5/15 min) before / between / after: "
              f"{' / '.join(map(str, meta['load_average_before_between_after']))} on 2 shared cores. Table reference "
              f"{ref:.4f} ms.", "",
              f"Machine-state exponent chosen by the fit: **{state.reference_exponent:g}** (leave-one-out RMSPE on "
              f"the table's model rows by exponent: {', '.join(f'{b}: {100 * v:.1f}%' for b, v in loo.items())}); "
              f"fits took {t_plain:.0f} s as measured, {t_state:.0f} s with the exponent's choice.", "",
              "| models | n | median ms | fit | scored against | within ±5% | within ±10% | RMSPE | Spearman |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, by_fit in res.items():
        for fit, scores in by_fit.items():
            med = np.median([r["measured_ms"] for r in scores["rows"]])
            for how in ("as_measured", "on_scale", "one_scalar"):
                if how not in scores:
                    continue
                m = scores[how]
                extra = f" ({m['scalar']:.3f})" if how == "one_scalar" else ""
                lines.append(f"| {label} | {m['n']} | {med:.2f} | {fit} | {how}{extra} | "
                             f"{100 * m['within_5']:.1f}% | {100 * m['within_10']:.1f}% | {100 * m['rmspe']:.1f}% | "
                             f"{m['spearman']:.3f} |")
    if ab:
        lines += ["", "The calibration set's composition, side by side on this table (same kernel rows and other models; "
                      "each fit chooses its exponent; on the predictor's scale; median error is predicted / measured - 1):", "",
                  "| calibration models | exponent | " + " | ".join(f"{g}: within ±10% (±5%), RMSPE, median error"
                                                           for g in ab[0]["scores"]) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in ab[0]["scores"]) + " |"]
        for a in ab:
            lines.append(f"| {a['calibration']} | {a['reference_exponent']:g} | " + " | ".join(
                f"{100 * m['within_10']:.1f}% ({100 * m['within_5']:.1f}%), {100 * m['rmspe']:.1f}%, "
                f"{100 * m['median_error']:+.1f}%" for m in a["scores"].values()) + " |")
    if twice:
        lines += ["", f"The same models timed twice: in `{meta['table_from']}`'s run and in this one, both on the state "
                      "fit's scale. A predictor's error that stays when the model is timed again is the predictor's; "
                      "one that moves is the timing's:", "",
                  "| models | n | re-timed within ±5 % (±10 %) of the first | sd of log(second / first) | "
                  "sd of the state fit's log error, first / second | correlation of its errors |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for label, t2 in twice.items():
            lines.append(f"| {label} | {t2['n']} | {100 * t2['retime_within_5']:.1f} % ({100 * t2['retime_within_10']:.1f} %) | "
                         f"{100 * t2['sd_log_retime_over_first']:.1f} % | {100 * t2['sd_log_error_first']:.1f} % / "
                         f"{100 * t2['sd_log_error_second']:.1f} % | {t2['error_correlation']:.2f} |")
    tv_rows = {fit: {r["source"]: r for r in res["torchvision"][fit]["rows"]} for fit in fits}
    if tv.model_rows:
        lines += ["", "Models outside the spaces, one by one (never profiled; `error` is predicted / measured - 1):", "",
                  "| model | kernels | measured ms | as_measured fit: predicted, error | on the predictor's scale ms | "
                  "state fit: predicted, error | state fit without layout terms: predicted, error | "
                  "state fit, kernels as read before SE support: predicted, error |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in tv.model_rows:
            a, b = tv_rows["as_measured"][r.source], tv_rows["state"][r.source]
            scaled = float(state.on_scale(r.latency_ms, r.reference_ms)) if r.reference_ms else r.latency_ms
            before = _as_read_before(list(r.kernels))
            old = float(state.predict(before))
            c = tv_rows.get("state_no_layout", {}).get(r.source)
            lines.append(f"| {r.source} | {len(r.kernels)} | {r.latency_ms:.3f} | {a['predicted_ms']:.3f}, "
                         f"{100 * (a['predicted_ms'] / r.latency_ms - 1):+.1f}% | {scaled:.3f} | "
                         f"{b['predicted_ms']:.3f}, {100 * (b['predicted_ms'] / scaled - 1):+.1f}% | "
                         + (f"{c['predicted_ms']:.3f}, {100 * (c['predicted_ms'] / scaled - 1):+.1f}% | " if c else "- | ")
                         + (f"{old:.3f}, {100 * (old / scaled - 1):+.1f}% |" if before != list(r.kernels) else "same |"))
    lines += ["", "fit: `as_measured` is the predictor fitted on the table as measured (`reference_exponent=0`); "
              "`state` puts every row on the table's reference scale with the chosen exponent first, and "
              "predicts at the table's state; `state_no_layout` is the same fit (same exponent) without ONNX "
              "Runtime's layout terms (the table's `device.nchwc` set to None). scored against: the measured latencies (`as_measured`), the same put "
              "on the predictor's scale by the reference timed beside each (`on_scale`: "
              "`LatencyPredictor.on_scale`), or divided by one scalar for the machine's state (`one_scalar`: the "
              "median predicted/measured over the spaces' held-out models).", "",
              "Targets: spaces >= 80% within ±5% and 95% within ±10%; torchvision >= 90% within ±10%."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--spaces", default="fbnet,mobilenet,shufflenet")
    ap.add_argument("--budget-min", type=float, default=6.0)
    ap.add_argument("--kernel-share", type=float, default=KERNEL_SHARE,
                    help="share of the profile's budget spent timing kernels alone (default %(default)g)")
    ap.add_argument("--n", type=int, default=30, help="held-out models per space")
    ap.add_argument("--n-float", type=int, default=None,
                    help="held-out whole float32 models per space (default: --n; 0: none)")
    ap.add_argument("--torchvision", default="mobilenet_v2,shufflenet_v2_x1_0,mnasnet1_0,resnet18",
                    help="torchvision models to predict (never profiled); e.g. add mobilenet_v3_small,"
                         "efficientnet_b0,regnet_y_400mf for squeeze-and-excitation, hard-swish and swish")
    ap.add_argument("--extra", default="resnet34",
                    help="OTHER torchvision models added with profile_models (kernels the spaces never produce: "
                         "resnet34 for plain 3x3 convolutions; e.g. mobilenet_v3_large, efficientnet_b1 for the "
                         "activations and excitations of SE models)")
    ap.add_argument("--memory-probe-mb", type=float, default=None,
                    help="the protocol's memory probe for every timing of the run (default: the protocol's, 16 MiB; "
                         "0: none, as tables before 2026-12-05 were timed)")
    ap.add_argument("--kernel-settle-attempts", type=int, default=None,
                    help="the profile's kernel jobs settle with at most this many attempts (1: not at all; default: the "
                         "protocol's, as its whole-model jobs)")
    ap.add_argument("--name", default=None, help="results name (default predictor_local_<input size>)")
    ap.add_argument("--rescore", metavar="NAME", default=None,
                    help="time nothing: fit and score again on the tables of experiments/results/NAME/")
    ap.add_argument("--retime", metavar="NAME", default=None,
                    help="profile nothing: time the held-out models and the torchvision exports again (same "
                         "--input-size, --spaces, --n, --torchvision) against the table of experiments/results/NAME/ "
                         "(also one that outside_models.py --as NAME made)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    args.n_float = args.n if args.n_float is None else args.n_float
    if args.rescore:
        work = RESULTS / args.rescore
        old = json.loads((RESULTS / f"{args.rescore}.json").read_text())
        table = _read(RESULTS / old.get("table_from", args.rescore), "table.json")  # a --retime run's is its source's
        held, tv = _read(work, "held.json"), _read(work, "torchvision.json")
        held_float = _read(work, "held_float.json") if _exists(work, "held_float.json") else None
        meta = {k: old[k] for k in ("command", "finished_utc", "profile_minutes", "held_out_overlap_with_table",
                                    "load_average_before_between_after", "table_from") if k in old}
        meta["extra"] = old.get("extra", "resnet34" if "--extra resnet34" in old["command"] else "")
        meta["rescored"] = f"python experiments/predictor_local.py --rescore {args.rescore}"
        meta["rescored_utc"] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        table = _with_layout(table, meta)
        report(args.rescore, table, held, tv, list(dict.fromkeys(r.source for r in held.model_rows)), meta,
               held_float)
        return
    name = args.name or (f"{args.retime}_retime" if args.retime else f"predictor_local_{args.input_size}")
    work = RESULTS / name
    work.mkdir(parents=True, exist_ok=True)
    size = args.input_size
    space_objs = [spaces.get_space(s, input_size=size) for s in args.spaces.split(",")]
    tv_names = [s for s in args.torchvision.split(",") if s]
    extra_names = [s for s in args.extra.split(",") if s]
    if set(tv_names) & set(extra_names):
        raise SystemExit("--extra must not name a model that is predicted (--torchvision)")
    onnx_dir = work / "onnx"
    onnx_dir.mkdir(exist_ok=True)
    tv_paths = _torchvision(tv_names, size, onnx_dir)
    timing = {} if args.memory_probe_mb is None else {"memory_probe_mb": args.memory_probe_mb}
    if args.kernel_settle_attempts is not None:
        if args.retime:
            raise SystemExit("--kernel-settle-attempts applies to a profile; --retime profiles nothing")
        timing["kernel_settle_attempts"] = args.kernel_settle_attempts
    loads = [_load()]
    if args.retime:  # the table of an earlier run, as it was
        old = _run_record(args.retime)
        table = _with_layout(_read(RESULTS / args.retime, "table.json"), {})
        if table.protocol.get("space_options", {}).get("input_size") != size:
            raise SystemExit(f"--input-size {size} differs from the table of {args.retime}")
        t_profile, extra_names = old["profile_minutes"] * 60.0, [s for s in old["extra"].split(", ") if s]
    else:
        extra_paths = _torchvision(extra_names, size, onnx_dir)
        t0 = time.time()
        table = profile_spaces(space_objs, device_name="karumi-dev-x86", out=work / "table.json", threads=1,
                               budget_min=args.budget_min, description="2-core shared dev VM", timing=timing,
                               kernel_share=args.kernel_share)
        if extra_paths:
            table = profile_models([str(p) for p in extra_paths], out=work / "table.json",
                                   names=[p.stem for p in extra_paths])
        t_profile = time.time() - t0
    loads.append(_load())
    held = measure_spaces(space_objs, n=args.n, device_name="karumi-dev-x86", out=work / "held.json", timing=timing)
    held_float = (measure_spaces(space_objs, n=args.n_float, device_name="karumi-dev-x86", bits=32,
                                 out=work / "held_float.json", timing=timing) if args.n_float else None)
    tv_models = [WorkloadModel(onnx=str(p), kernels=tuple(kernels_from_onnx(str(p))[0]), source=p.stem)
                 for p in tv_paths]
    tv = measure_models(tv_models, device_name="karumi-dev-x86", out=work / "torchvision.json", timing=timing)
    loads.append(_load())
    seen = {json.dumps(r.candidate, sort_keys=True) for r in table.model_rows}
    overlap = sum(json.dumps(r.candidate, sort_keys=True) in seen for r in held.model_rows)
    probe = f" --memory-probe-mb {args.memory_probe_mb:g}" if args.memory_probe_mb is not None else ""
    if args.kernel_settle_attempts is not None:
        probe += f" --kernel-settle-attempts {args.kernel_settle_attempts}"
    if overlap:
        raise SystemExit(f"{overlap} held-out models are in the table: not a held-out test")
    meta = {
        "command": (f"python experiments/predictor_local.py --retime {args.retime} --input-size {size} --n {args.n} --n-float {args.n_float} "
                    f"--spaces {args.spaces} --torchvision {args.torchvision} --name {name}{probe} (table: "
                    f"`{old['command']}`)") if args.retime else
                   (f"python experiments/predictor_local.py --input-size {size} "
                    f"--budget-min {args.budget_min:g}"
                    + (f" --kernel-share {args.kernel_share:g}" if args.kernel_share != KERNEL_SHARE else "")
                    + f" --n {args.n} --spaces {args.spaces} "
                    f"--n-float {args.n_float} --torchvision {args.torchvision} --extra {args.extra} --name {name}{probe}"),
        "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "profile_minutes": t_profile / 60.0, "held_out_overlap_with_table": overlap,
        "load_average_before_between_after": loads, "extra": ", ".join(extra_names),
        **({"table_from": args.retime} if args.retime else {}),
    }
    report(name, table, held, tv, [s.name for s in space_objs], meta, held_float)


if __name__ == "__main__":
    main()
