"""Deep Compression on the built-in teacher and ResNet-18: prune, share weights, Huffman-code, store.

The pipeline of Han et al. (ICLR 2016) with karumi's operators, on ``shapes`` (32x32 RGB, 10 classes):

1. the trained model (the search's built-in teacher, ``search.load_teacher("builtin", ...)``; or
   torchvision's ResNet-18 with a 3x3 stride-1 first convolution for 32x32 inputs (the max pool kept),
   trained here from scratch) and its test accuracy;
2. gradual global magnitude pruning to ``--sparsity`` (``spaces.compress.gradual_prune``, unstructured,
   ``--prune-steps`` steps, each followed by ``--prune-epochs`` epochs of fine-tuning with the zeros kept);
3. trained weight sharing at ``--bits`` (``spaces.compress.share_weights``), centroids fine-tuned for
   ``--share-epochs`` epochs;
4. the Deep Compression file (``spaces.compress.save_compressed``), loaded back into a fresh model
   (``load_compressed``) whose test accuracy is the one reported: the accuracy *of the file*.

Run: ``python experiments/deep_compression.py --model builtin`` and ``--model resnet18``; then
``--summarise`` writes ``experiments/results/deep_compression.md`` from the JSON files.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "deep_compression"


def _layers(model):
    import torch

    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _train(model, train, *, epochs: int, lr: float, seed: int, keep_zeros: bool = False, batch_size: int = 64,
           adam: bool = False):
    """SGD (momentum 0.9, one-cycle), cross entropy, random shifts; with ``keep_zeros`` the zero weights of
    every conv/linear layer are re-zeroed after every step (pruned weights stay pruned). ``adam``: Adam
    instead of SGD, for shared weights, whose centroid gradients sum over thousands of weights each."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    masks = [(m.weight, m.weight.detach() != 0) for m in _layers(model) if "weight" in m._parameters] \
        if keep_zeros else []
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if adam else \
        torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), batch_size):
            idx = perm[i:i + batch_size]
            x = train.x[idx]
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                for w, keep in masks:
                    w.mul_(keep)
    return model.eval()


def run(args: argparse.Namespace) -> dict:
    import torch
    import torchvision

    import search
    from spaces import builtin_teacher
    from spaces.compress import (
        compression_report,
        gradual_prune,
        load_compressed,
        save_compressed,
        share_weights,
        sparsity_report,
        strip_sharing,
    )

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_start = loadavg()
    data = search.load_data(args.data, seed=0)
    c, h, _ = data.input_shape
    if args.model == "builtin":
        teacher = search.load_teacher("builtin", data, seed=0)
        model, make = teacher.model.eval(), lambda: builtin_teacher(in_channels=c, num_classes=data.num_classes)
    else:
        torch.manual_seed(0)

        def make():  # torchvision's ResNet-18 with a 3x3 stride-1 first convolution for 32x32 inputs
            net = torchvision.models.resnet18(weights=None, num_classes=data.num_classes)
            net.conv1 = torch.nn.Conv2d(c, 64, 3, 1, 1, bias=False)
            return net

        model = _train(make(), data.train, epochs=args.train_epochs, lr=0.05, seed=0)
    base_acc = search.accuracy(model, data.test)
    print(f"{args.model}: test accuracy {base_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    fine_tune = lambda m: _train(m, data.train, epochs=args.prune_epochs, lr=args.lr, seed=1, keep_zeros=True)  # noqa: E731
    pruned = gradual_prune(model, args.sparsity, args.prune_steps, fine_tune, kind="unstructured", scope="global")
    pruned_acc = search.accuracy(pruned, data.test)
    sparsity = sparsity_report(pruned)["sparsity"]
    print(f"pruned to {sparsity:.3f} sparsity: test accuracy {pruned_acc:.4f} ({time.perf_counter() - t0:.0f} s)",
          flush=True)

    shared = share_weights(pruned, args.bits)
    shared_acc_before = search.accuracy(shared, data.test)
    shared = _train(shared, data.train, epochs=args.share_epochs, lr=args.share_lr, seed=2, adam=True)
    shared_acc = search.accuracy(shared, data.test)
    out_dir = RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.model}.kdc"
    data_bytes = save_compressed(shared, path)
    report = compression_report(shared)
    restored = make()
    restored.load_state_dict(load_compressed(path))
    restored.eval()
    final_acc = search.accuracy(restored, data.test)
    plain = strip_sharing(copy.deepcopy(shared))
    saved, loaded = plain.state_dict(), restored.state_dict()
    same = saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    path.unlink()  # the file is reproducible; keep the numbers, not the binary
    result = {
        "model": args.model,
        "data": args.data,
        "params": sum(p.numel() for p in model.parameters()),
        "settings": {k: getattr(args, k) for k in ("sparsity", "bits", "prune_steps", "prune_epochs",
                                                    "share_epochs", "train_epochs", "lr", "share_lr")},
        "test_accuracy": {"float32": base_acc, "pruned": pruned_acc, "shared_before_fine_tune": shared_acc_before,
                          "shared_fine_tuned": shared_acc,
                          "stored_file": final_acc},
        "accuracy_change_points": 100 * (final_acc - base_acc),
        "sparsity": sparsity,
        "file_bytes": len(data_bytes),
        "float32_bytes": report["float32_bytes"],
        "compression_ratio": report["float32_bytes"] / len(data_bytes),
        "header_bytes": report["header_bytes"],
        "restored_equals_saved": same,
        "encodings": {k: v for k, v in report["tensors"].items() if v["bytes"] > 1000},
        "seconds": time.perf_counter() - t0,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "command": "python experiments/deep_compression.py " + " ".join(sys.argv[1:]),
    }
    write_json(out_dir / f"{args.model}.json", result)
    print(json.dumps({k: result[k] for k in ("test_accuracy", "compression_ratio", "file_bytes")}, indent=1))
    return result


def summarise() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = [
        "# Deep Compression (prune, share weights, Huffman-code) on `shapes`",
        "",
        "Accuracy is that of the model loaded back from the stored file (`load_compressed`), on the 1000 test "
        "images; the ratio is float32 bytes of the state dict over the file's bytes (header included).",
        "",
        "| model | params | float32 test acc. | pruned (sparsity) | shared, fine-tuned, stored | change (points) | "
        "float32 bytes | file bytes | ratio | settings | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, s = r["test_accuracy"], r["settings"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {100 * a['float32']:.1f}% | {100 * a['pruned']:.1f}% "
            f"({r['sparsity']:.2f}) | {100 * a['stored_file']:.1f}% | {r['accuracy_change_points']:+.1f} | "
            f"{r['float32_bytes']:,} | {r['file_bytes']:,} | **{r['compression_ratio']:.1f}x** | "
            f"{s['bits']} bits, {s['prune_steps']}x{s['prune_epochs']} prune epochs, {s['share_epochs']} share "
            f"epochs | {r['loadavg_start'][0]}-{r['loadavg_end'][0]} |")
    lines += ["", "Commands:", ""] + [f"- `{r['command']}` ({r['seconds'] / 60:.1f} min)" for r in rows]
    (RESULTS.parent / "deep_compression.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("builtin", "resnet18"), default="builtin")
    p.add_argument("--data", default="shapes")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--prune-steps", type=int, default=3)
    p.add_argument("--prune-epochs", type=int, default=3)
    p.add_argument("--share-epochs", type=int, default=3)
    p.add_argument("--train-epochs", type=int, default=20, help="ResNet-18 training from scratch")
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate of the pruning fine-tune")
    p.add_argument("--share-lr", type=float, default=1e-4, help="Adam learning rate of the centroid fine-tune")
    p.add_argument("--summarise", action="store_true")
    args = p.parse_args()
    if args.summarise:
        summarise()
    else:
        run(args)


if __name__ == "__main__":
    main()
