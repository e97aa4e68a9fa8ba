"""int8 export speed and accuracy: the QDQ ONNX model against the float32 export of the same network.

Speed (per built-in space, default options, the default candidate): float32 export vs the same network at
8 bits everywhere (and at 4 and 16 bits, for honesty: no speed gain), ONNX Runtime CPU, 1 thread, median
of 50 runs after 10 warm-up runs, batch 1. Also structured pruning (50 % of channels, the ``prune`` space on
its built-in teacher and on torchvision ResNet-18) and unstructured 80 % sparsity (same dense speed).

Accuracy (per built-in space, scikit-learn digits 8x8): the default candidate is trained by distillation
from a teacher, then quantised to int8 (post-training calibration, then a short QAT); the accuracy of the
fake-quantised PyTorch model is compared with the exported QDQ model run by ONNX Runtime.

    python experiments/int8_speedup.py                 # -> results/int8_speedup.json and .md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm import tqdm

from search import ProxyEvaluator
from spaces import get_space, list_spaces
from spaces.compress import (
    calibrate,
    export_onnx,
    export_onnx_quantized,
    prepare_qat,
    prune_unstructured,
    sparsity_report,
)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from proxy_fidelity import DIGITS, digits, train_teacher  # noqa: E402


CLOCKS = {"thread_cpu": time.thread_time, "wall": time.perf_counter}


def time_ms(protos: dict[str, onnx.ModelProto], shape: tuple[int, ...], *, runs: int = 50, warmup: int = 10,
            clock: str = "thread_cpu") -> dict[str, dict]:
    """Median (and quartiles) in ms per model; the models' runs are interleaved so they see the same load.

    With one intra-op thread ONNX Runtime computes in the calling thread, so ``thread_cpu`` (the calling
    thread's CPU time) is robust to other jobs on the machine; ``wall`` is the elapsed time.
    """
    now = CLOCKS[clock]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sessions = {k: ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
                for k, p in protos.items()}
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    for sess in sessions.values():
        for _ in range(warmup):
            sess.run(None, {"input": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, sess in sessions.items():
            t = now()
            sess.run(None, {"input": x})
            times[k].append((now() - t) * 1000.0)
    out = {}
    for k, ts in times.items():
        q = np.percentile(ts, [25, 75])
        out[k] = {"median_ms": statistics.median(ts), "p25_ms": float(q[0]), "p75_ms": float(q[1]),
                  "size_bytes": len(protos[k].SerializeToString())}
    return out


def with_bits(space, cand, b: int):
    return space.candidate(**dict(cand.genes), prune_ratios=cand.prune_ratios, bits=[b] * len(cand.bits))


def speed(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in tqdm(list_spaces(), desc="speed"):
        space = get_space(name)
        base = space.candidate()
        calib = [torch.randn(8, *space.input_shape, generator=torch.Generator().manual_seed(0))]
        row = {"space": name, "input_shape": list(space.input_shape), "macs": space.stats(base).macs}
        protos = {f"bits{b}": space.onnx(with_bits(space, base, b), calibration=calib) for b in (32, 8, 4, 16)}
        row.update(time_ms(protos, space.input_shape, runs=args.runs, clock=args.clock))
        row["speedup_int8"] = row["bits32"]["median_ms"] / row["bits8"]["median_ms"]
        row["speedup_int4"] = row["bits32"]["median_ms"] / row["bits4"]["median_ms"]
        row["speedup_fp16"] = row["bits32"]["median_ms"] / row["bits16"]["median_ms"]
        rows.append(row)
    return rows


def pruning_speed(args: argparse.Namespace) -> list[dict]:
    rows = []
    for teacher, size in (("builtin", 32), ("torchvision:resnet18", 64)):
        space = get_space("prune", teacher=teacher, input_size=size)
        base = space.candidate()
        half = space.candidate(prune_ratios=[0.5 if layer.prunable else 0.0 for layer in space.layers(base)])
        calib = [torch.randn(8, *space.input_shape, generator=torch.Generator().manual_seed(0))]
        sparse_model = prune_unstructured(space.build(base), 0.8, scope="global")
        report = sparsity_report(sparse_model)
        timed = time_ms({"dense": space.onnx(base), "pruned": space.onnx(half),
                         "pruned8": space.onnx(with_bits(space, half, 8), calibration=calib),
                         "sparse": export_onnx(sparse_model, space.input_shape)},
                        space.input_shape, runs=args.runs, clock=args.clock)
        dense, pruned, pruned8, sparse = (timed[k] for k in ("dense", "pruned", "pruned8", "sparse"))
        rows.append({
            "teacher": teacher, "input_shape": list(space.input_shape),
            "params_dense": space.stats(base).params, "params_pruned50": space.stats(half).params,
            "macs_dense": space.stats(base).macs, "macs_pruned50": space.stats(half).macs,
            "dense_fp32": dense, "pruned50_fp32": pruned, "pruned50_int8": pruned8, "unstructured80_fp32": sparse,
            "unstructured80_sparsity": report["sparsity"], "unstructured80_dense_bytes": report["dense_bytes"],
            "unstructured80_sparse_bytes": report["sparse_bytes"],
            "speedup_pruned50": dense["median_ms"] / pruned["median_ms"],
            "speedup_pruned50_int8": dense["median_ms"] / pruned8["median_ms"],
            "speedup_unstructured80": dense["median_ms"] / sparse["median_ms"],
        })
    return rows


def ort_accuracy(proto: onnx.ModelProto, x: torch.Tensor, y: torch.Tensor) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    preds = [int(np.argmax(sess.run(None, {"input": x[i:i + 1].numpy()})[0])) for i in range(len(x))]
    return float((torch.tensor(preds) == y).float().mean())


def torch_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def accuracy(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    x, y, xv, yv = digits()
    teacher = train_teacher(x, y)
    proxy = ProxyEvaluator((x, y), (xv, yv), teacher, epochs=args.train_epochs, batch_size=32, lr=0.05)
    rows = []
    for name in tqdm(list_spaces(), desc="accuracy"):
        space = get_space(name, **DIGITS)
        cand = space.candidate()
        fp32 = proxy.fine_tune(space.build(cand), {})
        bits = {n: 8 for n in space.module_bits(cand)}
        ptq = calibrate(prepare_qat(fp32, bits), [x[i:i + 128] for i in range(0, 512, 128)])
        qat = proxy.fine_tune(ptq, bits, epochs=args.qat_epochs, lr=0.005)
        row = {"space": name, "float32_torch": torch_accuracy(fp32, xv, yv),
               "float32_onnx": ort_accuracy(export_onnx(fp32, space.input_shape), xv, yv)}
        for label, model in (("ptq", ptq), ("qat", qat)):
            row[f"{label}_fake_quant_torch"] = torch_accuracy(model, xv, yv)
            row[f"{label}_int8_onnx"] = ort_accuracy(export_onnx_quantized(model, bits, space.input_shape), xv, yv)
            row[f"{label}_gap_points"] = 100.0 * (row[f"{label}_int8_onnx"] - row[f"{label}_fake_quant_torch"])
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    lines = ["# int8 export: speed and accuracy", "",
             "## Speed (ONNX Runtime CPU, 1 thread, batch 1, median of 50 interleaved runs after 10 warm-up)", "",
             "| space | input | MACs | fp32 ms | int8 ms | int8 speed-up | int4 speed-up | fp16 speed-up | fp32 / int8 bytes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["speed"]:
        lines.append(f"| {r['space']} | {'x'.join(map(str, r['input_shape']))} | {r['macs']:,} | "
                     f"{r['bits32']['median_ms']:.3f} | {r['bits8']['median_ms']:.3f} | {r['speedup_int8']:.2f}x | "
                     f"{r['speedup_int4']:.2f}x | {r['speedup_fp16']:.2f}x | "
                     f"{r['bits32']['size_bytes']:,} / {r['bits8']['size_bytes']:,} |")
    lines += ["", "## Pruning (the `prune` space, 50 % of the channels of every prunable group)", "",
              "| teacher | input | params dense -> pruned | dense fp32 ms | pruned fp32 ms (speed-up) | pruned int8 ms (speed-up) | 80 % unstructured fp32 ms (speed-up) | sparse CSR bytes / dense bytes |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["pruning"]:
        lines.append(f"| {r['teacher']} | {'x'.join(map(str, r['input_shape']))} | {r['params_dense']:,} -> "
                     f"{r['params_pruned50']:,} | {r['dense_fp32']['median_ms']:.3f} | "
                     f"{r['pruned50_fp32']['median_ms']:.3f} ({r['speedup_pruned50']:.2f}x) | "
                     f"{r['pruned50_int8']['median_ms']:.3f} ({r['speedup_pruned50_int8']:.2f}x) | "
                     f"{r['unstructured80_fp32']['median_ms']:.3f} ({r['speedup_unstructured80']:.2f}x) | "
                     f"{r['unstructured80_sparse_bytes']:,} / {r['unstructured80_dense_bytes']:,} |")
    lines += ["", "## Accuracy on digits (397 validation images): fake-quant PyTorch vs exported int8 ONNX", "",
              "| space | fp32 torch | fp32 onnx | PTQ fake-quant | PTQ int8 onnx | gap (points) | QAT fake-quant | QAT int8 onnx | gap (points) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["accuracy"]:
        lines.append(f"| {r['space']} | {r['float32_torch']:.4f} | {r['float32_onnx']:.4f} | "
                     f"{r['ptq_fake_quant_torch']:.4f} | {r['ptq_int8_onnx']:.4f} | {r['ptq_gap_points']:+.2f} | "
                     f"{r['qat_fake_quant_torch']:.4f} | {r['qat_int8_onnx']:.4f} | {r['qat_gap_points']:+.2f} |")
    lines += ["", f"Speed settings: {json.dumps(result['settings'])}; accuracy settings: "
              f"{json.dumps(result.get('accuracy_settings'))}. Machine: 2 CPU cores shared with other jobs (load "
              "average about 20 during the runs); the `thread_cpu` clock is the CPU time of the calling thread, "
              "which ONNX Runtime computes in with one intra-op thread. Quartiles are in the JSON.",
              "Commands: `python experiments/int8_speedup.py --train-epochs 3 --qat-epochs 1` (all), then "
              "`python experiments/int8_speedup.py --skip-accuracy` (speed again, keeping the accuracy rows)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--train-epochs", type=int, default=6)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="thread_cpu")
    parser.add_argument("--skip-accuracy", action="store_true",
                        help="measure speed only; keep the accuracy rows of an earlier results/int8_speedup.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"settings": vars(args), "onnxruntime": ort.__version__, "torch": torch.__version__}
    result["speed"] = speed(args)
    result["pruning"] = pruning_speed(args)
    previous = RESULTS / "int8_speedup.json"
    if args.skip_accuracy and previous.exists():
        old = json.loads(previous.read_text())
        result["accuracy"] = old.get("accuracy", [])
        result["accuracy_settings"] = old.get("accuracy_settings", old.get("settings"))
    else:
        result["accuracy"] = [] if args.skip_accuracy else accuracy(args)
        result["accuracy_settings"] = vars(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "int8_speedup.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (RESULTS / "int8_speedup.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
