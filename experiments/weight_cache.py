"""Does a convolution slow down once its model's weights no longer fit in the cache?

The predictor's kernels are timed alone: a one-kernel graph run again and again keeps its weights in the
cache. In a whole model, every layer's weights pass through the cache once per inference; once the model's
weights exceed what the cache holds, each layer reads them from memory. The torchvision exports this project
predicts worst are the ones with many megabytes of weights (8.9 to 44.7 MB at 128 px, under-predicted by 22 to
44 %, `experiments/results/predictor_local_128_uniform.md`), while the spaces' calibration models that the
predictor learns from hold 0.7 MB of weights at the median (3.2 MB at the 90th percentile).

This experiment isolates the effect: chains of K identical-shape float32 convolutions (distinct random weights,
ReLU after each, built with ``onnx.helper``), for K = 1, 2, 4, ... so that the chain's weights go from a fraction
of a megabyte to far past the last-level cache, timed under the project's protocol
(``latency_models.measure_interleaved``: an ONNX-Runtime-only worker, interleaved blocks, 20 % quantile, 1
thread), all chains of one round in one worker, ``--rounds`` workers; each chain keeps its median over the
rounds. Reported per shape: time per convolution ``t(K) / K`` and the marginal time of the added convolutions
``(t(K) - t(K/2)) / (K/2)`` against the chain's weight megabytes; the slowdown of the marginal time over the
smallest chains' is what a layer pays for cold weights.

    python experiments/weight_cache.py --name weight_cache

``--apply NAME ...`` times nothing: it adds such a cost to the predictor fitted on each committed
``predictor_local`` table and scores that table's held-out models and torchvision exports with and without it
(on the predictor's scale). The cost, for a model whose weights exceed ``--cache-mb`` (a linear ramp from half
of it), is ``--ms-per-mb`` times the weight megabytes of every convolution and linear layer whose predicted
time alone is under ``--compute-bound`` times that memory time (longer ones hide the reads behind compute, as the
16x16 chains do):

    python experiments/weight_cache.py --apply predictor_local_128_uniform predictor_local_128_layout \
        predictor_local_128_layout_retime predictor_local_96_se predictor_local_96_se_retime \
        --ms-per-mb 0.05 --cache-mb 8 --name weight_cache_apply
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
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from experiments._common import loadavg, write_json  # noqa: E402
from latency_models import measure_interleaved, reference_model  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

#: (name, channels, kernel size, spatial size, groups): weight-bound and compute-bound convolutions
SHAPES = (
    ("1x1 256ch at 4x4", 256, 1, 4, 1),
    ("1x1 256ch at 16x16", 256, 1, 16, 1),
    ("3x3 128ch at 8x8", 128, 3, 8, 1),
    ("1x1 512ch at 2x2", 512, 1, 2, 1),
)


def chain(channels: int, k: int, hw: int, groups: int, count: int, seed: int) -> object:
    """``count`` convolutions ``channels -> channels`` (k x k, same padding), each with ReLU, in a chain."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(count):
        w = (rng.standard_normal((channels, channels // groups, k, k)) * (2.0 / (channels * k * k)) ** 0.5)
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                      pads=[k // 2] * 4, group=groups))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, hw, hw])],
                              initializer=inits)
    ref = reference_model()  # the opset and IR version of the project's own graphs
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ref.opset_import[0].version)],
                             ir_version=ref.ir_version)


def _cold_ms(pred, kernels: list, ms_per_mb: float, cache_mb: float, compute_bound: float) -> float:
    """The cold-weights cost of one model (see the module's docstring)."""
    w = np.array([_weight_mb(k) for k in kernels])
    total = float(w.sum())
    ramp = min(max((total - cache_mb / 2) / (cache_mb / 2), 0.0), 1.0)
    if ramp == 0.0:
        return 0.0
    memory = w * ms_per_mb
    alone = pred.kernel_model.predict(list(kernels))
    return ramp * float(np.sum(np.where((w > 0) & (alone < compute_bound * memory), memory, 0.0)))


def _weight_mb(k) -> float:
    """Megabytes of a convolution's or linear layer's weights (0 for other kernels)."""
    if k.op == "conv":
        return k.out_channels * k.input_shape[0] // k.groups * k.kernel_size**2 * k.bits / 8 / 1e6
    if k.op == "linear":
        return k.out_channels * k.input_shape[0] * k.bits / 8 / 1e6
    return 0.0


def apply(names: list[str], ms_per_mb: float, cache_mb: float, compute_bound: float, out_name: str) -> None:
    """Score committed predictor_local tables with and without the cold-weights cost."""
    import json

    from experiments import predictor_local as pl

    from latency_models import LatencyPredictor, accuracy_metrics

    results, lines = [], []
    for name in names:
        meta = json.loads((RESULTS / f"{name}.json").read_text())
        table = pl._with_layout(pl._read(RESULTS / meta.get("table_from", name), "table.json"), {})
        pred = LatencyPredictor.fit(table)
        folder = RESULTS / name
        groups = {"models of the spaces": pl._read(folder, "held.json"), "torchvision exports": pl._read(folder, "torchvision.json")}
        for group, held in groups.items():
            rows = held.model_rows
            predicted = pred.predict_many([r.kernels for r in rows])
            measured = pred.on_scale(np.array([r.latency_ms for r in rows]), np.array([r.reference_ms for r in rows]))
            cold = np.array([_cold_ms(pred, list(r.kernels), ms_per_mb, cache_mb, compute_bound) for r in rows])
            before, after = accuracy_metrics(predicted, measured), accuracy_metrics(predicted + cold, measured)
            per_model = [{"model": r.source.rsplit("/", 1)[-1], "error_before": float(p / m - 1),
                          "error_after": float((p + c) / m - 1), "cold_ms": float(c),
                          "beyond_range": pred.beyond_range(list(r.kernels))}
                         for r, p, m, c in zip(rows, predicted, measured, cold)]
            results.append({"table": name, "group": group, "before": before, "after": after,
                            "models_with_cost": int((cold > 0).sum()), "per_model": per_model if "export" in group else None})
            lines.append(f"| {name} | {group} ({len(rows)}) | {int((cold > 0).sum())} | {before['within_10']:.1%} / "
                         f"{before['rmspe']:.1%} | {after['within_10']:.1%} / {after['rmspe']:.1%} |")
            if "export" in group:
                lines.append("| | " + ", ".join(f"{d['model']}{' (flagged)' if d['beyond_range'] else ''}: "
                                                 f"{d['error_before']:+.0%} → {d['error_after']:+.0%}"
                                                 for d in per_model) + " | | | |")
                flagged = [abs(d["error_before"]) for d in per_model if d["beyond_range"]]
                other = [abs(d["error_before"]) for d in per_model if not d["beyond_range"]]
                lines.append(f"| | flagged by `LatencyPredictor.beyond_range` (more weights than the fifth heaviest "
                             f"fitted model, `heaviest_weight_mb` {', '.join(f'{w:.1f}' for w in pred.heaviest_weight_mb)}): "
                             f"{len(flagged)}, mean \\|error\\| before {np.mean(flagged) if flagged else float('nan'):.0%}; "
                             f"not flagged: {len(other)}, {np.mean(other) if other else float('nan'):.0%} | | | |")
    command = "python experiments/weight_cache.py " + " ".join(sys.argv[1:])
    write_json(RESULTS / f"{out_name}.json", {"command": command, "ms_per_mb": ms_per_mb, "cache_mb": cache_mb,
                                              "compute_bound": compute_bound, "results": results})
    md = [f"# A cold-weights cost added to the fitted predictor ({out_name})", "",
          f"Command: `{command}`  ",
          f"Cost: {ms_per_mb} ms per MB of weights of every layer whose predicted time alone is under {compute_bound}x that "
          f"memory time, for models with more than {cache_mb / 2:g} MB of weights (all of it beyond {cache_mb:g} MB, a "
          "linear ramp between). Scored on the predictor's scale (the state fit of each table).", "",
          "| table | held out | models with a cost | before: within ±10 % / RMSPE | after |", "| --- | --- | --- | --- | --- |",
          *lines, ""]
    (RESULTS / f"{out_name}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-mb", type=float, default=96.0, help="longest chain: about this many MB of weights")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="weight_cache")
    ap.add_argument("--apply", nargs="+", metavar="TABLE", default=None,
                    help="time nothing: score these committed predictor_local results with a cold-weights cost")
    ap.add_argument("--ms-per-mb", type=float, default=0.05)
    ap.add_argument("--cache-mb", type=float, default=8.0)
    ap.add_argument("--compute-bound", type=float, default=10.0)
    args = ap.parse_args()
    if args.apply:
        apply(args.apply, args.ms_per_mb, args.cache_mb, args.compute_bound, args.name)
        return
    t0, loads = time.time(), [loadavg()]
    plan = []  # (shape index, K, weight MB)
    for si, (_, c, k, hw, g) in enumerate(SHAPES):
        per = c * (c // g) * k * k * 4 / 1e6
        count = 1
        while count * per <= args.max_mb:
            plan.append((si, count, count * per))
            count *= 2
    times = np.full((args.rounds, len(plan)), np.nan)
    refs = np.full((args.rounds, len(plan)), np.nan)
    with tempfile.TemporaryDirectory(prefix="weight-cache-") as tmp:
        paths = []
        for j, (si, count, _) in enumerate(plan):
            _, c, k, hw, g = SHAPES[si]
            path = pathlib.Path(tmp) / f"chain_{si}_{count}.onnx"
            path.write_bytes(chain(c, k, hw, g, count, seed=j).SerializeToString())
            paths.append(str(path))
        for r in range(args.rounds):
            order = np.random.default_rng(r).permutation(len(plan))
            timings = measure_interleaved([paths[j] for j in order], threads=1)
            for j, t in zip(order, timings):
                times[r, j], refs[r, j] = t.latency_ms, t.reference_ms
            loads.append(loadavg())
    med = np.median(times, axis=0)
    rows, lines = [], []
    for si, (name, c, k, hw, g) in enumerate(SHAPES):
        idx = [j for j, p in enumerate(plan) if p[0] == si]
        base = None
        for n, j in enumerate(idx):
            count, mb = plan[j][1], plan[j][2]
            marginal = None if n == 0 else (med[j] - med[idx[n - 1]]) / (count - plan[idx[n - 1]][1])
            if marginal is not None and base is None:
                base = marginal
            rows.append({"shape": name, "convolutions": count, "weight_mb": mb, "latency_ms": float(med[j]),
                         "per_conv_ms": float(med[j] / count), "marginal_per_conv_ms": marginal,
                         "marginal_vs_first": None if marginal is None else marginal / base,
                         "round_ms": times[:, j].tolist(), "reference_ms": refs[:, j].tolist()})
            lines.append(f"| {name} | {count} | {mb:.2f} | {med[j]:.3f} | {med[j] / count * 1e3:.1f} | "
                         + ("" if marginal is None else f"{marginal * 1e3:.1f} | {marginal / base:.2f}x") + " |")
    minutes = (time.time() - t0) / 60
    command = "python experiments/weight_cache.py " + " ".join(sys.argv[1:])
    out = {"command": command.strip(), "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
           "minutes": minutes, "load_average": loads, "rounds": args.rounds, "rows": rows}
    write_json(RESULTS / f"{args.name}.json", out)
    md = [f"# A convolution's time against its model's weight megabytes ({args.name})", "",
          f"Command: `{out['command']}`  ",
          f"Finished {out['finished_utc']} after {minutes:.1f} min; load average (1/5/15 min) per round: "
          f"{loads} on 2 shared cores. Each chain's latency is its median over {args.rounds} rounds (one protocol "
          "worker per round, all chains interleaved in it, `karumi-interleaved/2`, 1 thread).", "",
          "| shape | convolutions | weights MB | chain ms | per convolution µs | marginal per added convolution µs | marginal / first marginal |",
          "| --- | --- | --- | --- | --- | --- | --- |", *lines, ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
