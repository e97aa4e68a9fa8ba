"""What a max pool costs next to a quantised layer: ONNX Runtime runs it on uint8, and that is slow on x86.

The project's QDQ export quantises the activations a quantised (1-8 bit) layer reads and writes. When a
``MaxPool`` sits next to one (a ``DequantizeLinear`` before it, or a ``QuantizeLinear`` as its only reader),
ONNX Runtime's QDQ optimiser moves the quantisation across the pool and runs the pool itself on uint8 (max
commutes with a monotone quantisation). Its uint8 ``MaxPool`` is a plain loop, where the float one is
vectorised: a ShuffleNet candidate at 128 px spent a third of its time in the stem's pool, and the predictor,
which priced every pool as float, under-predicted such models by up to half.

This experiment times one-pool graphs (``latency_models.kernel_graph``, as the profiler builds them:
float32, QDQ at 8 bits, casts at 16 bits) at the shapes where the project's models pool (ShuffleNet's stride-2
stem at 128 and 224 px, the built-in teacher's pools at 32 px, ResNet-18's stem pool at 128 px), under the
project's protocol (``latency_models.measure_interleaved``: an ONNX-Runtime-only worker, interleaved blocks,
20 % quantile, 1 thread), all graphs of one round in one worker, ``--rounds`` workers. Reported per shape: the
median over rounds of each width, and the median of the per-round ratios uint8 / float32 (taken side by side).

    python experiments/int8_maxpool.py --rounds 7 --name int8_maxpool

``--apply NAME`` times nothing: on the tables a ``predictor_local.py`` run committed under ``NAME`` (profiled
since the spaces list such pools at 8 bits), it fits the predictor twice, with the pools as listed and with
every pool read back at 32 bits (the 8-bit pool kernel rows dropped: what a profile listed before), the same
machine-state exponent for both, and scores each on the held-out models (on the predictor's scale):

    python experiments/int8_maxpool.py --apply predictor_local_128_maxpool --name int8_maxpool_apply
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from experiments._common import loadavg, write_json  # noqa: E402
from latency_models import (Kernel, LatencyPredictor, LatencyTable, accuracy_metrics,  # noqa: E402
                            kernel_graph, measure_interleaved)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

#: (where, channels, spatial size, kernel size, stride, padding)
SHAPES = (
    ("shufflenet stem pool, 128 px, 8 channels", 8, 64, 3, 2, 1),
    ("shufflenet stem pool, 128 px, 24 channels", 24, 64, 3, 2, 1),
    ("shufflenet stem pool, 224 px, 24 channels", 24, 112, 3, 2, 1),
    ("built-in teacher pool1, 32 px", 32, 32, 2, 2, 0),
    ("built-in teacher pool2, 32 px", 64, 16, 2, 2, 0),
    ("resnet18 stem pool, 128 px", 64, 64, 3, 2, 1),
)
BITS = (32, 8, 16)


def _float_pools(kernels) -> tuple:
    """``kernels`` with every max pool at 32 bits, as the spaces listed them before."""
    return tuple(dataclasses.replace(k, bits=32) if k.op == "maxpool" else k for k in kernels)


def _as_float_pools(table: LatencyTable) -> LatencyTable:
    """``table`` with every max pool listed at 32 bits and its 8-bit pool kernel rows dropped."""
    krows = [r for r in table.kernel_rows if not (r.kernel.op == "maxpool" and r.kernel.bits != 32)]
    return LatencyTable(device=table.device, protocol=table.protocol, kernel_rows=krows,
                        model_rows=[dataclasses.replace(r, kernels=_float_pools(r.kernels)) for r in table.model_rows])


def apply(name: str, out_name: str) -> None:
    """Fit with pools as listed and as read before, score both on the held-out models of run ``name``."""
    from experiments.predictor_local import _read

    folder = RESULTS / name
    table = _read(folder, "table.json")
    held = {"spaces": _read(folder, "held.json")}
    if (folder / "held_float.json").exists() or (folder / "held_float.json.gz").exists():
        held["spaces, float32"] = _read(folder, "held_float.json")
    if (folder / "torchvision.json").exists() or (folder / "torchvision.json.gz").exists():
        held["torchvision"] = _read(folder, "torchvision.json")
    now = LatencyPredictor.fit(table)
    before = LatencyPredictor.fit(_as_float_pools(table), reference_exponent=now.reference_exponent)
    pools8 = sum(1 for r in table.kernel_rows if r.kernel.op == "maxpool" and r.kernel.bits == 8)
    rows8 = sum(1 for r in table.model_rows if any(k.op == "maxpool" and k.bits == 8 for k in r.kernels))
    groups: dict[str, list] = {}
    for label, t in held.items():
        groups[label] = list(t.model_rows)
        if label == "spaces":
            for src in sorted({r.source for r in t.model_rows}):
                groups[src] = [r for r in t.model_rows if r.source == src]
            groups["shufflenet, pool at 8 bits"] = [r for r in t.model_rows
                                                    if any(k.op == "maxpool" and k.bits == 8 for k in r.kernels)]
    scores: dict[str, dict] = {}
    per_model = []
    for label, rows in groups.items():
        if not rows:
            continue
        measured = now.on_scale(np.array([r.latency_ms for r in rows]), np.array([r.reference_ms for r in rows]))
        p_now = now.predict_many([r.kernels for r in rows])
        p_before = before.predict_many([_float_pools(r.kernels) for r in rows])
        scores[label] = {"now": accuracy_metrics(p_now, measured), "before": accuracy_metrics(p_before, measured)}
        if label == "shufflenet, pool at 8 bits":
            per_model = [{"measured_ms": float(m), "now_ms": float(a), "before_ms": float(b)}
                         for m, a, b in zip(measured, p_now, p_before)]
    command = f"python experiments/int8_maxpool.py --apply {name} --name {out_name}"
    result = {"command": command, "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "table": name, "reference_exponent": now.reference_exponent, "pool_kernel_rows_at_8_bits": pools8,
              "model_rows_with_a_pool_at_8_bits": rows8, "scores": scores, "shufflenet_pool_at_8_bits": per_model}
    write_json(RESULTS / f"{out_name}.json", result)
    lines = ["# Max pools at 8 bits in the predictor: listed as they run, against read at 32 bits", "",
             f"Command: `{command}` ({result['finished_utc']}; times nothing)  ",
             f"Table `{name}`: {len(table.kernel_rows)} kernel rows ({pools8} of them 8-bit max pools), "
             f"{len(table.model_rows)} model rows ({rows8} with an 8-bit pool); both fits at the machine-state "
             f"exponent {now.reference_exponent:g}; scored on the predictor's scale. `before`: every pool read at "
             "32 bits and the 8-bit pool kernel rows dropped, as a profile listed them before.", "",
             "| held-out models | n | within ±10 %: before -> now | within ±5 %: before -> now | RMSPE: before -> now | Spearman: before -> now |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, s2 in scores.items():
        b, a = s2["before"], s2["now"]
        lines.append(f"| {label} | {a['n']} | {100 * b['within_10']:.1f} -> {100 * a['within_10']:.1f} % | "
                     f"{100 * b['within_5']:.1f} -> {100 * a['within_5']:.1f} % | {100 * b['rmspe']:.1f} -> "
                     f"{100 * a['rmspe']:.1f} % | {b['spearman']:.3f} -> {a['spearman']:.3f} |")
    if per_model:
        lines += ["", "ShuffleNet models with the stem's pool at 8 bits, one by one (error = predicted / measured - 1):", "",
                  "| measured ms | before: predicted, error | now: predicted, error |", "| --- | --- | --- |"]
        for m in per_model:
            lines.append(f"| {m['measured_ms']:.3f} | {m['before_ms']:.3f}, {100 * (m['before_ms'] / m['measured_ms'] - 1):+.1f} % | "
                         f"{m['now_ms']:.3f}, {100 * (m['now_ms'] / m['measured_ms'] - 1):+.1f} % |")
    (RESULTS / f"{out_name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="protocol workers, each timing every graph once (7)")
    ap.add_argument("--name", default=None,
                    help="results name under experiments/results/ (int8_maxpool; with --apply int8_maxpool_apply)")
    ap.add_argument("--apply", metavar="NAME", default=None,
                    help="time nothing: fit and score with and without 8-bit pools on a predictor_local run's tables")
    args = ap.parse_args()
    if args.apply:
        if not (RESULTS / args.apply).is_dir():
            ap.error(f"--apply {args.apply}: no folder experiments/results/{args.apply} (allowed: a predictor_local run)")
        apply(args.apply, args.name or "int8_maxpool_apply")
        return
    args.name = args.name or "int8_maxpool"
    if args.rounds < 1:
        ap.error(f"--rounds={args.rounds} must be at least 1")
    kernels = [Kernel("maxpool", (c, s, s), kernel_size=k, stride=st, padding=p, bits=b)
               for _, c, s, k, st, p in SHAPES for b in BITS]
    graphs = [kernel_graph(k) for k in kernels]
    load = [loadavg()]
    t0 = time.time()
    times = np.empty((args.rounds, len(graphs)))
    refs = np.empty((args.rounds, len(graphs)))
    rng = np.random.default_rng(0)
    for r in range(args.rounds):
        order = rng.permutation(len(graphs))
        timings = measure_interleaved([graphs[j] for j in order], threads=1)
        for j, t in zip(order, timings):
            times[r, j], refs[r, j] = t.latency_ms, t.reference_ms
        print(f"round {r + 1}/{args.rounds}: reference {np.median(refs[r]):.4f} ms", flush=True)
    load.append(loadavg())
    rows = []
    for i, (where, c, s, k, st, p) in enumerate(SHAPES):
        cols = {b: i * len(BITS) + j for j, b in enumerate(BITS)}
        rows.append({
            "where": where, "input_shape": [c, s, s], "kernel_size": k, "stride": st, "padding": p,
            "median_ms": {str(b): float(np.median(times[:, j])) for b, j in cols.items()},
            "uint8_over_float32": float(np.median(times[:, cols[8]] / times[:, cols[32]])),
            "float16_over_float32": float(np.median(times[:, cols[16]] / times[:, cols[32]])),
        })
    command = f"python experiments/int8_maxpool.py --rounds {args.rounds} --name {args.name}"
    result = {"command": command, "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "minutes": (time.time() - t0) / 60, "load_average_before_after": load,
              "reference_ms_median": float(np.median(refs)), "rows": rows}
    write_json(RESULTS / f"{args.name}.json", result)
    lines = ["# A max pool at 8 bits (uint8 in ONNX Runtime) against float32 and float16", "",
             f"Command: `{command}`  ",
             f"Finished {result['finished_utc']}, {result['minutes']:.1f} min; load average (1/5/15 min) before / "
             f"after: {load[0]} / {load[1]} on 2 shared cores; protocol reference median "
             f"{result['reference_ms_median']:.4f} ms. Medians over {args.rounds} protocol workers; ratios are "
             "the medians of per-round ratios (side by side).", "",
             "| where | input (C, H, W) | pool | float32 ms | uint8 ms | float16 ms | uint8 / float32 | float16 / float32 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        m = row["median_ms"]
        lines.append(f"| {row['where']} | {tuple(row['input_shape'])} | {row['kernel_size']}x{row['kernel_size']} "
                     f"stride {row['stride']} | {m['32']:.4f} | {m['8']:.4f} | {m['16']:.4f} | "
                     f"{row['uint8_over_float32']:.1f}x | {row['float16_over_float32']:.2f}x |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
