"""The search against baselines at equal trial budgets, on digits (or ``--data``), over several seeds.

Methods (each scored by the search's own objective, ``search.evaluate_candidate``, with one shared
``search.ProxyEvaluator`` per seed, the shared built-in teacher, data and local device predictor):

- ``search``: the search as ``python -m search`` runs it: TPE (the search's sampler settings, the budget as
  its constraint) over architecture, per-layer prune ratios and per-layer bits jointly, starting from the
  uniform compressions within the budget (``search.uniform_starts``: the default architecture pruned alike,
  at the narrowest width, up to half the trials spread from the budget to the fastest uniform ratio), then
  refined per layer by TPE;
- ``search-no-starts``: the same without those starts (the search before they were added);
- ``random``: Optuna's random sampler over the same three parts (no starts);
- ``arch-only``, ``prune-only``, ``bits-only``: the search (TPE) with ``--search arch`` / ``prune`` /
  ``bits`` (``space.sample(trial, search=...)``: the other parts keep their defaults: MobileNetV2 1.0,
  no pruning, 32 bits), with the starts of their parts;
- ``uniform-int8``: the usual hand-made choice, a grid of width multipliers (the space's 0.35, 0.5, 0.75,
  1.0) times uniform channel pruning (0, 0.25, 0.5, 0.75 of every layer's channels: a finer width
  multiplier) at uniform int8, each built with ``space.candidate(...)`` (16 candidates, in grid order); in
  the ``prune`` space (no width multiplier: the teacher itself) uniform pruning of 0, 0.05, ..., 0.75 of
  every prunable layer's channels at int8 (16 candidates).

In the ``prune`` space "arch" is its architecture gene, the per-layer low-rank factorisation (rank ratios).
``--bits auto`` draws the bit widths as ``python -m search`` does by default (32 and the widths the device's
profile says run faster); without it, all of ``spaces.SEARCH_BITS``.

Every Optuna method runs through the search's own study driver (``run_study`` with the search's samplers;
like ``search.run`` it first enqueues the fastest candidate when the budget is within 2x of it). The
budget is chosen where it binds: ``--budget-quantile`` of the predicted latencies of 2,000 random
candidates of the whole space (so that share of random candidates is feasible), unless ``--budget-ms``.

Reported: the hypervolume of the (accuracy, latency, size) front against trials, with objectives turned
into minimisation and normalised: (1 - accuracy, latency / budget, size / largest size of the space, the
largest architecture at 32 bits), reference point (1, 1, 1): only feasible, trained trials count. And the
best feasible accuracy at the budget. Mean and standard deviation over seeds.

    python experiments/search_baselines.py --out experiments/results/search_baselines
    python experiments/search_baselines.py --data shapes --space prune --bits auto \
        --out experiments/results/search_baselines_prune_shapes
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
import time
import warnings
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from search import SearchOptions  # noqa: E402
from spaces import SEARCH_BITS  # noqa: E402
from experiments._common import (
    choose_budget,
    hypervolume_3d,
    load_setup,
    loadavg,
    percentile_summary,
    random_latencies,
    write_json,
)

METHODS = ("search", "search-no-starts", "random", "uniform-int8", "bits-only", "arch-only", "prune-only")
#: sampler, searched parts and whether the study starts from the uniform compressions within the budget
#: (``search.uniform_starts``, as ``python -m search`` does) of each Optuna method
OPTUNA_METHODS = {
    "search": ("tpe", ("arch", "prune", "bits"), True),
    "search-no-starts": ("tpe", ("arch", "prune", "bits"), False),
    "random": ("random", ("arch", "prune", "bits"), False),
    "arch-only": ("tpe", ("arch",), True),
    "prune-only": ("tpe", ("prune",), True),
    "bits-only": ("tpe", ("bits",), True),
}
UNIFORM_WIDTHS = (0.35, 0.5, 0.75, 1.0)
UNIFORM_PRUNE = (0.0, 0.25, 0.5, 0.75)
#: the uniform grid of the ``prune`` space, which has no width multiplier: 16 uniform prune ratios
UNIFORM_PRUNE_ONLY = tuple(round(0.05 * i, 2) for i in range(16))


def predict_ms(setup: Any, cands: list[Any]) -> np.ndarray:
    """Predicted milliseconds of candidates of the setup's space, as the search predicts them."""
    from search import predict_latency

    return np.asarray(predict_latency(setup.device.predictor, setup.space, cands), dtype=float)


def latency_distribution(setup: Any, *, n: int, seed: int, bits: tuple[int, ...] | None) -> dict[str, np.ndarray]:
    """Predicted latencies of ``n`` random candidates for each method's searched parts."""
    searched = dict.fromkeys(parts for _, parts, _ in OPTUNA_METHODS.values())  # each set of parts once
    return {",".join(parts): random_latencies(setup, n=n, seed=seed, search=parts, bits=bits) for parts in searched}


def uniform_grid(space: Any) -> list[tuple[dict[str, Any], Any]]:
    """The hand-made baseline: width multiplier x uniform prune ratio, int8 everywhere (the ``prune`` space:
    uniform prune ratio, int8)."""
    if space.name == "prune":
        layers = space.layers(space.candidate())
        return [({"uniform_prune": r, "bits": 8},
                 space.candidate(prune_ratios=[r if layer.prunable else 0.0 for layer in layers],
                                 bits=[8 if layer.quantisable else 32 for layer in layers]))
                for r in UNIFORM_PRUNE_ONLY]
    grid = []
    for width in UNIFORM_WIDTHS:
        n = len(space.layer_names(space.candidate(width=width)))
        for ratio in UNIFORM_PRUNE:
            cand = space.candidate(width=width, prune_ratios=[ratio] * n, bits=[8] * n)
            grid.append(({"width": width, "uniform_prune": ratio, "bits": 8}, cand))
    return grid


def largest_size(space: Any) -> int:
    """Bytes of the space's largest architecture at 32 bits (the size normaliser of the hypervolume)."""
    genes: dict[str, Any] = {}
    if space.name == "mobilenet":
        cls = type(space)
        depths = list(cls.MAX_DEPTHS)
        genes = {"width": max(cls.WIDTHS), "depths": depths,
                 "expansions": [[max(cls.EXPANSIONS)] * d for d in depths],
                 "kernel_sizes": [[max(cls.KERNEL_SIZES)] * d for d in depths]}
    return int(space.stats(space.candidate(**genes)).size_bytes)


def trial_rows(trials: list[Any]) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        ua = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name,
                     "accuracy": float(ua.get("accuracy", 0.0)) if t.state == TrialState.COMPLETE else None,
                     "latency_ms": ua.get("latency_ms"), "size_bytes": ua.get("size_bytes"),
                     "feasible": bool(ua.get("feasible", False)), "trained": bool(ua.get("trained", False)),
                     "seconds": ua.get("seconds"), "candidate": ua.get("candidate"),
                     # enqueued (the fastest candidate, the uniform starts), not drawn by the sampler
                     "enqueued": "fixed_params" in t.system_attrs})
    return rows


def run_optuna_method(setup: Any, method: str, *, seed: int, trials: int, budget_ms: float,
                      evaluator: Any, bits: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    """One run of an Optuna method through the search's own study driver; returns its trials."""
    import optuna

    from search import OBJECTIVES, SearchContext, fastest_candidate, make_sampler, run_study, seed_study

    sampler_name, parts, starts = OPTUNA_METHODS[method]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[d for _, d in OBJECTIVES],
                                sampler=make_sampler(sampler_name, seed=seed, budget_ms=budget_ms))
    predict = lambda c: predict_ms(setup, c)  # noqa: E731
    sample_kwargs = {"search": parts, **({} if bits is None else {"bits": bits})}
    # as search.run: the fastest candidate where the budget is tight, then (with starts) the uniform starts
    seed_study(study, setup.space, predict, budget_ms=budget_ms, trials=trials, starts=starts,
               fastest=fastest_candidate(setup.space, predict, seed=seed, **sample_kwargs), **sample_kwargs)
    context = SearchContext(space=setup.space, predictor=setup.device.predictor, budget_ms=budget_ms,
                            evaluator=evaluator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_study(study, space=setup.space, context=context, run_id=f"{method}-s{seed}", n_trials=trials,
                  sample_kwargs=sample_kwargs)
    return trial_rows(study.trials)


def run_uniform(setup: Any, *, budget_ms: float, evaluator: Any) -> list[dict[str, Any]]:
    """The uniform-compression grid, each candidate through ``search.evaluate_candidate``."""
    from search import SearchContext, evaluate_candidate

    context = SearchContext(space=setup.space, predictor=setup.device.predictor, budget_ms=budget_ms,
                            evaluator=evaluator)
    rows = []
    for i, (label, cand) in enumerate(uniform_grid(setup.space)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate_candidate(cand, context=context)
        rows.append({"trial": i, "state": "COMPLETE", "accuracy": r.accuracy, "latency_ms": r.latency_ms,
                     "size_bytes": r.size_bytes, "feasible": r.feasible, "trained": r.trained,
                     "seconds": r.seconds, "candidate": cand.to_dict(), "uniform": label})
    return rows


def hv_curve(rows: list[dict[str, Any]], *, budget_ms: float, size_ref: float) -> list[float]:
    """Hypervolume of the first k trials, k = 1..len(rows) (failed trials keep the previous value)."""
    pts: list[tuple[float, float, float]] = []
    curve = []
    for r in rows:
        if r["state"] == "COMPLETE" and r["trained"] and r["feasible"]:
            pts.append((1.0 - float(r["accuracy"]), float(r["latency_ms"]) / budget_ms, float(r["size_bytes"]) / size_ref))
        curve.append(hypervolume_3d(np.asarray(pts), (1.0, 1.0, 1.0)) if pts else 0.0)
    return curve


def best_feasible(rows: list[dict[str, Any]]) -> float | None:
    accs = [float(r["accuracy"]) for r in rows if r["state"] == "COMPLETE" and r["trained"] and r["feasible"]]
    return max(accs) if accs else None


def front(rows: list[dict[str, Any]], *, budget_ms: float, size_ref: float) -> list[dict[str, Any]]:
    """The feasible, trained rows no other such row dominates in (1 - accuracy, latency, size)."""
    ok = [r for r in rows if r["state"] == "COMPLETE" and r["trained"] and r["feasible"]]
    pts = [(1.0 - float(r["accuracy"]), float(r["latency_ms"]) / budget_ms, float(r["size_bytes"]) / size_ref)
           for r in ok]
    return [r for r, p in zip(ok, pts)
            if not any(q != p and all(a <= b for a, b in zip(q, p)) for q in pts)]


def attribution(res: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a method's enqueued trials (fastest candidate, uniform starts) reach alone, and how much of its
    front its sampler's own trials hold; None for runs without enqueued trials."""
    if not any(t.get("enqueued") for r in runs for t in r["trials"]):
        return None
    budget, size_ref = res["budget_ms"], res["hypervolume"]["size_ref_bytes"]
    hv_enq, own, points = [], [], []
    for r in runs:
        curve = hv_curve([t for t in r["trials"] if t.get("enqueued")], budget_ms=budget, size_ref=size_ref)
        hv_enq.append(curve[-1] if curve else 0.0)
        f = front(r["trials"], budget_ms=budget, size_ref=size_ref)
        own.append(sum(not t.get("enqueued") for t in f))
        points.append(len(f))
    return {"enqueued_trials": percentile_summary([sum(bool(t.get("enqueued")) for t in r["trials"]) for r in runs]),
            "hypervolume_enqueued_only": percentile_summary(hv_enq),
            "front_points": percentile_summary(points), "front_points_from_sampler": percentile_summary(own)}


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Per method: best feasible accuracy and final hypervolume, mean and std over seeds, and counts."""
    summary: dict[str, Any] = {}
    for method in res["methods"]:
        runs = [r for r in res["runs"] if r["method"] == method]
        if not runs:
            continue
        best = [r["best_feasible_accuracy"] for r in runs]
        hv = [r["hypervolume"][-1] if r["hypervolume"] else 0.0 for r in runs]
        summary[method] = {
            "seeds": [r["seed"] for r in runs],
            "best_feasible_accuracy": percentile_summary([b for b in best if b is not None]),
            "runs_without_feasible": sum(b is None for b in best),
            "final_hypervolume": percentile_summary(hv),
            "trials_per_run": percentile_summary([len(r["trials"]) for r in runs]),
            "feasible_share": percentile_summary([np.mean([t["feasible"] for t in r["trials"]]) for r in runs]),
            "trained_trials": percentile_summary([sum(t["trained"] for t in r["trials"]) for r in runs]),
            "seconds_per_run": percentile_summary([r["seconds"] for r in runs]),
        }
        if (attr := attribution(res, runs)) is not None:
            summary[method]["enqueued"] = attr
    return summary


def _grid_size(res: dict[str, Any]) -> int:
    """Points of the uniform-int8 grid of the result's space."""
    return len(UNIFORM_PRUNE_ONLY) if res["config"]["space"] == "prune" else len(UNIFORM_WIDTHS) * len(UNIFORM_PRUNE)


def _pm(s: dict[str, Any], fmt: str) -> str:
    if not s or s.get("n", 0) == 0:
        return "n/a"
    return f"{format(s['mean'], fmt)} ± {format(s['std'], fmt)}"


def markdown(res: dict[str, Any]) -> str:
    cfg, summ = res["config"], res["summary"]
    lines = [
        f"{cfg['data'].capitalize()}, `{cfg['space']}` space, local CPU predictor; budget {res['budget_ms']:.3f} ms predicted "
        f"({100 * res['budget_feasible_share_random']:.0f}% of 2,000 random candidates of the whole space meet it); "
        f"{cfg['trials']} trials per run (uniform-int8: its {_grid_size(res)}-point grid), "
        f"bits drawn from {', '.join(map(str, cfg.get('bits') or SEARCH_BITS))}, "
        f"seeds {', '.join(map(str, cfg['seeds']))}; proxy {cfg['proxy_epochs']} epochs on {cfg['proxy_samples']} images. "
        f"Mean ± std over seeds.",
        "",
        "| method | best feasible accuracy | hypervolume (final) | feasible trials | trained trials | seconds / run |",
        "|---|---|---|---|---|---|",
    ]
    for method, s in summ.items():
        miss = f" ({s['runs_without_feasible']} run(s) found none)" if s["runs_without_feasible"] else ""
        label = method if len(s["seeds"]) == len(cfg["seeds"]) else \
            f"{method} (seed{'s' if len(s['seeds']) > 1 else ''} {', '.join(map(str, s['seeds']))} only)"
        lines.append(f"| {label} | {_pm(s['best_feasible_accuracy'], '.3f')}{miss} | {_pm(s['final_hypervolume'], '.4f')} | "
                     f"{_pm(s['feasible_share'], '.0%').replace('%', ' %')} | {_pm(s['trained_trials'], '.1f')} | "
                     f"{_pm(s['seconds_per_run'], '.0f')} |")
    attributed = [(m, s["enqueued"]) for m, s in summ.items() if s.get("enqueued")]
    if attributed:
        lines += ["", "What the enqueued trials (the fastest candidate and the uniform starts) reach alone, and how "
                  "many points of the final front the sampler's own trials hold:", "",
                  "| method | enqueued trials | hypervolume of the enqueued trials alone | front points | of them from the sampler |",
                  "|---|---|---|---|---|"]
        lines += [f"| {m} | {_pm(a['enqueued_trials'], '.1f')} | {_pm(a['hypervolume_enqueued_only'], '.4f')} | "
                  f"{_pm(a['front_points'], '.1f')} | {_pm(a['front_points_from_sampler'], '.1f')} |" for m, a in attributed]
    secs = [t["seconds"] for r in res["runs"] for t in r["trials"] if t["trained"] and t["seconds"] is not None]
    ts = percentile_summary(secs)
    if ts["n"]:
        lines += ["", f"Seconds per trained trial (proxy training and validation), all runs: mean {ts['mean']:.1f} s, "
                  f"p90 {ts['p90']:.1f} s (n={ts['n']}); over-budget trials are not trained and cost milliseconds."]
    lines += ["", f"Load average (1 min) at start / end: {res['loadavg_start'][0]:.1f} / {res['loadavg_end'][0]:.1f} "
              f"on {res['cpu_count']} cores shared with other work: seconds are pessimistic.", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.6), dpi=110)
    ax = fig.add_subplot()
    colors = {"search": "tab:blue", "search-no-starts": "tab:cyan", "random": "tab:orange", "uniform-int8": "0.3",
              "bits-only": "tab:purple", "arch-only": "tab:green", "prune-only": "tab:red"}
    for method in res["methods"]:
        curves = [r["hypervolume"] for r in res["runs"] if r["method"] == method]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        arr = np.asarray([c[:n] for c in curves])
        x = np.arange(1, n + 1)
        mean, std = arr.mean(axis=0), arr.std(axis=0)
        style = "--" if method == "uniform-int8" else "-"
        ax.plot(x, mean, style, color=colors.get(method), label=method, linewidth=2 if method == "search" else 1.3)
        ax.fill_between(x, mean - std, mean + std, color=colors.get(method), alpha=0.15)
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (1-acc, latency/budget, size/max size; ref 1,1,1)")
    ax.set_title(f"{res['config']['data']}, {res['config']['space']}, budget {res['budget_ms']:.2f} ms, "
                 f"mean ± std over {len(res['config']['seeds'])} seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def write_csv(res: dict[str, Any], path: pathlib.Path) -> None:
    fields = ("method", "seed", "trial", "state", "accuracy", "latency_ms", "size_bytes", "feasible", "trained",
              "seconds", "hypervolume", "candidate")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in res["runs"]:
            for t, hv in zip(r["trials"], r["hypervolume"]):
                w.writerow({**{k: t.get(k) for k in fields if k in t}, "method": r["method"], "seed": r["seed"],
                            "hypervolume": hv, "candidate": json.dumps(t.get("candidate"), sort_keys=True)})


def merge(paths: list[pathlib.Path], out: pathlib.Path, argv: list[str]) -> int:
    """Combine runs of separate invocations (same budget and settings) into one result."""
    parts = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    first = parts[0]
    for p, other in zip(paths[1:], parts[1:]):
        for key in ("budget_ms",):
            if other[key] != first[key]:
                raise ValueError(f"{p}: {key}={other[key]!r} differs from {paths[0]}'s {first[key]!r}")
        if {k: v for k, v in other["config"].items() if k != "seeds"} != {k: v for k, v in first["config"].items() if k != "seeds"}:
            raise ValueError(f"{p}: config {other['config']!r} differs from {paths[0]}'s {first['config']!r}")
    res = dict(first)
    seen: set[tuple[str, int]] = set()
    res["runs"] = []
    for part in parts:  # a (method, seed) run present in several inputs is taken from the first
        for r in part["runs"]:
            if (r["method"], r["seed"]) not in seen:
                seen.add((r["method"], r["seed"]))
                res["runs"].append(r)
    res["methods"] = [m for m in METHODS if any(r["method"] == m for r in res["runs"])]
    res["config"] = {**first["config"], "seeds": sorted({r["seed"] for r in res["runs"]})}
    res["commands"] = [part["command"] for part in parts] + ["python experiments/search_baselines.py " + " ".join(argv)]
    res["loadavg_start"] = max((part["loadavg_start"] for part in parts), key=lambda v: v[0])
    res["loadavg_end"] = max((part.get("loadavg_end", part["loadavg_start"]) for part in parts), key=lambda v: v[0])
    res["seconds"] = max(part.get("seconds", 0.0) for part in parts)
    res["summary"] = summarise(res)
    write_json(out / "search_baselines.json", res)
    write_csv(res, out / "search_baselines.csv")
    (out / "search_baselines.md").write_text(markdown(res), encoding="utf-8")
    plot(res, out / "hypervolume_vs_trials.png")
    print(markdown(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/search_baselines", help="results folder")
    ap.add_argument("--data", default="digits", help="data set, as python -m search --data (default digits)")
    ap.add_argument("--bits", choices=("all", "auto"), default="all",
                    help="bit widths drawn: all of spaces.SEARCH_BITS (default), or auto: as python -m search "
                         "--bits auto, 32 and the widths the device runs faster")
    ap.add_argument("--space", default="mobilenet", help="search space (default mobilenet, the search's default)")
    ap.add_argument("--trials", type=int, default=20, help="trials per run of each Optuna method")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (sampler and proxy training)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run")
    ap.add_argument("--budget-ms", type=float, default=None, help="latency budget (default: by --budget-quantile)")
    ap.add_argument("--budget-quantile", type=float, default=0.3,
                    help="budget = this quantile of the predicted latency of random candidates")
    ap.add_argument("--proxy-epochs", type=int, default=SearchOptions.proxy_epochs,
                    help="distillation epochs of the proxy (default: the search's)")
    ap.add_argument("--proxy-samples", type=int, default=SearchOptions.proxy_samples,
                    help="training images of the proxy (default: the search's)")
    ap.add_argument("--teacher-epochs", type=int, default=12, help="built-in teacher epochs (the search's default)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="only combine the search_baselines.json of separate runs (e.g. one per seed, run in "
                         "parallel) into --out, with the summary, table and plot")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge([pathlib.Path(p) for p in args.merge], out, argv if argv is not None else sys.argv[1:])

    from search import ProxyEvaluator

    start_load, start = loadavg(), time.perf_counter()
    setup = load_setup(data=args.data, space=args.space, seed=0, teacher_epochs=args.teacher_epochs)
    bits = None
    if args.bits == "auto":  # as python -m search --bits auto (its default)
        from search import rewarded_bits

        bits = tuple(rewarded_bits(setup.device.predictor, setup.space))
        print(f"bits auto: {', '.join(map(str, bits))}", flush=True)
    dist = latency_distribution(setup, n=2000, seed=1234, bits=bits)
    full = dist["arch,prune,bits"]
    budget = float(args.budget_ms) if args.budget_ms else choose_budget(setup, quantile=args.budget_quantile,
                                                                        bits=bits)[0]
    size_ref = largest_size(setup.space)
    print(f"budget {budget:g} ms: {np.mean(full <= budget):.0%} of random candidates feasible; "
          f"latency range {full.min():.3f}-{full.max():.3f} ms; size reference {size_ref} bytes", flush=True)
    res: dict[str, Any] = {
        "experiment": "search_baselines",
        "command": "python experiments/search_baselines.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"space": args.space, "data": args.data, "bits": None if bits is None else list(bits),
                   "trials": args.trials, "seeds": args.seeds,
                   "proxy_epochs": args.proxy_epochs, "proxy_samples": args.proxy_samples,
                   "teacher_epochs": args.teacher_epochs, "budget_quantile": None if args.budget_ms else args.budget_quantile},
        "methods": args.methods,
        "budget_ms": budget,
        "budget_feasible_share_random": float(np.mean(full <= budget)),
        "latency_ms_of_random_candidates": {
            parts: {**{k: v for k, v in percentile_summary(lat).items()},
                    "feasible_share": float(np.mean(lat <= budget))} for parts, lat in dist.items()},
        "hypervolume": {"objectives": ["1 - accuracy", "latency_ms / budget_ms", "size_bytes / size_ref_bytes"],
                        "reference_point": [1.0, 1.0, 1.0], "size_ref_bytes": size_ref},
        "teacher": {"val_accuracy": setup.teacher.val_accuracy, "test_accuracy": setup.teacher.test_accuracy},
        "cpu_count": __import__("os").cpu_count(),
        "loadavg_start": start_load,
        "runs": [],
    }
    from tqdm.auto import tqdm

    jobs = [(seed, m) for seed in args.seeds for m in args.methods]
    bar = tqdm(jobs, desc="runs", unit="run")
    for seed, method in bar:
        bar.set_postfix_str(f"{method} seed {seed}")
        evaluator = ProxyEvaluator(setup.data.train.subset(args.proxy_samples), setup.data.val, setup.teacher.model,
                                   epochs=args.proxy_epochs, seed=seed)
        t0, l0 = time.perf_counter(), loadavg()
        if method == "uniform-int8":
            rows = run_uniform(setup, budget_ms=budget, evaluator=evaluator)
        else:
            rows = run_optuna_method(setup, method, seed=seed, trials=args.trials, budget_ms=budget,
                                     evaluator=evaluator, bits=bits)
        run = {"method": method, "seed": seed, "seconds": time.perf_counter() - t0, "loadavg_start": l0,
               "loadavg_end": loadavg(), "trials": rows,
               "hypervolume": hv_curve(rows, budget_ms=budget, size_ref=size_ref),
               "best_feasible_accuracy": best_feasible(rows)}
        res["runs"].append(run)
        tqdm.write(f"{method:12s} seed {seed}: best feasible {run['best_feasible_accuracy']}, "
                   f"hv {run['hypervolume'][-1]:.4f}, {run['seconds']:.0f} s")
        res["loadavg_end"] = loadavg()
        res["seconds"] = time.perf_counter() - start
        res["summary"] = summarise(res)
        write_json(out / "search_baselines.json", res)  # after every run: a stop leaves what finished
    write_csv(res, out / "search_baselines.csv")
    (out / "search_baselines.md").write_text(markdown(res), encoding="utf-8")
    plot(res, out / "hypervolume_vs_trials.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
