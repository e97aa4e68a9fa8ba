"""Zero biases in an untrained export, and what ONNX Runtime makes of them (why ``space.onnx`` draws BatchNorm statistics).

An untrained candidate (``space.build(candidate)``, the models a profile times for calibration and the held-out
models) has BatchNorm at its initial statistics, so every bias folded into its convolutions is zero. ONNX
Runtime's optimiser shares equal constants; in a float16 model the shared bias is then read through a runtime
``Cast``, and a convolution whose bias is not a constant stays off the channel-blocked (NCHWc) path. A trained
model has distinct biases and never shows this. Since 2026-12-04 ``space.onnx(candidate)`` exports untrained
candidates with drawn BatchNorm statistics (``spaces._base._drawn_statistics``); this experiment times, side by
side, the old export (``space.onnx(candidate, model=space.build(candidate))``: zero biases) and the new one, for
candidates of each space at one bit width in every layer (32, 16, 8, 4) and at random widths per layer.

For each: the convolutions ONNX Runtime's optimised graph runs with a bias behind a ``Cast`` (off the blocked
path), and the latency of both exports under the protocol (``latency_models.measure_interleaved``, all
models of one round in one worker, ``--rounds`` rounds, median).

    python experiments/shared_bias.py --input-size 128 --rounds 5

Run it alone on the machine. Writes ``experiments/results/shared_bias.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SPACES = ("mobilenet", "shufflenet", "fbnet")
WIDTHS = (32, 16, 8, 4, None)  # None: a random width per layer


def _off_blocked_path(proto, folder: pathlib.Path) -> int:
    """Convolutions of ONNX Runtime's optimised graph whose bias comes from a Cast (they are not blocked)."""
    import onnx
    import onnxruntime as ort

    path = folder / "optimized.onnx"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(path)
    ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(path)).graph
    cast_out = {o for n in graph.node if n.op_type == "Cast" for o in n.output}
    return sum(1 for n in graph.node if n.op_type in ("Conv", "FusedConv") and len(n.input) > 2
               and n.input[2] in cast_out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2, help="candidates per (space, width)")
    ap.add_argument("--name", default="shared_bias")
    args = ap.parse_args()
    if args.rounds < 1 or args.seeds < 1:
        raise SystemExit(f"error: --rounds={args.rounds}, --seeds={args.seeds}; allowed: 1 or more")
    import torch

    import spaces
    from latency_models import PROTOCOL_NAME, measure_interleaved

    torch.set_num_threads(1)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load0, t0 = loadavg(), time.time()
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        for name in SPACES:
            space = spaces.get_space(name, input_size=args.input_size)
            for width in WIDTHS:
                for seed in range(args.seeds):
                    rng = np.random.default_rng(1000 + seed)
                    cand = space.sample(rng) if width is None else space.sample(rng, bits=(width,))
                    old = space.onnx(cand, model=space.build(cand))  # the export before: zero biases
                    new = space.onnx(cand)
                    paths = []
                    for tag, proto in (("zero", old), ("drawn", new)):
                        p = folder / f"{name}_{width}_{seed}_{tag}.onnx"
                        p.write_bytes(proto.SerializeToString())
                        paths.append(str(p))
                    models.append({"space": name, "bits": width or "random", "seed": seed, "paths": paths,
                                   "off_blocked_zero": _off_blocked_path(old, folder),
                                   "off_blocked_drawn": _off_blocked_path(new, folder)})
        flat = [p for m in models for p in m["paths"]]
        lat = []
        rng = np.random.default_rng(0)
        for r in range(args.rounds):
            order = rng.permutation(len(flat))
            res = measure_interleaved([flat[i] for i in order], threads=1)
            row = np.empty(len(flat))
            row[order] = [t.latency_ms for t in res]
            lat.append(row)
            print(f"round {r}: reference {res[0].reference_ms:.4f} ms, load {loadavg()[0]}", flush=True)
    med = np.median(np.array(lat), axis=0)
    for i, m in enumerate(models):
        m["latency_ms_zero"], m["latency_ms_drawn"] = float(med[2 * i]), float(med[2 * i + 1])
        m["ratio_zero_over_drawn"] = m["latency_ms_zero"] / m["latency_ms_drawn"]
        del m["paths"]
    out = {"command": f"python experiments/shared_bias.py --input-size {args.input_size} --rounds {args.rounds}"
                      + (f" --seeds {args.seeds}" if args.seeds != 2 else "")
                      + (f" --name {args.name}" if args.name != "shared_bias" else ""),
           "started_utc": started, "seconds": time.time() - t0, "loadavg_before": load0, "loadavg_after": loadavg(),
           "protocol": PROTOCOL_NAME, "models": models, "rounds_latency_ms": [r.tolist() for r in lat]}
    write_json(RESULTS / f"{args.name}.json", out)
    lines = [f"# Zero biases in an untrained export ({args.name})", "",
             f"Command: `{out['command']}`  ",
             f"Started {started}, {out['seconds'] / 60:.1f} min; load average before / after: {load0} / "
             f"{out['loadavg_after']} on 2 shared cores; protocol {out['protocol']}, every round one worker timing "
             "all models interleaved, median of the rounds. `zero`: the export before (initial BatchNorm statistics, "
             "every folded bias zero); `drawn`: `space.onnx(candidate)` now. Off the blocked path: convolutions of "
             "ONNX Runtime's optimised graph whose bias comes from a Cast.", "",
             "| space | bits | seed | off the blocked path: zero / drawn | ms zero | ms drawn | zero / drawn |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in models:
        lines.append(f"| {m['space']} | {m['bits']} | {m['seed']} | {m['off_blocked_zero']} / {m['off_blocked_drawn']} | "
                     f"{m['latency_ms_zero']:.3f} | {m['latency_ms_drawn']:.3f} | {m['ratio_zero_over_drawn']:.2f} |")
    same = [m["ratio_zero_over_drawn"] for m in models if m["off_blocked_zero"] == m["off_blocked_drawn"]]
    diff = [m["ratio_zero_over_drawn"] for m in models if m["off_blocked_zero"] != m["off_blocked_drawn"]]
    lines += ["", f"Models whose graphs differ (convolutions off the blocked path with zero biases): {len(diff)}, "
              f"zero / drawn {min(diff, default=float('nan')):.2f}-{max(diff, default=float('nan')):.2f} "
              f"(median {np.median(diff) if diff else float('nan'):.2f}); the others: {len(same)}, "
              f"{min(same, default=float('nan')):.2f}-{max(same, default=float('nan')):.2f} (median "
              f"{np.median(same) if same else float('nan'):.2f}): the timing's noise."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
