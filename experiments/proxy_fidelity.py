"""Proxy fidelity: does the short distillation proxy rank candidates like a 10x longer training does?

For each space, N candidates are sampled (architecture, per-layer prune ratios and bits all searched), each
scored by ``search.ProxyEvaluator`` (``--proxy-epochs`` of KD training with fake quantisation at the
candidate's bits) and by the same training run ``--factor`` times longer. Reports Kendall's tau-b and
Spearman's rho between the two accuracy lists, and the proxy's seconds per trial.

Data: scikit-learn's digits at their native 8x8 (ships with scikit-learn; no download), a fixed training
subset of ``--train-size`` images, the 397 held-out images as validation. The teacher is the ``prune``
space's built-in CNN trained here on the 1,400 training images.

    python experiments/proxy_fidelity.py --space mobilenet      # one space -> results/proxy_fidelity_<space>.json
    python experiments/proxy_fidelity.py --summarise            # all JSON -> results/proxy_fidelity.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from search import ProxyEvaluator
from spaces import get_space

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
DIGITS = {"input_size": 8, "in_channels": 1, "num_classes": 10}


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    mean, std = x[:1400].mean(), x[:1400].std()
    x = (x - mean) / std
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train_teacher(x: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, seed: int = 0) -> torch.nn.Module:
    teacher = get_space("prune", **DIGITS).teacher.train()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=epochs * -(-len(x) // 32))
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            loss = torch.nn.functional.cross_entropy(teacher(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return teacher.eval()


def kendall_tau_b(a: list[float], b: list[float]) -> float:
    n, concordant, discordant, ties_a, ties_b = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denom = np.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return float((concordant - discordant) / denom) if denom else float("nan")


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v: list[float]) -> np.ndarray:
        v = np.asarray(v)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average ranks of ties
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def run_space(name: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    x, y, xv, yv = digits()
    start = time.perf_counter()
    teacher = train_teacher(x, y, seed=args.seed)
    with torch.no_grad():
        teacher_acc = float((teacher(xv).argmax(1) == yv).float().mean())
    teacher_s = time.perf_counter() - start
    train = (x[:args.train_size], y[:args.train_size])
    options = dict(DIGITS)
    tmp = tempfile.TemporaryDirectory()
    if name == "prune":
        path = pathlib.Path(tmp.name) / "teacher.pt"
        torch.save(teacher.state_dict(), path)
        options.update(teacher="builtin", state_dict=str(path))
    space = get_space(name, **options)
    proxy = ProxyEvaluator(train, (xv, yv), teacher, epochs=args.proxy_epochs, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed)
    long = ProxyEvaluator(train, (xv, yv), teacher, epochs=args.proxy_epochs * args.factor,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    rows = []
    for _ in tqdm(range(args.candidates), desc=f"{name}: candidates"):
        cand = space.sample(rng)
        model = space.build(cand)
        bits = space.module_bits(cand)
        p = proxy(model, bits)
        p_s = proxy.last_seconds
        q = long(model, bits)
        stats = space.stats(cand)
        rows.append({"candidate": cand.to_dict(), "proxy_accuracy": p, "proxy_seconds": p_s,
                     "long_accuracy": q, "long_seconds": long.last_seconds, "macs": stats.macs,
                     "size_bytes": stats.size_bytes})
        partial = RESULTS / f"proxy_fidelity_{name}.partial.json"  # progress, in case the run is stopped
        partial.write_text(json.dumps({"space": name, "settings": vars(args), "rows": rows}, indent=1))
    tmp.cleanup()
    pa = [r["proxy_accuracy"] for r in rows]
    la = [r["long_accuracy"] for r in rows]
    return {
        "space": name,
        "settings": {k: getattr(args, k) for k in ("candidates", "proxy_epochs", "factor", "train_size",
                                                     "batch_size", "lr", "seed")},
        "data": "sklearn digits 8x8, train subset of the first 1400 shuffled images, 397 validation images",
        "teacher_val_accuracy": teacher_acc,
        "teacher_train_seconds": teacher_s,
        "torch_threads": 1,
        "bn_recalibration": True,  # search.distill_train recomputes BatchNorm statistics after training
        "kendall_tau_b": kendall_tau_b(pa, la),
        "spearman_rho": spearman(pa, la),
        "proxy_seconds_median": float(np.median([r["proxy_seconds"] for r in rows])),
        "long_seconds_median": float(np.median([r["long_seconds"] for r in rows])),
        "rows": rows,
    }


def summarise() -> str:
    lines = [
        "# Proxy fidelity (Kendall's tau-b between proxy accuracy and 10x longer training)",
        "",
        "| space | candidates | proxy epochs | long epochs | train images | lr | BN recalibrated | Kendall tau-b | Spearman rho | proxy s/trial (median) | long s/trial (median) | proxy acc range | long acc range |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in sorted(p for p in RESULTS.glob("proxy_fidelity_*.json") if not p.name.endswith(".partial.json")):
        r = json.loads(path.read_text())
        s = r["settings"]
        pa = [row["proxy_accuracy"] for row in r["rows"]]
        la = [row["long_accuracy"] for row in r["rows"]]
        lines.append(
            f"| {r['space']} | {len(r['rows'])} | {s['proxy_epochs']} | {s['proxy_epochs'] * s['factor']} | "
            f"{s['train_size']} | {s['lr']} | {'yes' if r.get('bn_recalibration') else 'no'} | {r['kendall_tau_b']:.3f} | {r['spearman_rho']:.3f} | "
            f"{r['proxy_seconds_median']:.2f} | {r['long_seconds_median']:.2f} | "
            f"{min(pa):.3f}-{max(pa):.3f} | {min(la):.3f}-{max(la):.3f} |"
        )
    lines += ["", "Machine: 2 shared CPU cores, torch 1 thread per run; other jobs were running, so seconds are",
              "upper bounds. Produced by `python experiments/proxy_fidelity.py --space <name>` for each space, then",
              "`python experiments/proxy_fidelity.py --summarise`."]
    text = "\n".join(lines) + "\n"
    (RESULTS / "proxy_fidelity.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", help="space to measure (see spaces.list_spaces())")
    parser.add_argument("--summarise", action="store_true", help="merge results/proxy_fidelity_*.json into a table")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--proxy-epochs", type=int, default=2)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise())
        return 0
    if not args.space:
        parser.error("--space or --summarise is required")
    result = run_space(args.space, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy_fidelity_{args.space}.json"
    out.write_text(json.dumps(result, indent=1))
    (RESULTS / f"proxy_fidelity_{args.space}.partial.json").unlink(missing_ok=True)
    print(f"{args.space}: Kendall tau-b {result['kendall_tau_b']:.3f}, Spearman {result['spearman_rho']:.3f}, "
          f"proxy {result['proxy_seconds_median']:.2f} s/trial -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
