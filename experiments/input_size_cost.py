"""What ``--input-size`` costs on this CPU: latency of the same networks at several input sizes.

For each input size, the default candidate of each student space (10 classes, 3 channels, the stem stride
the space picks for that size: 1 up to 64 pixels, 2 above) and the built-in teacher are exported as the
search exports them and timed with ONNX Runtime (1 thread, batch 1), interleaved in rounds, each model's
fastest round median (``search`` times its comparisons the same way). The ratio to the 32-pixel model is
what a user pays for a larger input.

    python experiments/input_size_cost.py --sizes 32,64,96,224 --out experiments/results/input_size_cost.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments._common import loadavg, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64,96,224")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "input_size_cost.json")
    args = ap.parse_args()
    import torch

    from latency_models import cpu_name, measure_onnx
    from spaces import builtin_teacher, get_space
    from spaces.compress import export_onnx

    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = pathlib.Path(tempfile.mkdtemp())
    models: dict[tuple[str, int], pathlib.Path] = {}
    for size in sizes:
        for name in ("mobilenet", "shufflenet", "fbnet"):
            space = get_space(name, num_classes=10, input_size=size)
            path = work / f"{name}-{size}.onnx"
            space.onnx(space.candidate(), path=str(path))
            models[(name, size)] = path
        path = work / f"teacher-{size}.onnx"
        export_onnx(builtin_teacher(in_channels=3, num_classes=10), (3, size, size), str(path))
        models[("teacher", size)] = path
    load_before = loadavg()
    best = {key: float("inf") for key in models}
    for _ in range(args.rounds):
        for key, path in models.items():
            best[key] = min(best[key], measure_onnx(str(path), threads=1))
    rows = []
    for (name, size), ms in best.items():
        base = best[(name, sizes[0])]
        rows.append({"model": name, "input_size": size, "latency_ms": round(ms, 4), "ratio_to_smallest": round(ms / base, 2)})
    write_json(args.out, {"command": "python experiments/input_size_cost.py --sizes " + args.sizes,
                          "cpu": cpu_name(), "threads": 1, "rounds": args.rounds,
                          "loadavg_before": load_before, "loadavg_after": loadavg(), "rows": rows})
    for r in rows:
        print(f"{r['model']:<11} {r['input_size']:>4} px  {r['latency_ms']:>9.3f} ms  {r['ratio_to_smallest']:>6.2f}x")
    for p in models.values():
        os.remove(p)


if __name__ == "__main__":
    main()
