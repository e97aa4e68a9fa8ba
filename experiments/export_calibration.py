"""How long exporting a calibration model takes, and whether the noise its ranges are set from changes its speed.

A profile's whole models, the held-out models of the experiments and the search's timing exports are untrained
candidates exported by ``SearchSpace.onnx(candidate)``; a candidate with 4- or 8-bit layers gets its activation
ranges from random noise first (the graph is the deployable QDQ graph, the accuracy meaningless). Until
2026-12-07 that noise was 4 batches of 8 images, run through the fake-quantised PyTorch model with every activation
kept: at 224 px an FBNet candidate took 13-14 s to export, longer than timing it, and the spaces took turns in the
profile's whole-model stage, so FBNet's exports ate most of its minutes. The ranges set the Q/DQ scales and zero
points, not the graph; this script checks that, and measures what one image of noise saves:

1. export seconds per candidate, per space and input size, with the old noise (``calibration=`` 4 x 8 images,
   seed 0, as before) and the default (one image), the same candidates, alternating;
2. for two candidates per space with quantised layers, both exports: their node sequences, and their latencies
   timed together in one worker of the protocol (old and new side by side, the order swapped every round), as
   the median of new / old over ``--rounds`` rounds.

    python experiments/export_calibration.py --sizes 32,128,224 --n 4 --rounds 5

Writes ``experiments/results/NAME.json`` and ``.md``; run it alone on the machine (the latencies are ratios taken
side by side, the export seconds are not).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402

from latency_models import cpu_name, measure_interleaved  # noqa: E402
from spaces import get_space  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SPACES = ("fbnet", "mobilenet", "shufflenet")


def _old_noise(space):
    """The noise the timing exports were calibrated on until 2026-12-07: 4 batches of 8 images, seed 0."""
    import torch

    gen = torch.Generator().manual_seed(0)
    return [torch.randn((8, *space.input_shape), generator=gen) for _ in range(4)]


def _quantised(space, cand) -> bool:
    return any(b <= 8 for b in space.module_bits(cand).values())


def _export_seconds(space, cands, first: str) -> dict:
    """Seconds per export of ``cands`` with each noise, alternating which goes first per candidate."""
    secs: dict[str, list[float]] = {"old": [], "new": []}
    for i, cand in enumerate(cands):
        order = ("old", "new") if (i % 2 == 0) == (first == "old") else ("new", "old")
        for mode in order:
            t0 = time.perf_counter()
            space.onnx(cand, calibration=_old_noise(space)) if mode == "old" else space.onnx(cand)
            secs[mode].append(time.perf_counter() - t0)
    return {m: {"median_s": float(np.median(v)), "mean_s": float(np.mean(v)), "seconds": v} for m, v in secs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="32,128,224", help="input sizes (px), comma-separated")
    ap.add_argument("--n", type=int, default=4, help="quantised candidates per space and size whose export is timed")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of timing the paired exports")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="export_calibration")
    args = ap.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}; allowed: comma-separated input sizes in px, e.g. 32,128,224")
    if not sizes or min(sizes) < 16:
        ap.error(f"--sizes {args.sizes!r}; allowed: input sizes of at least 16 px")
    if args.n < 2 or args.rounds < 2:
        ap.error(f"--n {args.n} --rounds {args.rounds}; allowed: at least 2 each")
    warnings.simplefilter("ignore")
    out: dict = {"command": "python experiments/export_calibration.py " + " ".join(sys.argv[1:]),
                 "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "cpu_model": cpu_name(), "load_average_before": loadavg(), "sizes": {}}
    t_start = time.time()
    for size in sizes:
        res: dict = {"export": {}, "pairs": []}
        pairs = []
        for j, name in enumerate(SPACES):
            space = get_space(name, input_size=size)
            rng = np.random.default_rng([args.seed, size, j])
            cands = []
            while len(cands) < args.n:
                c = space.sample(rng)
                if _quantised(space, c):
                    cands.append(c)
            space.onnx(cands[0])  # warm (imports, first trace)
            res["export"][name] = _export_seconds(space, cands, "old" if j % 2 == 0 else "new")
            for c in cands[:2]:
                old, new = space.onnx(c, calibration=_old_noise(space)), space.onnx(c)
                pairs.append({"model": f"{name}_{len(pairs)}", "old": old, "new": new,
                              "same_graph": [n.op_type for n in old.graph.node] == [n.op_type for n in new.graph.node]})
            print(f"{size} px {name}: export old {res['export'][name]['old']['median_s']:.2f} s, "
                  f"new {res['export'][name]['new']['median_s']:.2f} s", flush=True)
        ratios: dict[str, list[float]] = {p["model"]: [] for p in pairs}
        for r in range(args.rounds):
            models = [m for p in pairs for m in ((p["old"], p["new"]) if r % 2 == 0 else (p["new"], p["old"]))]
            t = measure_interleaved(models)
            for i, p in enumerate(pairs):
                a, b = t[2 * i].latency_ms, t[2 * i + 1].latency_ms
                old_ms, new_ms = (a, b) if r % 2 == 0 else (b, a)
                ratios[p["model"]].append(new_ms / old_ms)
                if r == 0:
                    p["old_ms"] = old_ms
        for p in pairs:
            v = ratios[p["model"]]
            res["pairs"].append({"model": p["model"], "same_graph": p["same_graph"], "first_old_ms": p["old_ms"],
                                 "ratio_median": float(np.median(v)), "ratios": v})
        every = [x for v in ratios.values() for x in v]
        res["ratio_median_all"] = float(np.median(every))
        res["pair_medians_within_2pct"] = float(np.mean([abs(np.median(v) - 1) <= 0.02 for v in ratios.values()]))
        print(f"{size} px: same graphs {sum(p['same_graph'] for p in res['pairs'])}/{len(pairs)}, "
              f"new / old latency median {res['ratio_median_all']:.4f}", flush=True)
        out["sizes"][str(size)] = res
    out["minutes"] = round((time.time() - t_start) / 60.0, 1)
    out["load_average_after"] = loadavg()
    write_json(RESULTS / f"{args.name}.json", out)
    (RESULTS / f"{args.name}.md").write_text("\n".join(markdown(out)) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / args.name}.json and .md")


def markdown(out: dict) -> list[str]:
    lines = ["# Exporting a calibration model: the noise its ranges come from (export_calibration)", "",
             f"Command: `{out['command']}`  ",
             f"Run {out['started_utc']}, {out['minutes']} min, on {out['cpu_model']}; load average before / after "
             f"{out['load_average_before']} / {out['load_average_after']}. Old: ranges from 4 batches of 8 noise "
             "images (the default until 2026-12-07); new: from one (the default since). Export seconds are medians "
             "per candidate (quantised candidates only); latencies are new / old timed side by side in one worker, "
             "median over the rounds.", "",
             "| px | space | export old (s) | export new (s) | speed-up |", "| --- | --- | --- | --- | --- |"]
    for size, res in out["sizes"].items():
        for name, e in res["export"].items():
            o, n = e["old"]["median_s"], e["new"]["median_s"]
            lines.append(f"| {size} | {name} | {o:.2f} | {n:.2f} | {o / n:.1f}x |")
    lines += ["", "| px | model | same node sequence | old latency (ms, first round) | new / old (median) |",
              "| --- | --- | --- | --- | --- |"]
    for size, res in out["sizes"].items():
        for p in res["pairs"]:
            lines.append(f"| {size} | {p['model']} | {'yes' if p['same_graph'] else 'no'} | {p['first_old_ms']:.3f} "
                         f"| {p['ratio_median']:.4f} |")
        lines.append(f"| {size} | all pairs | | | {res['ratio_median_all']:.4f} |")
    return lines


if __name__ == "__main__":
    main()
