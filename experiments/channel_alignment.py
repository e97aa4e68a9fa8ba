"""Do kernel neighbours of another channel alignment spoil the kernel model? (times nothing)

``KernelModel`` predicts an unmeasured kernel from a per-family physical fit corrected by its nearest measured
neighbours. The runtimes' vector kernels step through 16 channels at a time, so a convolution with 24 or 40
channels is not "between" its 16/32- or 32/48-channel neighbours; since 2026-12-04 a convolution whose input or
output channels are not a multiple of ``KernelModel.channel_alignment`` (16) takes neighbours of its own kind first.

For each committed ``predictor_local.py`` table named, side by side on the same rows:

- the kernel model's leave-one-out error (prediction without the kernel / measured - 1) on the table's kernel rows,
  with any neighbour (``channel_alignment=None``, the model before) and with alignment classes (16), over all
  kernel rows and per family, with the mean error of aligned and unaligned kernels;
- the whole predictor fitted both ways (``LatencyPredictor.fit(table, channel_alignment=...)``, at the
  machine-state exponent the run chose, the same for both) on the run's held-out models (random widths, whole
  float32 ones, torchvision exports), their timings put on the predictor's scale by their references: the
  share within 5 and 10 %.

    python experiments/channel_alignment.py predictor_local_128_settled predictor_local_128_bias_b

Writes ``experiments/results/channel_alignment.json`` and ``.md`` (``--name``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import write_json  # noqa: E402
from latency_models import KernelModel, LatencyPredictor  # noqa: E402
from predictor_local import _exists, _read, _with_layout  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ALIGNMENT = 16


def family(k) -> str:
    """Operator, convolution kind and size, bits: the kernel model's families, without the costly activations."""
    bits = 8 if k.bits in (1, 2) else k.bits
    if k.op != "conv":
        return f"{k.op}/b{bits}"
    cin = k.input_shape[0]
    kind = "dense" if k.groups == 1 else "dw" if k.groups == cin else "grouped"
    return f"conv_{kind}_k{k.kernel_size}/b{bits}"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else float("nan")


def score(name: str) -> dict:
    """Leave-one-out errors of the kernel model on the kernel rows of ``results/NAME/table.json``, both ways."""
    table = _with_layout(_read(RESULTS / name, "table.json"), {})
    kernels = [r.kernel for r in table.kernel_rows]
    ms = [r.latency_ms for r in table.kernel_rows]
    nchwc = table.device.get("nchwc")
    errors = {label: KernelModel(kernels, ms, nchwc=nchwc, channel_alignment=align).loo_errors()
              for label, align in (("any", None), ("aligned", ALIGNMENT))}
    fams = np.array([family(k) for k in kernels])
    unaligned = np.array([k.op == "conv" and bool(k.input_shape[0] % ALIGNMENT
                                                  or (k.out_channels or k.input_shape[0]) % ALIGNMENT) for k in kernels])
    per_family = []
    for f in sorted(set(fams)):
        m = fams == f
        if m.sum() < 10:
            continue
        row = {"family": f, "n": int(m.sum()), "unaligned": int((m & unaligned).sum())}
        for label, e in errors.items():
            row[f"rms_{label}"] = _rms(e[m])
            row[f"mean_aligned_{label}"] = float(np.mean(e[m & ~unaligned])) if (m & ~unaligned).any() else None
            row[f"mean_unaligned_{label}"] = float(np.mean(e[m & unaligned])) if (m & unaligned).any() else None
        per_family.append(row)
    run = json.loads((RESULTS / f"{name}.json").read_text())
    exponent = float(run.get("reference_exponent") or 0.0)
    fits = {label: LatencyPredictor.fit(table, reference_exponent=exponent, channel_alignment=align)
            for label, align in (("any", None), ("aligned", ALIGNMENT))}
    models = {}
    for group, fname in (("random widths", "held.json"), ("float32", "held_float.json"),
                         ("torchvision", "torchvision.json")):
        if not _exists(RESULTS / name, fname):
            continue
        rows = _read(RESULTS / name, fname).model_rows
        entry = {"n": len(rows)}
        for label, pred in fits.items():
            measured = np.array([float(pred.on_scale(r.latency_ms, r.reference_ms)) for r in rows])
            err = pred.predict_many([r.kernels for r in rows]) / measured - 1.0
            entry[f"within_5_{label}"] = float(np.mean(np.abs(err) <= 0.05))
            entry[f"within_10_{label}"] = float(np.mean(np.abs(err) <= 0.10))
            entry[f"rmspe_{label}"] = _rms(err)
        models[group] = entry
    return {"table": name, "reference_exponent": exponent, "models": models,
            "kernel_rows": len(kernels), "unaligned_rows": int(unaligned.sum()),
            "rms_any": _rms(errors["any"]), "rms_aligned": _rms(errors["aligned"]),
            "within_10_any": float(np.mean(np.abs(errors["any"]) < 0.10)),
            "within_10_aligned": float(np.mean(np.abs(errors["aligned"]) < 0.10)), "families": per_family}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", help="names of experiments/results/NAME/ folders with a table.json(.gz)")
    ap.add_argument("--name", default="channel_alignment")
    args = ap.parse_args()
    results = [score(t) for t in args.tables]
    command = "python experiments/channel_alignment.py " + " ".join(args.tables) + \
        ("" if args.name == "channel_alignment" else f" --name {args.name}")
    out = {"command": command, "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
           "alignment": ALIGNMENT, "results": results}
    write_json(RESULTS / f"{args.name}.json", out)
    lines = [f"# Kernel model: neighbours of any channel alignment vs of their own ({args.name})", "",
             f"`{command}` (times nothing; {out['finished_utc']}). Leave-one-out error of `KernelModel` on each "
             "table's kernel rows (prediction without the kernel / measured - 1): `any` = neighbours of any "
             f"alignment (`channel_alignment=None`, the model before), `aligned` = convolutions with channels not "
             f"a multiple of {ALIGNMENT} take neighbours of their own kind first (the default).", "",
             "| table | kernel rows | unaligned | rms any | rms aligned | within 10 % any | within 10 % aligned |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['table']} | {r['kernel_rows']} | {r['unaligned_rows']} | {100 * r['rms_any']:.1f} % | "
                     f"{100 * r['rms_aligned']:.1f} % | {100 * r['within_10_any']:.1f} % | "
                     f"{100 * r['within_10_aligned']:.1f} % |")
    lines += ["", "Whole models (the predictor fitted both ways at the run's state exponent; timings on its scale): "
              "share within 5 % / within 10 %, any -> aligned.", "",
              "| table | exponent | random widths | float32 | torchvision |", "|---|---:|---|---|---|"]
    for r in results:
        cells = []
        for group in ("random widths", "float32", "torchvision"):
            m = r["models"].get(group)
            cells.append("-" if m is None else
                         f"{100 * m['within_5_any']:.1f} / {100 * m['within_10_any']:.1f} -> "
                         f"{100 * m['within_5_aligned']:.1f} / {100 * m['within_10_aligned']:.1f} % (n={m['n']})")
        lines.append(f"| {r['table']} | {r['reference_exponent']:g} | " + " | ".join(cells) + " |")
    for r in results:
        lines += ["", f"## {r['table']}: per family (10 rows or more)", "",
                  "| family | n | unaligned | rms any | rms aligned | mean aligned / unaligned, any | "
                  "mean aligned / unaligned, aligned |", "|---|---:|---:|---:|---:|---:|---:|"]
        for f in r["families"]:
            lines.append(f"| {f['family']} | {f['n']} | {f['unaligned']} | {100 * f['rms_any']:.1f} % | "
                         f"{100 * f['rms_aligned']:.1f} % | {_pct(f['mean_aligned_any'])} / "
                         f"{_pct(f['mean_unaligned_any'])} | {_pct(f['mean_aligned_aligned'])} / "
                         f"{_pct(f['mean_unaligned_aligned'])} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:10 + 2 * len(results)]))


if __name__ == "__main__":
    main()
