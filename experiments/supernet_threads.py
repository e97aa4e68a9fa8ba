"""How long one supernet epoch takes on one torch thread and on all of them.

``python -m search --supernet-epochs E`` trains the space's supernet alone, before any trial (and the final
fine-tune alone, after them), so it runs them on all of torch's threads; each trial's proxy keeps one thread
(several trials may run at once). This times ``search.train_supernet`` for one epoch of the MobileNet space's
supernet on ``shapes`` (2,000 training images) at ``--input-size`` px, with random teacher logits (the time does
not depend on them), alternately on one thread and on torch's default (every core), ``--repeats`` times each in
the order 1, all, all, 1, 1, all, ... (so a drifting machine weighs on both alike), and reports each setting's
median and the ratio of the medians.

    python experiments/supernet_threads.py --repeats 3 --name supernet_threads
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from search import load_data, train_supernet  # noqa: E402
from spaces import Supernet, get_space  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def _order(repeats: int) -> list[int | None]:
    """1, all, all, 1, 1, all, ...: each setting ``repeats`` times, alternating in pairs."""
    out: list[int | None] = []
    for i in range(repeats):
        out += [1, None] if i % 2 == 0 else [None, 1]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per setting (default 3)")
    ap.add_argument("--input-size", type=int, default=16, help="image side in pixels (default 16)")
    ap.add_argument("--space", default="mobilenet", help="student space with a supernet (default mobilenet)")
    ap.add_argument("--name", default="supernet_threads", help="results file stem under experiments/results/")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats} must be >= 1")
    data = load_data("shapes", input_size=args.input_size)
    space = get_space(args.space, num_classes=data.num_classes, input_size=args.input_size, in_channels=3)
    x, y = data.train.x, data.train.y
    logits = torch.randn(len(x), data.num_classes, generator=torch.Generator().manual_seed(0))
    all_threads = torch.get_num_threads()
    runs: list[dict[str, object]] = []
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    for threads in _order(args.repeats):
        supernet = Supernet(space, seed=0)
        t0 = time.perf_counter()
        train_supernet(supernet, (x, y), logits, epochs=1, threads=threads)
        seconds = time.perf_counter() - t0
        runs.append({"threads": threads if threads is not None else all_threads, "default": threads is None,
                     "seconds": round(seconds, 2), "load_average": round(os.getloadavg()[0], 2)})
        print(f"{runs[-1]['threads']} thread(s): {seconds:.1f} s", flush=True)
    one = statistics.median(r["seconds"] for r in runs if not r["default"])
    every = statistics.median(r["seconds"] for r in runs if r["default"])
    result = {"space": args.space, "input_size": args.input_size, "data": "shapes", "train_images": len(x),
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "default_threads": all_threads, "started_utc": started,
              "runs": runs, "median_seconds_1_thread": one, "median_seconds_all_threads": every,
              "ratio": round(one / every, 3)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [f"# One supernet epoch on 1 thread and on all {all_threads}",
             "",
             f"`python experiments/supernet_threads.py --repeats {args.repeats} --name {args.name}`, started "
             f"{started}; {args.space} at {args.input_size} px on shapes ({len(x)} training images), torch "
             f"{torch.__version__}, {os.cpu_count()} cores.",
             "",
             "| run | threads | seconds | load average |", "| --- | --- | --- | --- |"]
    lines += [f"| {i + 1} | {r['threads']} | {r['seconds']} | {r['load_average']} |" for i, r in enumerate(runs)]
    lines += ["", f"Median: {one:.1f} s on 1 thread, {every:.1f} s on {all_threads}: **{one / every:.2f}x**."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
