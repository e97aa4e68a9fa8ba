"""Proxy fidelity: does the search's short distillation proxy rank candidates like ten times longer training?

For each space, N candidates are sampled (architecture, per-layer prune ratios and bits all searched, as the
search does), and each is trained by the proxy (``search.ProxyEvaluator``: knowledge distillation from the
teacher with fake quantisation at the candidate's bits, BatchNorm statistics recomputed, validation
accuracy) at every proxy length of ``--epochs``, and once ``--factor`` times longer than the search's
default proxy. Reports, per proxy length, Kendall's tau-b and Spearman's rho between proxy and long accuracy
and the proxy's seconds per trial: the curve that sets the search's default ``--proxy-epochs``.

Everything is what ``python -m search`` uses by default: scikit-learn's digits at 16x16 (or ``--data``, e.g.
``shapes``) with the search's train/validation split, the proxy's 512 training images, batch 64, learning rate 0.05, and the built-in
teacher (trained and cached exactly as the search does; the ``prune`` space compresses that teacher).

    python experiments/proxy_fidelity.py --space mobilenet      # one space -> results/proxy_fidelity_<space>.json
    python experiments/proxy_fidelity.py --space prune --data shapes  # -> results/proxy_fidelity_prune_shapes.json
    python experiments/proxy_fidelity.py --summarise            # all JSON -> results/proxy_fidelity.md

The summary sets two baseline proxies beside the trained ones: the candidate's MAC count and its size in
bytes (at its bits), each ranked against the long training's accuracy (bigger is assumed better).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from search import ProxyEvaluator, SearchOptions, load_data, load_teacher
from spaces import get_space

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


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


#: The search's proxy: its epochs (search.SearchOptions) at ProxyEvaluator's default batch size and learning rate.
PROXY_BATCH = ProxyEvaluator.__init__.__kwdefaults__["batch_size"]
PROXY_LR = ProxyEvaluator.__init__.__kwdefaults__["lr"]
DEFAULT_PROXY = f"{SearchOptions.proxy_epochs}:{PROXY_BATCH}:{PROXY_LR:g}"


def _proxy_spec(spec: str) -> tuple[int, int, float]:
    try:
        e, b, lr = spec.split(":")
        return int(e), int(b), float(lr)
    except ValueError:
        raise SystemExit(f"--proxies {spec!r}: allowed: EPOCHS:BATCH:LR, e.g. 4:32:0.05") from None


def resolvable_agreement(proxy: list[float], long: list[float], n_val: int) -> dict:
    """Kendall's tau over the pairs whose long-training accuracies differ by more than validation noise.

    Two accuracies measured on the same ``n_val`` images are told apart when their difference exceeds 1.96
    standard errors of a difference of two binomial proportions; closer pairs have no resolvable order, and
    any proxy ranks them by chance. Returns the number of such pairs, and how many the proxy orders the same way.
    """
    agree = disagree = 0
    for i in range(len(long)):
        for j in range(i + 1, len(long)):
            a, b = long[i], long[j]
            se = np.sqrt(a * (1 - a) / n_val + b * (1 - b) / n_val)
            if abs(a - b) <= 1.96 * se:
                continue
            dp = np.sign(proxy[i] - proxy[j])
            if dp == np.sign(a - b):
                agree += 1
            elif dp != 0:
                disagree += 1
    pairs = len(long) * (len(long) - 1) // 2
    n = agree + disagree
    return {"pairs": pairs, "resolvable": n, "agree": agree, "disagree": disagree,
            "kendall_tau": (agree - disagree) / n if n else None}


def _stem(space: str, data: str) -> str:
    """Result file stem: the space, and the data set unless it is the default digits."""
    return space if data == "digits" else f"{space}_{data.split(':')[0]}"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_space(name: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    data = load_data(args.data, seed=args.seed)
    teacher = load_teacher("builtin", data, seed=args.seed, epochs=SearchOptions.teacher_epochs)
    c, h, _ = data.input_shape
    options: dict = dict(num_classes=data.num_classes, input_size=h, in_channels=c)
    if name == "prune":
        options["teacher"] = teacher.model
    space = get_space(name, **options)
    train = data.train.subset(args.samples)
    common = dict(batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    proxies = {}
    for spec in args.proxies:
        e, b, lr = _proxy_spec(spec)
        proxies[spec] = ProxyEvaluator(train, data.val, teacher.model, epochs=e, batch_size=b, lr=lr, seed=args.seed)
    long_epochs = args.factor * SearchOptions.proxy_epochs
    long = ProxyEvaluator(train, data.val, teacher.model, epochs=long_epochs, **common)
    again = ProxyEvaluator(train, data.val, teacher.model, epochs=long_epochs,
                           **{**common, "seed": args.seed + 1}) if args.ceiling else None
    rng = np.random.default_rng(args.seed)
    rows = []
    load_before = _load()
    partial = RESULTS / f"proxy_fidelity_{_stem(name, args.data)}.partial.json"  # progress, in case the run is stopped
    for _ in tqdm(range(args.candidates), desc=f"{name}: candidates"):
        cand = space.sample(rng)
        bits = space.module_bits(cand)
        row: dict = {"candidate": cand.to_dict(), "proxy": {}}
        for e, proxy in proxies.items():
            acc = proxy(space.build(cand), bits)
            row["proxy"][str(e)] = {"accuracy": acc, "seconds": proxy.last_seconds}
        row["long_accuracy"] = long(space.build(cand), bits)
        row["long_seconds"] = long.last_seconds
        if again is not None:  # the reference's own reproducibility: the same long training, another seed
            row["long_accuracy_other_seed"] = again(space.build(cand), bits)
        stats = space.stats(cand)
        row.update(macs=stats.macs, size_bytes=stats.size_bytes)
        rows.append(row)
        partial.write_text(json.dumps({"space": name, "rows": rows}, indent=1))
    la = [r["long_accuracy"] for r in rows]
    n_val = len(data.val)
    by_epochs = {}
    for e in args.proxies:
        pa = [r["proxy"][str(e)]["accuracy"] for r in rows]
        by_epochs[str(e)] = {
            "kendall_tau_b": kendall_tau_b(pa, la), "spearman_rho": spearman(pa, la),
            "resolvable_pairs": resolvable_agreement(pa, la, n_val),
            "seconds_median": float(np.median([r["proxy"][str(e)]["seconds"] for r in rows])),
            "accuracy_range": [min(pa), max(pa)],
        }
    return {
        "space": name,
        "data_spec": args.data,
        "command": " ".join(["python experiments/proxy_fidelity.py"] + sys.argv[1:]),
        "settings": {"candidates": args.candidates, "proxies": list(args.proxies), "long_epochs": long_epochs,
                     "factor": args.factor, "samples": args.samples, "batch_size": args.batch_size, "lr": args.lr,
                     "seed": args.seed, "search_default_proxy_epochs": SearchOptions.proxy_epochs},
        "data": f"{data.describe()}; proxy trains on {len(train)} of them, validates on {len(data.val)}",
        "teacher_val_accuracy": teacher.val_accuracy,
        "torch_threads": 1,
        "load_average_before_after": [load_before, _load()],
        "long_accuracy_range": [min(la), max(la)],
        "long_seconds_median": float(np.median([r["long_seconds"] for r in rows])),
        "by_proxy_epochs": by_epochs,
        "ceiling": None if again is None else {
            "kendall_tau_b": kendall_tau_b([r["long_accuracy_other_seed"] for r in rows], la),
            "spearman_rho": spearman([r["long_accuracy_other_seed"] for r in rows], la),
            "what": "the long training against itself with seed + 1: no proxy can rank better than this"},
        "rows": rows,
    }


def summarise() -> str:
    lines = [
        "# Proxy fidelity: Kendall's tau-b between the search's proxy and ten times longer training",
        "",
        "The search's data at its default resolution (digits 16x16, shapes 32x32), 512 proxy training images, one",
        "torch thread. Long training: --factor x the search's default proxy epochs at its batch size and lr",
        f"({DEFAULT_PROXY}), on the same images. 'tau on resolvable pairs': only pairs whose long-training accuracies",
        "differ by more than validation noise (see resolvable_agreement). 'ceiling': the long training against itself",
        "with another seed. 'tau MACs' / 'tau size': the candidate's MAC count / size in bytes as the proxy (no",
        "training; bigger ranked better), the baselines the issue asks to beat.",
        "",
        "| space | data | candidates | proxy (epochs:batch:lr) | long epochs | Kendall tau-b | Spearman rho | tau on resolvable pairs (n) | tau MACs | tau size | proxy s/trial (median) | proxy acc range | long acc range | long s/trial | ceiling tau-b |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    paths = sorted(p for p in RESULTS.glob("proxy_fidelity_*.json") if not p.name.endswith(".partial.json"))
    for path in paths:
        r = json.loads(path.read_text())
        la = [row["long_accuracy"] for row in r["rows"]]
        tau_macs = kendall_tau_b([float(row["macs"]) for row in r["rows"]], la)
        tau_size = kendall_tau_b([float(row["size_bytes"]) for row in r["rows"]], la)
        for e, m in r["by_proxy_epochs"].items():
            lo, hi = m["accuracy_range"]
            llo, lhi = r["long_accuracy_range"]
            rp = m["resolvable_pairs"]
            rtau = "n/a" if rp["kendall_tau"] is None else f"{rp['kendall_tau']:.3f}"
            ceil = "" if not r.get("ceiling") else f"{r['ceiling']['kendall_tau_b']:.3f}"
            lines.append(
                f"| {r['space']} | {r.get('data_spec', 'digits')} | {len(r['rows'])} | {e} | {r['settings']['long_epochs']} | "
                f"{m['kendall_tau_b']:.3f} | {m['spearman_rho']:.3f} | {rtau} ({rp['resolvable']}/{rp['pairs']}) | "
                f"{tau_macs:.3f} | {tau_size:.3f} | {m['seconds_median']:.2f} | {lo:.3f}-{hi:.3f} | "
                f"{llo:.3f}-{lhi:.3f} | {r['long_seconds_median']:.1f} | {ceil} |")
    commands = [json.loads(p.read_text())["command"] for p in paths]
    lines += ["", "Produced by:", ""] + [f"    {c}" for c in commands] + ["    python experiments/proxy_fidelity.py --summarise"]
    text = "\n".join(lines) + "\n"
    (RESULTS / "proxy_fidelity.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", help="space to measure (see spaces.list_spaces())")
    parser.add_argument("--summarise", action="store_true", help="merge results/proxy_fidelity_*.json into a table")
    parser.add_argument("--data", default="digits", help="data set, as python -m search --data (default digits)")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--proxies", nargs="+", default=[DEFAULT_PROXY, "2:32:0.05", "6:64:0.05"], metavar="E:B:LR",
                        help=f"proxies to score: epochs:batch size:learning rate (default: the search's {DEFAULT_PROXY}, "
                             "a shorter one, and the search's earlier default 6:64:0.05)")
    parser.add_argument("--factor", type=int, default=10, help="long training = factor x the default proxy epochs")
    parser.add_argument("--samples", type=int, default=SearchOptions.proxy_samples)
    parser.add_argument("--batch-size", type=int, default=PROXY_BATCH, help="of the long training")
    parser.add_argument("--lr", type=float, default=PROXY_LR, help="of the long training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ceiling", action="store_true",
                        help="train the long run a second time with another seed (the reference's reproducibility)")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise())
        return 0
    if not args.space:
        parser.error("--space or --summarise is required")
    result = run_space(args.space, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy_fidelity_{_stem(args.space, args.data)}.json"
    out.write_text(json.dumps(result, indent=1))
    (RESULTS / f"proxy_fidelity_{_stem(args.space, args.data)}.partial.json").unlink(missing_ok=True)
    for e, m in result["by_proxy_epochs"].items():
        print(f"{args.space}: proxy {e}: Kendall tau-b {m['kendall_tau_b']:.3f}, Spearman "
              f"{m['spearman_rho']:.3f}, {m['seconds_median']:.2f} s/trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
