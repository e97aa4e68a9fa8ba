"""How fast the student spaces learn ``shapes`` from scratch, against the teacher's own architecture.

Why the from-scratch proxy (and a short supernet training) leaves students near chance on ``shapes``: each
model below is trained exactly as the search trains its final model (``search.distill_train`` from the
built-in teacher's logits, float32, SGD one-cycle, batch 64, lr 0.05) for ``--epochs`` epochs, from
random weights, and scored on the validation split. Models: the built-in teacher's architecture
(``spaces.builtin_teacher``, random weights: the same recipe on a plain CNN), and for each space its
largest candidate (``Supernet(space).largest_candidates[0]``) and its default candidate.

    python experiments/student_learning_curve.py --epochs 4 8

Writes ``experiments/results/student_learning_curve.{json,md}``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--epochs", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--spaces", default="mobilenet,shufflenet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    import search
    from spaces import Supernet, builtin_teacher, get_space

    torch.set_num_threads(args.threads)
    data = search.load_data(args.data, seed=args.seed)
    teacher = search.load_teacher("builtin", data, seed=args.seed)
    with torch.no_grad():
        logits = teacher.model(data.train.x)
    c, h, _ = data.train.x.shape[1:]
    models = {"teacher architecture (random init)": lambda: builtin_teacher(in_channels=c, num_classes=data.num_classes)}
    for name in args.spaces.split(","):
        space = get_space(name, num_classes=data.num_classes, input_size=h, in_channels=c)
        largest = Supernet(space).largest_candidates[0]
        default = space.candidate()
        models[f"{name} largest"] = (lambda s=space, k=largest: s.build(k))
        models[f"{name} default"] = (lambda s=space, k=default: s.build(k))
    rows = []
    load_before = loadavg()
    for label, make in models.items():
        for epochs in args.epochs:
            torch.manual_seed(args.seed)
            model = make()
            params = sum(p.numel() for p in model.parameters())
            t0 = time.time()
            trained = search.distill_train(model, {}, (data.train.x, data.train.y), logits, epochs=epochs,
                                           seed=args.seed, threads=args.threads)
            seconds = time.time() - t0
            acc = search.accuracy(trained, data.val)
            rows.append({"model": label, "parameters": params, "epochs": epochs, "val_accuracy": acc,
                         "train_seconds": seconds})
            print(f"{label}: {epochs} epochs, val {100 * acc:.1f}%, {seconds:.0f} s", flush=True)
    result = {"command": "python experiments/student_learning_curve.py --epochs " + " ".join(map(str, args.epochs))
              + (f" --spaces {args.spaces}" if args.spaces != "mobilenet,shufflenet" else ""),
              "data": args.data, "train_images": len(data.train.x), "threads": args.threads,
              "teacher_val_accuracy": teacher.val_accuracy, "loadavg_before_after": [load_before, loadavg()],
              "rows": rows}
    write_json(RESULTS / "student_learning_curve.json", result)
    lines = ["# Students from scratch on " + args.data + ", trained as the search trains its final model", "",
             f"Command: `{result['command']}`; {result['train_images']} training images; `search.distill_train` from "
             f"the built-in teacher's logits (teacher: {100 * teacher.val_accuracy:.1f}% validation); {args.threads} "
             f"threads; load average before / after {load_before} / {result['loadavg_before_after'][1]}.", "",
             "| model | parameters | epochs | validation accuracy | training s |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['epochs']} | {100 * r['val_accuracy']:.1f}% | "
                     f"{r['train_seconds']:.0f} |")
    (RESULTS / "student_learning_curve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
