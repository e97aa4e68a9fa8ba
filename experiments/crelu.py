"""CReLU (transferred filters) in the student spaces, on ``shapes``: accuracy, latency and size against the
same student without it.

Students: ``mobilenet`` at width 0.5 and ``shufflenet`` at widths 0.5 (default depths, 3x3 kernels), each
as it is (``crelu=0``) and with CReLU on its first three eligible convolutions (``crelu=3``: the stem, then
the first expansion / 1x1 convolutions). Each is trained by the search's distillation
(``search.distill_train``, from the built-in teacher's logits, float32) for ``--epochs`` epochs per seed,
and scored on the 1000 test images.

Two phases, so that timing holds the machine only while it times:

1. ``--train DIR`` (CPU-heavy): training, test accuracy, ``space.stats`` and the float32 ONNX export in DIR;
2. ``--time DIR`` (alone on the machine): ONNX Runtime, 1 thread, batch 1, ``--rounds`` interleaved
   rounds over all models, each the median of ``--runs`` runs; writes ``experiments/results/crelu.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
STUDENTS = {"mobilenet": {"width": 0.5}, "shufflenet": {"widths": [0.5, 0.5, 0.5]}}


def train(out: pathlib.Path, epochs: int, seeds: list[int]) -> None:
    import torch

    import search
    from search import distill_train
    from spaces import get_space

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    data = search.load_data("shapes", seed=0)
    teacher = search.load_teacher("builtin", data, seed=0)
    with torch.no_grad():
        logits = teacher.model(data.train.x)
    rows = {}
    for space_name, genes in STUDENTS.items():
        space = get_space(space_name, num_classes=data.num_classes, input_size=data.input_shape[1],
                          in_channels=data.input_shape[0])
        for crelu in (0, 3):
            cand = space.candidate(**genes, crelu=crelu)
            bits = space.module_bits(cand)
            accs = []
            for seed in seeds:
                t0 = time.perf_counter()
                torch.manual_seed(seed)
                model = distill_train(space.build(cand), bits, (data.train.x, data.train.y), logits, epochs=epochs,
                                      seed=seed)
                accs.append(search.accuracy(model, data.test))
                print(f"{space_name} crelu={crelu} seed {seed}: {accs[-1]:.3f} ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
            key = f"{space_name}-crelu{crelu}"
            space.onnx(cand, model=model, path=str(out / f"{key}.onnx"))
            stats = space.stats(cand)
            rows[key] = {"space": space_name, "crelu": crelu, "candidate": cand.to_dict(), "test_accuracy": accs,
                         "mean_accuracy": statistics.mean(accs), "params": stats.params, "macs": stats.macs,
                         "size_bytes": stats.size_bytes, "onnx_bytes": (out / f"{key}.onnx").stat().st_size}
    write_json(out / "train.json", {"epochs": epochs, "seeds": seeds, "teacher_test_accuracy": teacher.test_accuracy,
                                    "loadavg_end": loadavg(), "rows": rows})


def time_all(out: pathlib.Path, rounds: int, runs: int) -> None:
    import numpy as np
    import onnxruntime as ort

    trained = json.loads((out / "train.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sessions = {k: ort.InferenceSession(str(out / f"{k}.onnx"), opts, providers=["CPUExecutionProvider"])
                for k in trained["rows"]}
    feed = {"input": np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    load_start = loadavg()
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(3):
                s.run(None, feed)
            samples = []
            for _ in range(runs):
                t = time.perf_counter()
                s.run(None, feed)
                samples.append(1000 * (time.perf_counter() - t))
            times[k].append(statistics.median(samples))
    rows = trained["rows"]
    for k in rows:
        rows[k]["latency_ms"] = statistics.median(times[k])
        rows[k]["latency_ms_rounds"] = times[k]
    result = {**trained, "rounds": rounds, "runs": runs, "loadavg_timing": [load_start, loadavg()],
              "onnxruntime": ort.__version__,
              "command": f"python experiments/crelu.py --train {out} --epochs {trained['epochs']} && "
                         f"python experiments/crelu.py --time {out} --rounds {rounds} --runs {runs}"}
    write_json(RESULTS / "crelu.json", result)
    lines = ["# CReLU (transferred filters) against the same student without it, on `shapes`", "",
             f"Distillation from the built-in teacher (test accuracy {trained['teacher_test_accuracy']:.1%}), "
             f"{trained['epochs']} epochs, float32, seeds {trained['seeds']}; test accuracy on 1000 images. Latency: "
             f"ONNX Runtime {ort.__version__}, 1 thread, batch 1, median over {rounds} interleaved rounds of the "
             f"median of {runs} runs; load average {load_start[0]}-{loadavg()[0]}.", "",
             "| student | crelu | test accuracy (per seed) | params | MACs | size bytes | latency ms | vs crelu=0 |",
             "|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        base = rows[f"{r['space']}-crelu0"]
        lines.append(
            f"| {r['space']} | {r['crelu']} | {r['mean_accuracy']:.1%} ({', '.join(f'{a:.1%}' for a in r['test_accuracy'])}) | "
            f"{r['params']:,} | {r['macs']:,} | {r['size_bytes']:,} | {r['latency_ms']:.3f} | "
            f"{base['latency_ms'] / r['latency_ms']:.2f}x faster, MACs x{r['macs'] / base['macs']:.3f} |")
    lines += ["", f"Command: `{result['command']}`"]
    (RESULTS / "crelu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=pathlib.Path)
    p.add_argument("--time", type=pathlib.Path)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args()
    if args.train:
        train(args.train, args.epochs, args.seeds)
    if args.time:
        time_all(args.time, args.rounds, args.runs)


if __name__ == "__main__":
    main()
