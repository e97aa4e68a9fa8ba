"""Supernet proxy fidelity: does scoring a candidate by its inherited supernet weights rank candidates like a
long fine-tune of the same candidate, and what does it cost?

For one student space on one data set (default ``shapes``, 32x32): the space's supernet is trained (or read
from ``$KARUMI_CACHE``) exactly as ``python -m search --supernet-epochs E`` does (``search.load_supernet``,
built-in teacher), then N candidates are sampled as the search samples them (architecture, per-layer prune
ratios, bits from ``--bits``) and each is scored twice:

- *proxy*: ``search.SupernetProxy`` as the search runs it (inherited weights, fake quantisation at its bits,
  each of ``--proxy-steps`` distillation steps of batch 32, BatchNorm recalibrated on 256 training images,
  validation accuracy), with its seconds per trial (extraction included);
- *long*: the candidate's inherited weights fine-tuned by distillation (``search.ProxyEvaluator.fine_tune``,
  as the final model is made) for ``--long-epochs`` epochs over the whole training split at batch 32: at
  least ten times the proxy's steps; validation accuracy.

Reports Kendall's tau-b and Spearman's rho of the proxy, of the parameter count and of the MAC count against
the long fine-tune, the supernet's training time and the proxy's seconds per trial.

    python experiments/supernet_fidelity.py --space mobilenet --supernet-epochs 6
    python experiments/supernet_fidelity.py --summarise        # all JSON -> results/supernet_fidelity.md
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments._common import write_json  # noqa: E402
from experiments.proxy_fidelity import kendall_tau_b, spearman  # noqa: E402
from search import (  # noqa: E402
    ProxyEvaluator,
    SupernetProxy,
    accuracy,
    load_data,
    load_supernet,
    load_teacher,
    recalibrate_batchnorm,
)
from spaces import get_space  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def extremes(supernet, data) -> dict:
    """Validation accuracy of the largest and the smallest sub-network (inherited weights, BatchNorm
    recalibrated on 256 training images, no training): what the supernet itself learned."""
    out = {}
    for name, cand in (("largest", supernet.largest_candidates[0]), ("smallest", supernet.smallest_candidate)):
        model = supernet.extract(cand)
        recalibrate_batchnorm(model, data.train.x[:256])
        out[name] = accuracy(model, data.val)
    return out


def add_extremes(path: pathlib.Path) -> None:
    """Add :func:`extremes` to a finished result (its supernet read from the cache)."""
    import json

    r = json.loads(path.read_text())
    torch.set_num_threads(1)
    seed = r["settings"]["seed"]
    data = load_data(r["data"].split(":")[0], seed=seed, input_size=int(r["data"].split("x")[-1].split(",")[0]))
    teacher = load_teacher("builtin", data, seed=seed)
    c, h, _ = data.input_shape
    space = get_space(r["space"], num_classes=data.num_classes, input_size=h, in_channels=c)
    sn = load_supernet(space, data, teacher.model, epochs=r["settings"]["supernet_epochs"], seed=seed)
    r["supernet_subnetwork_accuracy"] = extremes(sn.supernet, data)
    write_json(path, r)


def run_space(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    data = load_data(args.data, seed=args.seed, input_size=args.input_size)
    t0 = time.perf_counter()
    teacher = load_teacher("builtin", data, seed=args.seed)
    teacher_s = time.perf_counter() - t0
    c, h, _ = data.input_shape
    space = get_space(args.space, num_classes=data.num_classes, input_size=h, in_channels=c)
    load_before = [round(x, 2) for x in os.getloadavg()]
    sn = load_supernet(space, data, teacher.model, epochs=args.supernet_epochs, seed=args.seed)
    proxies = {}
    for spec in args.proxy_steps:  # "STEPS" or "STEPS:LR"
        steps, _, lr = spec.partition(":")
        extra = {"lr": float(lr)} if lr else {}
        proxies[spec] = SupernetProxy(sn.supernet, data.train.subset(512), data.val, teacher.model,
                                      steps=int(steps), seed=args.seed, **extra)
    long = ProxyEvaluator(data.train, data.val, teacher.model, epochs=args.long_epochs, batch_size=32,
                          seed=args.seed)
    long_steps = args.long_epochs * -(-len(data.train) // 32)
    most = max(int(spec.partition(":")[0]) for spec in args.proxy_steps)
    if long_steps < 10 * most:
        raise SystemExit(f"--long-epochs {args.long_epochs} gives {long_steps} steps, fewer than 10x the proxy's {most}")
    subnet_acc = extremes(sn.supernet, data)
    rng = np.random.default_rng(args.seed + 1000)
    rows = []
    out = RESULTS / f"supernet_fidelity_{args.space}_{args.data}{'_' + args.tag if args.tag else ''}.json"
    for i in range(args.candidates):
        cand = space.sample(rng, bits=tuple(args.bits))
        bits = space.module_bits(cand)
        stats = space.stats(cand)
        acc, proxy_s = {}, {}
        for steps, proxy in proxies.items():
            t = time.perf_counter()
            acc[str(steps)] = proxy(proxy.build(cand), bits)
            proxy_s[str(steps)] = time.perf_counter() - t
        t = time.perf_counter()
        tuned = long.fine_tune(sn.supernet.extract(cand), bits)
        long_acc = accuracy(tuned, data.val)
        rows.append({"candidate": cand.to_dict(), "params": stats.params, "macs": stats.macs,
                     "proxy_accuracy": acc, "proxy_seconds": proxy_s, "long_accuracy": long_acc,
                     "long_seconds": time.perf_counter() - t})
        print(f"{args.space} {i + 1}/{args.candidates}: proxy {acc} ({proxy_s} s) long {long_acc:.3f} "
              f"macs {stats.macs}", flush=True)
        write_json(out.with_suffix(".partial.json"), rows)
    la = [r["long_accuracy"] for r in rows]
    by_steps = {}
    for steps in map(str, args.proxy_steps):
        pa = [r["proxy_accuracy"][steps] for r in rows]
        by_steps[steps] = {"kendall_tau_b": kendall_tau_b(pa, la), "spearman_rho": spearman(pa, la),
                           "seconds_median": float(np.median([r["proxy_seconds"][steps] for r in rows])),
                           "accuracy_range": [min(pa), max(pa)]}
    result = {
        "space": args.space, "data": data.describe(), "teacher_val_accuracy": teacher.val_accuracy,
        "teacher_seconds": teacher_s,
        "settings": {"candidates": args.candidates, "supernet_epochs": args.supernet_epochs,
                     "proxy_steps": list(args.proxy_steps), "proxy_batch": 32, "calib_samples": 256,
                     "long_epochs": args.long_epochs, "long_steps": long_steps, "bits": list(args.bits),
                     "seed": args.seed, "threads": 1},
        "supernet_train_seconds": sn.train_seconds, "supernet_path": sn.path.name,
        "supernet_subnetwork_accuracy": subnet_acc,
        "long_seconds_median": float(np.median([r["long_seconds"] for r in rows])),
        "long_accuracy_range": [min(la), max(la)],
        "proxy_by_steps": by_steps,
        "baselines": {name: {"kendall_tau_b": kendall_tau_b([float(r[name]) for r in rows], la),
                             "spearman_rho": spearman([float(r[name]) for r in rows], la)}
                      for name in ("params", "macs")},
        "load_average_before_after": [load_before, [round(x, 2) for x in os.getloadavg()]],
        "command": "python experiments/supernet_fidelity.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    write_json(out, result)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    return result


def summarise() -> str:
    import json

    lines = ["# Supernet proxy fidelity: Kendall's tau-b against a long fine-tune of the inherited weights", "",
             "Proxy: inherited supernet weights, fake quantisation at the candidate's bits, N distillation steps "
             "(batch 32), BatchNorm recalibrated on 256 training images, validation accuracy. Long: the inherited "
             "weights fine-tuned by distillation over the whole training split (>= 10x the proxy's steps). "
             "Baselines: parameter count and MAC count. One torch thread; 2-core machine shared with other jobs.", "",
             "| space | data | candidates | supernet epochs | supernet training s | proxy steps | proxy s/trial "
             "(median) | long steps | tau proxy | tau params | tau MACs | rho proxy | proxy acc range | long acc range | "
             "largest / smallest sub-network acc |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(RESULTS.glob("supernet_fidelity_*.json")):
        if path.name.endswith(".partial.json"):
            continue
        r = json.loads(path.read_text())
        s, b = r["settings"], r["baselines"]
        e = r.get("supernet_subnetwork_accuracy")
        ext = f"{e['largest']:.3f} / {e['smallest']:.3f}" if e else "n/a"
        for steps, p in r["proxy_by_steps"].items():
            lines.append(f"| {r['space']} | {r['data'].split(':')[0]} | {s['candidates']} | {s['supernet_epochs']} | "
                         f"{r['supernet_train_seconds']:.0f} | {steps} | {p['seconds_median']:.2f} | "
                         f"{s['long_steps']} | {p['kendall_tau_b']:.3f} | {b['params']['kendall_tau_b']:.3f} | "
                         f"{b['macs']['kendall_tau_b']:.3f} | {p['spearman_rho']:.3f} | "
                         f"{p['accuracy_range'][0]:.3f}-{p['accuracy_range'][1]:.3f} | "
                         f"{r['long_accuracy_range'][0]:.3f}-{r['long_accuracy_range'][1]:.3f} | {ext} |")
    lines += ["", "Produced by:", ""] + [f"    {json.loads(p.read_text())['command']}"
                                        for p in sorted(RESULTS.glob("supernet_fidelity_*.json"))
                                        if not p.name.endswith(".partial.json")]
    lines += ["    python experiments/supernet_fidelity.py --summarise", ""]
    text = "\n".join(lines)
    (RESULTS / "supernet_fidelity.md").write_text(text, encoding="utf-8")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", choices=["mobilenet", "shufflenet", "fbnet"])
    p.add_argument("--data", default="shapes")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--supernet-epochs", type=int, default=6)
    p.add_argument("--proxy-steps", nargs="+", default=["0", "4"],
                   help="proxy variants: STEPS or STEPS:LR (default lr: SupernetProxy's)")
    p.add_argument("--long-epochs", type=int, default=2)
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--bits", type=int, nargs="+", default=[8, 32])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the result file (several settings of one space)")
    p.add_argument("--summarise", action="store_true")
    p.add_argument("--add-extremes", metavar="JSON", help="add the largest and smallest sub-networks' accuracy to a "
                                                           "finished result")
    args = p.parse_args()
    if args.summarise:
        print(summarise())
        return
    if args.add_extremes:
        add_extremes(pathlib.Path(args.add_extremes))
        return
    if args.space is None:
        p.error("--space is required unless --summarise")
    r = run_space(args)
    print({k: r[k] for k in ("proxy_by_steps", "baselines", "supernet_train_seconds")})


if __name__ == "__main__":
    main()
