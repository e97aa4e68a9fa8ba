"""Command line: ``python -m latency_models fit | evaluate | noise-floor | profile-workload | add-models | profile |
measure``.

``fit``, ``evaluate``, ``noise-floor``, ``profile-workload`` and ``add-models`` need this package alone (numpy,
onnx, onnxruntime): ``noise-floor`` re-times ONNX models in fresh workers to say how well this device repeats a timing;
``profile-workload`` times a workload folder written by ``python -m search profile --write-workload DIR`` on a
device without torch; ``add-models`` times ONNX models of the user's own kind into a table (their kernels the table
lacks, and each whole model), so that the predictor knows models outside the spaces. ``profile`` and ``measure`` with ``--space`` need the search spaces
(sampling candidates and exporting them needs torch), which this package never imports: they are run by
``python -m search profile`` / ``python -m search measure``, with the same flags, which this command hands
over to in a child process.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import subprocess
import sys
from typing import Sequence

__all__ = ["main"]

#: Sub-commands implemented by ``python -m search`` (they sample and export the spaces' models).
SPACE_COMMANDS = ("profile", "measure")


def _load_predictor(path: str, *, what: str = "--predictor", prior: Sequence[str] = (),  # noqa: ANN202
                    outside_models: bool = True, weight_term: bool | str = "auto"):
    from latency_models._predictor import LatencyPredictor
    from latency_models._table import LatencyTable, read_json

    data = read_json(path, what=what)
    if isinstance(data, dict) and data.get("kind") == "karumi.LatencyPredictor":
        if prior:
            raise ValueError(f"--prior applies to a table being fitted; {what} {path} is a fitted predictor")
        return LatencyPredictor.from_dict(data)
    priors = [_load_predictor(p, what="--prior") for p in prior]
    return LatencyPredictor.fit(LatencyTable.from_dict(data), prior=priors,  # a table: fit on the fly
                                outside_models=outside_models, weight_term=weight_term)


def _cmd_fit(args: argparse.Namespace) -> int:
    pred = _load_predictor(args.table, what="table", prior=args.prior, outside_models=not args.no_outside_models,
                           weight_term={"auto": "auto", "on": True, "off": False}[args.weight_term])
    pred.save(args.out)
    info = pred.fit_info
    line = (f"{args.out}: {pred.mode} mode, {info.get('model_rows', 0)} model rows, {info.get('kernel_rows', 0)} "
            "kernel rows")
    tr = info.get("transfer")
    if tr:
        weights = ", ".join(f"{d or '?'} {w:.3g}" for d, w in zip(tr["prior_devices"], tr["prior_weights"]))
        line += (f"; blended: own {tr['own_weight']:.3g}, {weights} (cross-validated RMSPE of the table alone "
                 f"{100 * tr['cv_rmspe_own']:.1f}%, of the blend in sample {100 * tr['rmspe_blend']:.1f}%)")
    out = info.get("outside_models")
    if out:
        if out["chosen"] == "blend":
            blended = out["cv_rmspe_by_gate_penalty"].get(format(out.get("gate_penalty", 0), "g"))
            line += (f"; {out['models']} models outside the spaces: blended in by a gate (cross-validated RMSPE "
                     f"{100 * out['cv_rmspe_own']:.1f}% -> {100 * blended:.1f}%)")
        else:  # too few such models, or the blend did not help: said as the fit found it
            line += f"; {out['models']} models outside the spaces: {out['chosen']}"
    if pred.io_term:
        line += f"; {pred.io_ms_per_mb:.4g} ms per MB a kernel's stand-alone graph takes in and gives out"
    chosen = info.get("weight_term")
    if pred.weight_term:
        line += f"; {pred.theta0[-1]:.4g} ms per MB of weights"
    if chosen:  # "auto" tried both: say what decided it
        line += (f"; a cost per MB of weights {'on' if chosen['chosen'] else 'off'} (leave-one-out RMSPE "
                 f"{100 * chosen['loo_rmspe_without']:.1f}% without, {100 * chosen['loo_rmspe_with']:.1f}% with)")
    print(line + pred.state_note())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from latency_models._evaluate import evaluate, state_gap_note
    from latency_models._table import LatencyTable

    pred = _load_predictor(args.predictor, prior=args.prior)
    held = LatencyTable.load(args.measured)
    res = evaluate(pred, held)
    state = (f"  (measured rows put on the predictor's machine state, exponent {pred.reference_exponent:g})"
             if pred.reference_exponent and any(r.reference_ms for r in held.model_rows) else "")
    print(f"n={res['n']}  within ±5%: {100 * res['within_5']:.1f}%  within ±10%: {100 * res['within_10']:.1f}%  "
          f"RMSPE: {100 * res['rmspe']:.2f}%  Spearman: {res['spearman']:.4f}{state}")
    note = state_gap_note(res, pred.reference_exponent)
    if note:
        print(note)
    if pred.fit_info.get("noise_floor"):
        from latency_models._floor import floor_note

        print(f"the predictor's table: {floor_note(pred.fit_info['noise_floor'])}")
    return 0


def _cmd_noise_floor(args: argparse.Namespace) -> int:
    import json
    import statistics

    from latency_models._floor import noise_floor
    from latency_models._progress import Progress

    if args.rounds < 2:
        raise ValueError(f"--rounds {args.rounds}; allowed: 2 or more (each round is compared with the others)")
    out = pathlib.Path(args.out) if args.out else None
    if out is not None:  # before timing anything: a bad --out must not cost the measurement
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out {args.out}: cannot write there ({exc.strerror}); allowed: a writable path") from None
    with Progress(args.rounds, f"re-timing {len(args.models)} model(s) in fresh workers", unit="rounds") as bar:
        res = noise_floor(args.models, rounds=args.rounds, threads=args.threads,
                          on_round=lambda done, total: bar.set(done))
    n = len(res["models"])
    print(f"noise floor of this device: {n} model{'s' * (n != 1)} timed in {res['rounds']} fresh workers "
          f"({res['as_measured']['pairs']} pairs of timings), {res['seconds']:.1f} s, protocol {res['protocol']}, "
          f"{res['threads']} thread{'s' * (res['threads'] != 1)}")
    for label, key in (("as measured", "as_measured"), ("on the reference's scale", "on_reference_scale")):
        s = res[key]
        print(f"  {label + ':':26s}within ±2% {100 * s['within_2']:.1f}%, ±5% {100 * s['within_5']:.1f}%, ±10% "
              f"{100 * s['within_10']:.1f}%; median |difference| {100 * s['median_abs']:.2f}%, largest "
              f"{100 * s['max_abs']:.2f}%")
    print("  per model: median latency, spread of its rounds (slowest / fastest - 1)")
    for m in res["models"]:
        lat = m["latency_ms"]
        print(f"    {m['model']}  {statistics.median(lat):.3f} ms  {100 * (max(lat) / min(lat) - 1):.1f}%")
    if out is not None:
        out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"written to {out}")
    return 0


#: The ``--offgrid-share`` flag of ``profile-workload`` (and of ``python -m search profile``).
_OFFGRID_HELP = ("share of every adaptive round given to float32 kernels of the pool's families at channel counts that "
                 "are not a multiple of 8, the widths of models from elsewhere (default 0.15; 0: the pool only)")


#: The ``--kernel-share`` flag of ``profile-workload`` (and of ``python -m search profile``).
_KERNEL_SHARE_HELP = ("share of the budget spent timing kernels alone before the workload's whole models (default 0.3; "
                      "above 0, below 1)")


def _cmd_profile_workload(args: argparse.Namespace) -> int:
    from latency_models._progress import Progress
    from latency_models._profile import check_kernel_share, check_offgrid_share
    from latency_models._report import fit_beside
    from latency_models._workload import profile_workload

    check_offgrid_share(args.offgrid_share, "--offgrid-share")
    check_kernel_share(args.kernel_share, "--kernel-share")
    with Progress(60.0 * args.budget_min, f"profiling {args.device_name}", unit="s") as bar:
        table = profile_workload(args.workload, device_name=args.device_name, out=args.out, threads=args.threads,
                                 budget_min=args.budget_min, description=args.description, seed=args.seed,
                                 on_progress=bar.report, offgrid_share=args.offgrid_share,
                                 kernel_share=args.kernel_share)
    print("\n".join(fit_beside(table, args.out)[1]))
    return 0


def _cmd_add_models(args: argparse.Namespace) -> int:
    from latency_models._outside import MIN_OUTSIDE_MODELS
    from latency_models._predictor import LatencyPredictor
    from latency_models._profile import profile_models
    from latency_models._progress import Progress
    from latency_models._report import predictor_path
    from latency_models._table import LatencyTable

    names = args.name or None
    if names is not None and len(names) != len(args.models):
        raise ValueError(f"--name given {len(names)} times for {len(args.models)} models; allowed: none, or one per model")
    for m in args.models:
        if not pathlib.Path(m).is_file():
            raise ValueError(f"model {m!r} does not exist; allowed: ONNX files")
    if not pathlib.Path(args.table).is_file():
        raise ValueError(f"table {args.table!r} does not exist: profile the device first "
                         "(python -m latency_models profile, or profile-workload)")
    before = LatencyTable.load(args.table)
    with Progress(None, f"timing {len(args.models)} model(s) into {args.table}", unit="graphs") as bar:
        table = profile_models(args.models, out=args.table, names=names, on_progress=bar.report)
    outside = len({r.source for r in table.model_rows if not r.candidate})
    pred_path = predictor_path(args.table)
    pred = LatencyPredictor.fit(table)
    pred.save(pred_path)
    added = len(table.model_rows) - len(before.model_rows)
    line = (f"{args.table}: +{len(table.kernel_rows) - len(before.kernel_rows)} kernel rows, +{added} model rows"
            f"{'' if added else ' (all already in the table)'}; {outside} models outside the spaces in the table; "
            f"predictor written to {pred_path}")
    if outside < MIN_OUTSIDE_MODELS:
        line += (f" (with {MIN_OUTSIDE_MODELS} or more models outside the spaces, a fit of those alone is blended in "
                 "for models like them)")
    print(line + pred.state_note())
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m latency_models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    prior_help = ("a predictor (or table) of another device, repeatable: a device with few model rows is fitted as a "
                  "blend of these and its own rows (few-sample transfer)")
    f = sub.add_parser("fit", help="fit a predictor on a latency table and save it as JSON")
    f.add_argument("table", help="latency table JSON")
    f.add_argument("--out", required=True, help="predictor JSON to write")
    f.add_argument("--prior", action="append", default=[], metavar="PREDICTOR", help=prior_help)
    f.add_argument("--no-outside-models", action="store_true",
                   help="never blend in the fit of the table's whole models outside the spaces (profile_models)")
    f.add_argument("--weight-term", choices=("auto", "on", "off"), nargs="?", const="on", default="auto",
                   help="price each kernel's megabytes of stored weights in whole models: 'auto' (default) when it "
                        "lowers the fit's leave-one-out error, 'on' (also the bare flag) or 'off' "
                        "(see experiments/results/weight_term_auto.md)")
    f.set_defaults(func=_cmd_fit)
    e = sub.add_parser("evaluate", help="score a predictor (or a table, fitted on the fly) on measured models")
    e.add_argument("--predictor", required=True)
    e.add_argument("--measured", required=True)
    e.add_argument("--prior", action="append", default=[], metavar="PREDICTOR", help=prior_help)
    e.set_defaults(func=_cmd_evaluate)
    nf = sub.add_parser("noise-floor", help="time ONNX models in several fresh workers under the protocol and say how "
                        "well this device repeats a timing (within ±2 / ±5 / ±10 %%); needs no torch")
    nf.add_argument("models", nargs="+", help="ONNX files (models of the size you deploy)")
    nf.add_argument("--rounds", type=int, default=4,
                    help="fresh workers, each timing every model (default 4, at least 2)")
    nf.add_argument("--threads", type=int, default=1)
    nf.add_argument("--out", default=None, help="also write the timings and shares as JSON")
    nf.set_defaults(func=_cmd_noise_floor)
    w = sub.add_parser("profile-workload", help="time a workload folder (python -m search profile --write-workload "
                       "DIR) on this machine; needs only numpy, onnx and onnxruntime")
    w.add_argument("workload", help="the workload folder (with manifest.json)")
    w.add_argument("--out", required=True, help="table JSON; continued if it exists")
    w.add_argument("--device-name", default="this-device")
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--budget-min", type=float, default=10.0)
    w.add_argument("--description", default="")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--offgrid-share", type=float, default=0.15, help=_OFFGRID_HELP)
    w.add_argument("--kernel-share", type=float, default=0.3, help=_KERNEL_SHARE_HELP)
    w.set_defaults(func=_cmd_profile_workload)
    a = sub.add_parser("add-models", help="time ONNX models of your own kind into a table (other models like the "
                       "ones you will predict, never those), then fit its predictor again; needs no torch")
    a.add_argument("table", help="the table JSON to add to (from profile or profile-workload); saved in place")
    a.add_argument("models", nargs="+", help="ONNX files")
    a.add_argument("--name", action="append", default=[], help="the row's name, one per model in order "
                   "(default: the file name); a model already in the table under its name is skipped")
    a.set_defaults(func=_cmd_add_models)
    for name, text in (("profile", "time kernels and whole models of the given spaces on this machine"),
                       ("measure", "time N random whole models per space (held-out evaluation data)")):
        sub.add_parser(name, help=f"{text} (run by 'python -m search {name}'; see its --help)", add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SPACE_COMMANDS:
        # The spaces live above this package: the command that can import them does the work.
        return subprocess.call([sys.executable, "-m", "search", *argv])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
