"""The noise floor of the project's timing protocol (named in each result): the same models re-timed in fresh workers.

Models of realistic size (0.4-50 ms on one core): candidates of the built-in spaces at 32 to 224 px,
exported once (``--export``, torch needed). Then (``--time``, alone on the machine) ``--rounds``
fresh worker processes each time all of them, interleaved (``latency_models.measure_interleaved``); for
every pair of rounds and every model, the relative difference of the two latencies, raw and put on the
reference's scale (``latency / reference``). Beside it, the old in-process protocol (median of 50 runs after
10 warm-up, one session per model, in this process where torch is loaded): ``latency_models.measure_onnx``.

    python experiments/timing_noise.py --export
    python experiments/timing_noise.py --time --rounds 6

Writes ``experiments/results/timing_noise.json`` (the ONNX files go to ``experiments/results/timing_noise/``,
not committed).

``--set 32px`` takes 30 random candidates at 32x32 instead (10 per space, 0.2-2 ms: the regime of
``experiments/predictor_local.py --input-size 32``), and ``--batch 4`` times them four at a time in shuffled
batches, each batch in its own worker with its own reference timing, as the profiler times its model rows.
Every result also gives the shares with the latencies put on the reference's scale with exponents 1 to 4
(``latency * (reference0 / reference) ** b``: ``LatencyPredictor.fit`` chooses ``b`` from a table):

    python experiments/timing_noise.py --set 32px --export
    python experiments/timing_noise.py --set 32px --time --rounds 6 --batch 4 --name timing_noise_32px
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
WORK = RESULTS / "timing_noise"
#: (space, input size, seed of the random candidate); seed None: the space's default candidate.
MODELS = [("fbnet", 32, 1), ("fbnet", 48, 10), ("fbnet", 64, 7), ("fbnet", 96, 3), ("fbnet", 128, 8),
          ("fbnet", 160, None), ("mobilenet", 160, 5), ("mobilenet", 224, None), ("mobilenet", 224, 9),
          ("shufflenet", 224, 6)]
#: the models of ``--set``
SETS = {"mixed": MODELS,
        "32px": [(space, 32, seed) for space in ("fbnet", "mobilenet", "shufflenet") for seed in range(100, 110)]}
#: exponents of the reference scaling reported beside the raw shares
EXPONENTS = (1.0, 2.0, 3.0, 3.5, 4.0)


def export(models: list) -> None:
    import torch

    import spaces

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    for name, size, seed in models:
        path = WORK / f"{name}_{size}_{seed}.onnx"
        if path.exists():
            continue
        space = spaces.get_space(name, input_size=size)
        cand = space.candidate() if seed is None else space.sample(np.random.default_rng(seed))
        path.write_bytes(space.onnx(cand).SerializeToString())
        print("exported", path.name)


def _shares(diffs: list[float]) -> dict[str, float]:
    a = np.abs(np.asarray(diffs))
    return {"n": int(a.size), "within_2": float((a <= 0.02).mean()), "within_5": float((a <= 0.05).mean()),
            "within_10": float((a <= 0.10).mean()), "median_abs": float(np.median(a)), "max_abs": float(a.max())}


def timing(rounds: int, overrides: dict, name: str, models: list, set_name: str, batch: int | None) -> None:
    import onnxruntime

    from latency_models import cpu_name, measure_interleaved, measure_onnx

    paths = [WORK / f"{space}_{size}_{seed}.onnx" for space, size, seed in models]
    if not all(p.exists() for p in paths):
        raise SystemExit(f"run with --set {set_name} --export first")
    load0 = os.getloadavg()
    new, old = [], []
    rng = np.random.default_rng(0)
    t0 = time.time()
    for r in range(rounds):
        lat, ref = np.empty(len(paths)), np.empty(len(paths))
        order = rng.permutation(len(paths)) if batch else np.arange(len(paths))
        for chunk in np.array_split(order, -(-len(paths) // batch)) if batch else [order]:
            res = measure_interleaved([str(paths[i]) for i in chunk], timing=overrides)
            lat[chunk] = [t.latency_ms for t in res]
            ref[chunk] = [t.reference_ms for t in res]
        new.append({"t_s": time.time() - t0, "latency_ms": lat.tolist(), "reference_ms": ref.tolist()})
        old.append([measure_onnx(str(p)) for p in paths])
        print(f"round {r}: reference {np.median(ref):.4f} ms (median), "
              + ", ".join(f"{v:.2f}" for v in lat), flush=True)
    raw, legacy = [], []
    scaled: dict[float, list] = {b: [] for b in EXPONENTS}
    for a, b in itertools.combinations(range(rounds), 2):
        la, lb = np.array(new[a]["latency_ms"]), np.array(new[b]["latency_ms"])
        ra, rb = np.array(new[a]["reference_ms"]), np.array(new[b]["reference_ms"])
        raw += list(lb / la - 1)
        for e in EXPONENTS:
            scaled[e] += list((lb / rb**e) / (la / ra**e) - 1)
        legacy += list(np.array(old[b]) / np.array(old[a]) - 1)
    out = {
        "command": f"python experiments/timing_noise.py --set {set_name} --time --rounds {rounds}"
                   + (f" --batch {batch}" if batch else "")
                   + "".join(f" --{k.replace('_', '-')} {v}" for k, v in overrides.items()) + f" --name {name}",
        "timing_overrides": overrides, "batch": batch,
        "cpu": cpu_name(), "onnxruntime": onnxruntime.__version__, "threads": 1,
        "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()), "seconds": time.time() - t0,
        "models": [p.stem for p in paths],
        "mean_latency_ms": [float(np.mean([n["latency_ms"][i] for n in new])) for i in range(len(paths))],
        "pairs": "every pair of rounds x every model",
        "interleaved_raw": _shares(raw), "interleaved_reference_scaled": _shares(scaled[1.0]),
        "interleaved_reference_scaled_by_exponent": {f"{e:g}": _shares(v) for e, v in scaled.items()},
        "in_process_median": _shares(legacy), "rounds": new, "in_process_rounds": old,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    rows = [("interleaved_raw", out["interleaved_raw"]),
            *((f"reference scaled, exponent {e}", v) for e, v in out["interleaved_reference_scaled_by_exponent"].items()),
            ("in_process_median", out["in_process_median"])]
    for key, s in rows:
        print(f"{key:30s} n={s['n']} ±2%: {100 * s['within_2']:.1f}%  ±5%: {100 * s['within_5']:.1f}%  "
              f"±10%: {100 * s['within_10']:.1f}%  median |diff| {100 * s['median_abs']:.2f}%  max {100 * s['max_abs']:.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--blocks", type=int, default=None, help="protocol override (default: the protocol's 7)")
    ap.add_argument("--quantile", type=float, default=None, help="protocol override (default: the protocol's 0.2)")
    ap.add_argument("--block-ms", type=float, default=None, help="protocol override (default: the protocol's 10)")
    ap.add_argument("--name", default="timing_noise", help="results file name under experiments/results/")
    ap.add_argument("--set", choices=sorted(SETS), default="mixed", help="the models (default: mixed sizes)")
    ap.add_argument("--batch", type=int, default=None,
                    help="time the models this many at a time in shuffled batches (default: all in one worker)")
    args = ap.parse_args()
    if args.batch is not None and args.batch < 1:
        raise SystemExit(f"--batch {args.batch}: must be a positive integer")
    models = SETS[args.set]
    if args.export:
        export(models)
    if args.time:
        overrides = {k: v for k, v in (("blocks", args.blocks), ("quantile", args.quantile),
                                       ("block_ms", args.block_ms)) if v is not None}
        timing(args.rounds, overrides, args.name, models, args.set, args.batch)


if __name__ == "__main__":
    main()
