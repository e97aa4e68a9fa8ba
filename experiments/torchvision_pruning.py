"""Structured pruning of every torchvision classification CNN at ratio 0.5, timed at 224x224 in ONNX Runtime.

Two phases, so that the timing holds the machine only while it times:

1. ``--export DIR`` (CPU-heavy): per model of ``torchvision.models.list_models(module=torchvision.models)``
   (``weights=None``, 1000 classes), ``spaces.compress.prune_structured(model, 0.5, importance="l1")``
   traced at 224x224, both models exported to ONNX (``spaces.compress.export_onnx``) in ``DIR``, with
   parameter counts and the pruned model's agreement with its ONNX export.
2. ``--time DIR`` (run it alone on the machine): each pair in ONNX Runtime (CPU, 1 intra-op thread,
   batch 1), ``--rounds`` interleaved rounds of dense then pruned, each round the median of ``--runs``
   runs after one warm-up; the speed-up is the ratio of the medians over rounds, side by side.

Writes ``experiments/results/torchvision_pruning.json`` and ``.md``. Transformers (ViT, Swin, MaxViT) are
listed with their measured removal; their attention blocks lock the embedding width.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TRANSFORMER_PREFIXES = ("vit_", "swin", "maxvit")
#: Dense ONNX file over the 2 GB protobuf limit of the exporter.
SKIP = {"regnet_y_128gf": "dense float32 model (2.6 GB) exceeds the 2 GB ONNX protobuf limit of the exporter",
        "vit_h_14": "dense float32 model (2.5 GB) exceeds the 2 GB ONNX protobuf limit of the exporter"}


def export(out: pathlib.Path, names: list[str]) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    import torchvision

    from spaces.compress import export_onnx, prune_structured

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "export.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    for name in names:
        if name in meta or name in SKIP:
            continue
        t0 = time.perf_counter()
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, weights=None).eval()
        size = 299 if name == "inception_v3" else 224
        x = torch.randn(1, 3, size, size)
        pruned = prune_structured(model, 0.5, importance="l1", example_input=x)
        n0 = sum(p.numel() for p in model.parameters())
        n1 = sum(p.numel() for p in pruned.parameters())
        export_onnx(model, (3, size, size), str(out / f"{name}.dense.onnx"))
        export_onnx(pruned, (3, size, size), str(out / f"{name}.pruned.onnx"))
        sess = ort.InferenceSession(str(out / f"{name}.pruned.onnx"), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = pruned(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        meta[name] = {"input_size": size, "params": n0, "pruned_params": n1, "removed": 1 - n1 / n0,
                      "output_shape": list(got.shape),
                      "onnx_max_abs_err": float(np.abs(got - ref).max()), "seconds": time.perf_counter() - t0}
        write_json(meta_path, meta)
        print(f"{name}: {100 * (1 - n1 / n0):.1f}% removed ({time.perf_counter() - t0:.0f} s)", flush=True)
        del model, pruned


def _median_ms(sess, feed, runs: int) -> float:
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def time_all(out: pathlib.Path, rounds: int, runs: int) -> None:
    import numpy as np
    import onnxruntime as ort

    meta = json.loads((out / "export.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    rows = {}
    for name, m in meta.items():
        load = loadavg()
        size = m["input_size"]
        feed = {"input": np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)}
        dense = ort.InferenceSession(str(out / f"{name}.dense.onnx"), opts, providers=["CPUExecutionProvider"])
        pruned = ort.InferenceSession(str(out / f"{name}.pruned.onnx"), opts, providers=["CPUExecutionProvider"])
        d, p = [], []
        for _ in range(rounds):  # interleaved: the machine's fast and slow phases hit both
            d.append(_median_ms(dense, feed, runs))
            p.append(_median_ms(pruned, feed, runs))
        rows[name] = {**m, "dense_ms": statistics.median(d), "pruned_ms": statistics.median(p),
                      "speedup": statistics.median(d) / statistics.median(p),
                      "speedup_per_round": [a / b for a, b in zip(d, p)], "loadavg": load}
        print(f"{name}: {rows[name]['dense_ms']:.1f} -> {rows[name]['pruned_ms']:.1f} ms "
              f"({rows[name]['speedup']:.2f}x)", flush=True)
        del dense, pruned
    result = {"rounds": rounds, "runs": runs, "threads": 1, "machine": platform.processor() or platform.machine(),
              "onnxruntime": ort.__version__, "skipped": SKIP, "models": rows,
              "command": f"python experiments/torchvision_pruning.py --export {out} && "
                         f"(alone on the machine) python experiments/torchvision_pruning.py --time {out} "
                         f"--rounds {rounds} --runs {runs}"}
    write_json(RESULTS / "torchvision_pruning.json", result)
    summarise(result)


def summarise(result: dict) -> None:
    rows = result["models"]
    cnn = {k: v for k, v in rows.items() if not k.startswith(TRANSFORMER_PREFIXES)}
    lines = [
        "# Structured pruning of every torchvision classification model, ratio 0.5, timed at 224x224",
        "",
        f"`prune_structured(model, 0.5, importance=\"l1\")` on `weights=None` models; ONNX Runtime "
        f"{result['onnxruntime']}, CPU, 1 thread, batch 1; {result['rounds']} interleaved rounds of dense then "
        f"pruned, each the median of {result['runs']} runs after a warm-up; the speed-up is the ratio of the "
        "median round times. Inception-v3 at 299x299.",
        "",
        f"CNNs: {len(cnn)} timed, parameters removed {min(v['removed'] for v in cnn.values()):.1%} to "
        f"{max(v['removed'] for v in cnn.values()):.1%}, speed-up {min(v['speedup'] for v in cnn.values()):.2f}x "
        f"to {max(v['speedup'] for v in cnn.values()):.2f}x (median "
        f"{statistics.median(v['speedup'] for v in cnn.values()):.2f}x); slower after pruning: "
        f"{sum(v['speedup'] < 1 for v in cnn.values())}.",
        "",
        "| model | params | removed | dense ms | pruned ms | speed-up | ONNX max abs. error | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in rows.items():
        lines.append(f"| {name} | {v['params']:,} | {v['removed']:.1%} | {v['dense_ms']:.1f} | {v['pruned_ms']:.1f} | "
                     f"**{v['speedup']:.2f}x** | {v['onnx_max_abs_err']:.1e} | {v['loadavg'][0]} |")
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | | | | | not timed: {why} | | |")
    lines += ["", f"Command: `{result['command']}`"]
    (RESULTS / "torchvision_pruning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=pathlib.Path, help="export phase: folder for the ONNX files")
    p.add_argument("--time", type=pathlib.Path, help="timing phase: the folder of --export")
    p.add_argument("--models", nargs="*", help="default: every model of list_models(module=torchvision.models)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    import torchvision

    names = args.models or torchvision.models.list_models(module=torchvision.models)
    if args.export:
        export(args.export, names)
    if args.time:
        time_all(args.time, args.rounds, args.runs)


if __name__ == "__main__":
    main()
