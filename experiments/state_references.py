"""Does a memory-bound reference workload track the machine's state where the protocol's reference does not?

The timing protocol (``karumi-interleaved/2``, now ``/3``) times a small reference model beside every measurement and puts
rows taken minutes apart on one scale by it (``LatencyPredictor.on_scale``). That reference holds a few kilobytes
of weights: it stays in the cache whatever else the machine runs. ``experiments/weight_cache.py`` found
weight-bound convolutions running 1.5-3.2x slower once a model's weights pass the cache, and models with many
megabytes of weights predicted worst in the machine's slow state. If the slow state is partly a shared cache
taken by other tenants, a second reference that streams its weights from memory should see it.

Each round a fresh protocol worker (``latency_models.measure_interleaved``: ONNX-Runtime-only process,
interleaved blocks, 20 % quantile, 1 thread) times, together: a *memory reference* (a chain of 16 weight-bound
1x1 convolutions, 512 channels at 2x2, 16.8 MB of weights), a *cached chain* (4 of them, 4.2 MB), and
torchvision exports from 1.4 to 44.7 MB of weights; the protocol's own reference is timed in every block as
always. Rounds are spread over several minutes (``--pause`` seconds apart) so that they land in different states.
Reported per model: the spread of its log latency over rounds as measured, after a fit on the protocol's
reference alone (``log t = a + b log ref``), and after a fit on both references (``+ c log memory_ref``), as the
residual standard deviation and the share of rounds within +-2 / +-5 % of the fit (in-sample; leave-one-out in
the JSON).

    python experiments/state_references.py --rounds 40 --pause 5 --name state_references
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

from experiments._common import loadavg, write_json  # noqa: E402
from latency_models import measure_interleaved  # noqa: E402
from experiments.weight_cache import chain  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TORCHVISION = ("shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v2", "efficientnet_b0", "resnet18")


def _loo_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out residuals of the least-squares fit of ``y`` on ``x`` (with an intercept)."""
    a = np.column_stack([np.ones(len(y)), x])
    hat = a @ np.linalg.pinv(a)
    return (y - hat @ y) / (1.0 - np.diag(hat))


def _spread(res: np.ndarray) -> dict:
    return {"std_pct": float(np.std(res) * 100), "within_2": float(np.mean(np.abs(np.expm1(res)) <= 0.02)),
            "within_5": float(np.mean(np.abs(np.expm1(res)) <= 0.05))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between rounds")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--name", default="state_references")
    args = ap.parse_args()
    import torch
    import torchvision

    from spaces.compress import export_onnx

    torch.set_num_threads(1)
    t0, loads = time.time(), [loadavg()]
    with tempfile.TemporaryDirectory(prefix="state-refs-") as tmp:
        folder = pathlib.Path(tmp)
        names, paths = ["memory reference (16.8 MB)", "cached chain (4.2 MB)"], []
        for count in (16, 4):
            path = folder / f"chain_{count}.onnx"
            path.write_bytes(chain(512, 1, 2, 1, count, seed=count).SerializeToString())
            paths.append(str(path))
        weights_mb = [16 * 1.05, 4 * 1.05]
        for name in TORCHVISION:
            model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
            path = folder / f"{name}.onnx"
            export_onnx(model, (3, args.input_size, args.input_size), str(path))
            names.append(name)
            paths.append(str(path))
            weights_mb.append(sum(p.numel() for p in model.parameters()) * 4 / 1e6)
        times = np.zeros((args.rounds, len(paths)))
        refs = np.zeros(args.rounds)
        stamps = []
        for r in range(args.rounds):
            order = np.random.default_rng(r).permutation(len(paths))
            timings = measure_interleaved([paths[j] for j in order], threads=1)
            for j, t in zip(order, timings):
                times[r, j] = t.latency_ms
            refs[r] = float(np.median([t.reference_ms for t in timings]))
            stamps.append(round(time.time() - t0, 1))
            if r % 10 == 9:
                loads.append(loadavg())
            if r + 1 < args.rounds:
                time.sleep(args.pause)
    loads.append(loadavg())
    log_t, log_ref, log_mem = np.log(times), np.log(refs), np.log(times[:, 0])
    rows, lines = [], []
    for j in range(2, len(paths)):
        y = log_t[:, j]
        raw = y - y.mean()
        one = _loo_residuals(log_ref[:, None], y)
        both = _loo_residuals(np.column_stack([log_ref, log_mem]), y)
        coef_both = np.linalg.lstsq(np.column_stack([np.ones(len(y)), log_ref, log_mem]), y, rcond=None)[0]
        row = {"model": names[j], "weights_mb": weights_mb[j], "median_ms": float(np.median(times[:, j])),
               "as_measured": _spread(raw), "protocol_reference": _spread(one), "both_references": _spread(both),
               "exponents_both": coef_both[1:].tolist(),
               "corr_with_reference": float(np.corrcoef(y, log_ref)[0, 1]),
               "corr_with_memory_reference": float(np.corrcoef(y, log_mem)[0, 1])}
        rows.append(row)
        s0, s1, s2 = row["as_measured"], row["protocol_reference"], row["both_references"]
        lines.append(f"| {names[j]} | {weights_mb[j]:.1f} | {row['median_ms']:.3f} | {s0['std_pct']:.1f} % | "
                     f"{s1['std_pct']:.1f} % ({s1['within_5']:.0%}) | {s2['std_pct']:.1f} % ({s2['within_5']:.0%}) | "
                     f"{coef_both[1]:+.2f} / {coef_both[2]:+.2f} |")
    minutes = (time.time() - t0) / 60
    command = ("python experiments/state_references.py " + " ".join(sys.argv[1:])).strip()
    corr = float(np.corrcoef(log_ref, log_mem)[0, 1])
    out = {"command": command, "finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
           "minutes": minutes, "load_average": loads, "round_seconds": stamps, "reference_ms": refs.tolist(),
           "memory_reference_ms": times[:, 0].tolist(), "cached_chain_ms": times[:, 1].tolist(),
           "corr_reference_memory_reference": corr, "models": rows, "times_ms": times.tolist(), "names": names}
    write_json(RESULTS / f"{args.name}.json", out)
    md = [f"# A memory-bound reference beside the protocol's reference ({args.name})", "",
          f"Command: `{command}`  ",
          f"Finished {out['finished_utc']} after {minutes:.1f} min, {args.rounds} rounds; load average (1/5/15 min): "
          f"{loads} on 2 shared cores. Protocol reference {np.min(refs):.3f}-{np.max(refs):.3f} ms (median "
          f"{np.median(refs):.3f}); memory reference {times[:, 0].min():.3f}-{times[:, 0].max():.3f} ms (median "
          f"{np.median(times[:, 0]):.3f}); correlation of their logs over rounds {corr:.2f}.", "",
          "Spread of each model's log latency over rounds (standard deviation, leave-one-out residuals of the fit; in "
          "brackets the share of rounds within ±5 %), and the fitted exponents on (protocol reference / memory "
          "reference):", "",
          "| model | weights MB | median ms | as measured | fit on the protocol's reference | fit on both | exponents |",
          "| --- | --- | --- | --- | --- | --- | --- |", *lines, ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
