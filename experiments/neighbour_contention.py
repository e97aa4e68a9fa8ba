"""What a busy neighbour core does to the protocol's timings, and what the reference workload sees of it.

The protocol (``karumi-interleaved/2``, since then ``/3``) times a small reference model beside every measurement, so that rows
taken minutes apart can be put on one scale. On this 2-core VM the same models re-timed minutes apart can
differ by 15-25 % even on the reference's scale (``timing_noise.py``, and the torchvision exports of
``predictor_local.py`` re-timed). This experiment makes the other core busy on purpose, with the kinds of work a
neighbour runs, and times the same models with each neighbour, interleaved:

- ``none``: nothing else running;
- ``stream``: a process copying a 64 MB array over and over (memory bandwidth and the shared L3 cache);
- ``l3``: a process copying an 8 MB array (the shared L3 cache, not the memory bus);
- ``compute``: a process in an integer loop (a core busy, no memory traffic).

Models: the nine torchvision exports of ``predictor_local.py`` at 128 px (0.5-12 ms), the ten models of the
spaces of ``timing_noise.py`` (32-224 px, 0.3-50 ms), and the protocol's reference model at its own 40 px and
at 80 and 160 px (the same layers on larger activations: candidate references that leave the core's caches).
Each round runs the four neighbours in a shuffled order; each measurement is one worker timing every model,
interleaved (``latency_models.measure_interleaved``). A model's slowdown under a neighbour is the median over
rounds of its latency over its latency with no neighbour in the same round. Beside it, each model's working set
(largest input + output + weight bytes of one kernel) and bytes moved per millisecond, from its kernels
(``latency_models.kernels_from_onnx``); and, where given (``--history RUN``), how much slower the exports
measured in the committed run ``RUN`` than with no neighbour now: which neighbour the real slow state resembles.

    python experiments/neighbour_contention.py --rounds 3 --history predictor_local_128_maxpool

Run it alone on the machine (it starts the neighbours itself). Writes
``experiments/results/neighbour_contention.json`` and ``.md``; the ONNX files go to
``experiments/results/neighbour_contention/`` (not committed).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import itertools  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _read, _torchvision  # noqa: E402
from timing_noise import MODELS  # noqa: E402

WORK = RESULTS / "neighbour_contention"
EXPORTS = ["mobilenet_v2", "shufflenet_v2_x1_0", "mnasnet1_0", "resnet18", "mobilenet_v3_small", "efficientnet_b0",
           "regnet_y_400mf", "mnasnet0_5", "shufflenet_v2_x0_5"]
#: the neighbours: Python code run in a process of its own on the other core while the models are timed
NEIGHBOURS = {
    "none": None,
    "stream": "import numpy as np\na = np.ones(8_000_000)\nb = np.empty_like(a)\nwhile True:\n    b[:] = a",
    "l3": "import numpy as np\na = np.ones(1_000_000)\nb = np.empty_like(a)\nwhile True:\n    b[:] = a",
    "compute": "x = 0\nwhile True:\n    x = (x * 3 + 1) % 1000003",
}
REFERENCE_SIDES = (80, 160)


def _models(size: int) -> tuple[list[str], list[pathlib.Path]]:
    import onnx
    import torch

    import spaces
    from latency_models import reference_model

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    names, paths = [f"{n}_{size}" for n in EXPORTS], _torchvision(EXPORTS, size, WORK)
    for space_name, side, seed in MODELS:
        path = WORK / f"{space_name}_{side}_{seed}.onnx"
        if not path.exists():
            space = spaces.get_space(space_name, input_size=side)
            cand = space.candidate() if seed is None else space.sample(np.random.default_rng(seed))
            path.write_bytes(space.onnx(cand).SerializeToString())
        names.append(path.stem)
        paths.append(path)
    for side in REFERENCE_SIDES:
        path = WORK / f"reference_{side}.onnx"
        model = reference_model()
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = side
        dims[3].dim_value = side
        onnx.save(model, str(path))
        names.append(path.stem)
        paths.append(path)
    return names, paths


def _footprint(model) -> dict[str, float]:
    """Bytes a model's kernels touch (an ONNX path or ``ModelProto``): the largest one kernel's input + output +
    weights, and the sum."""
    from latency_models import kernels_from_onnx

    per = []
    for k in kernels_from_onnx(model)[0]:
        elem = 1 if k.bits <= 8 else (2 if k.bits == 16 else 4)
        act = (int(np.prod(k.input_shape)) + int(np.prod(k.output_shape))) * elem
        per.append(act + float(k.weight_bytes))
    return {"working_set_bytes": float(max(per)), "bytes_moved": float(sum(per))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=128, help="input size of the torchvision exports")
    ap.add_argument("--history", default=None,
                    help="a committed predictor_local.py run whose torchvision.json timed the same exports")
    ap.add_argument("--name", default="neighbour_contention")
    args = ap.parse_args()
    if args.rounds < 2:
        raise SystemExit(f"error: --rounds={args.rounds}; allowed: 2 or more")
    from latency_models import PROTOCOL_NAME, measure_interleaved, reference_model, spearman

    names, paths = _models(args.size)
    feats = [_footprint(p) for p in paths]
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load0, t0 = loadavg(), time.time()
    lat: dict[str, list[list[float]]] = {h: [] for h in NEIGHBOURS}
    ref: dict[str, list[float]] = {h: [] for h in NEIGHBOURS}
    rng = np.random.default_rng(0)
    for r in range(args.rounds):
        for h in rng.permutation(list(NEIGHBOURS)):
            code = NEIGHBOURS[h]
            proc = subprocess.Popen([sys.executable, "-c", code]) if code else None
            try:
                if proc:
                    time.sleep(0.5)
                order = rng.permutation(len(paths))
                res = measure_interleaved([str(paths[i]) for i in order], threads=1)
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
            row = np.empty(len(paths))
            row[order] = [t.latency_ms for t in res]
            lat[h].append(row.tolist())
            ref[h].append(res[0].reference_ms)
            print(f"round {r} {h:8s} reference {res[0].reference_ms:.4f} ms, load {loadavg()[0]}", flush=True)
    seconds = time.time() - t0
    base = np.array(lat["none"])
    names_all = [*names, "reference_40 (the protocol's)"]
    slow = {}
    for h in NEIGHBOURS:
        ratio = np.array(lat[h]) / base
        ref_ratio = np.array(ref[h]) / np.array(ref["none"])
        slow[h] = [*np.median(ratio, axis=0).tolist(), float(np.median(ref_ratio))]
    none_ms = np.median(base, axis=0)
    history = {}
    if args.history:
        rows = _read(RESULTS / args.history, "torchvision.json").model_rows
        for r in rows:
            if r.source in names:
                history[r.source] = float(r.latency_ms / none_ms[names.index(r.source)])
    out = {
        "command": f"python experiments/neighbour_contention.py --rounds {args.rounds}"
                   + (f" --size {args.size}" if args.size != 128 else "")
                   + (f" --history {args.history}" if args.history else "")
                   + (f" --name {args.name}" if args.name != "neighbour_contention" else ""),
        "started_utc": started, "protocol": PROTOCOL_NAME, "seconds": seconds, "loadavg_before": load0, "loadavg_after": loadavg(),
        "neighbours": {h: c for h, c in NEIGHBOURS.items()},
        "models": names_all,
        "latency_ms_none": [*none_ms.tolist(), float(np.median(ref["none"]))],
        "slowdown": slow,
        "footprint": [*feats, _footprint(reference_model())],
        "history_run": args.history, "history_over_none": history,
        "rounds": {h: {"latency_ms": lat[h], "reference_ms": ref[h]} for h in NEIGHBOURS},
    }
    # how well the slowdown of each reference candidate stands for the models' (each neighbour, every model)
    cands = {"reference_40 (the protocol's)": len(names_all) - 1,
             **{f"reference_{s}": names.index(f"reference_{s}") for s in REFERENCE_SIDES}}
    models_only = [i for i, n in enumerate(names) if not n.startswith("reference_")]
    resid = {}
    for c, j in cands.items():
        errs = []
        for h in NEIGHBOURS:
            if h == "none":
                continue
            s = np.array(slow[h])
            errs += list(s[models_only] / s[j] - 1)
        e = np.abs(np.array(errs))
        resid[c] = {"within_2": float((e <= 0.02).mean()), "within_5": float((e <= 0.05).mean()),
                    "median_abs": float(np.median(e)), "max_abs": float(e.max())}
    e = np.abs(np.concatenate([np.array(slow[h])[models_only] - 1 for h in NEIGHBOURS if h != "none"]))
    resid["no reference"] = {"within_2": float((e <= 0.02).mean()), "within_5": float((e <= 0.05).mean()),
                             "median_abs": float(np.median(e)), "max_abs": float(e.max())}
    out["models_on_reference_scale"] = resid
    # the same neighbour, measured again: every pair of rounds x every model, raw and on each candidate's scale
    again: dict[str, dict] = {}
    for h in NEIGHBOURS:
        lat_h, ref_h = np.array(lat[h]), np.array(ref[h])
        scales = {"as measured": np.ones_like(ref_h), "reference_40 (the protocol's)": ref_h,
                  **{f"reference_{s}": lat_h[:, names.index(f"reference_{s}")] for s in REFERENCE_SIDES}}
        again[h] = {}
        for c, sc in scales.items():
            d = [(lat_h[b, models_only] / sc[b]) / (lat_h[a, models_only] / sc[a]) - 1
                 for a, b in itertools.combinations(range(len(lat_h)), 2)]
            e = np.abs(np.concatenate(d))
            again[h][c] = {"n": int(e.size), "within_2": float((e <= 0.02).mean()),
                           "within_5": float((e <= 0.05).mean()), "within_10": float((e <= 0.10).mean())}
    out["remeasured_same_neighbour"] = again
    stream = np.array(slow["stream"])[models_only] - 1
    ws = np.log([feats[i]["working_set_bytes"] for i in models_only])
    out["spearman_stream_slowdown_vs_working_set"] = float(spearman(stream, ws))
    if history:
        hi = [names.index(n) for n in history]
        hv = np.array([history[names[i]] for i in hi])
        out["spearman_history_vs"] = {h: float(spearman(hv, np.array(slow[h])[hi])) for h in NEIGHBOURS if h != "none"}
    write_json(RESULTS / f"{args.name}.json", out)
    _report(args.name, out)


def _report(name: str, out: dict) -> None:
    hs = [h for h in NEIGHBOURS if h != "none"]
    lines = [f"# A busy neighbour core and the protocol's timings ({name})", "",
             f"Command: `{out['command']}`  ",
             f"Started {out['started_utc']}, {out['seconds'] / 60:.1f} min; load average before / after: "
             f"{out['loadavg_before']} / {out['loadavg_after']} on 2 shared cores; every measurement one worker timing "
             f"all models interleaved (protocol {out.get('protocol', 'karumi-interleaved/2')}), the neighbour a process of its own. Slowdown: "
             "latency with the neighbour / latency with none in the same round, median over rounds.", "",
             "| model | ms, no neighbour | working set MB | " + " | ".join(f"{h} slowdown" for h in hs)
             + (" | committed run / now |" if out["history_over_none"] else " |"),
             "| --- | --- | --- | " + " | ".join("---" for _ in hs) + (" | --- |" if out["history_over_none"] else " |")]
    for i, n in enumerate(out["models"]):
        hist = out["history_over_none"].get(n)
        lines.append(f"| {n} | {out['latency_ms_none'][i]:.3f} | {out['footprint'][i]['working_set_bytes'] / 1e6:.2f} | "
                     + " | ".join(f"{out['slowdown'][h][i]:.3f}" for h in hs)
                     + (f" | {hist:.3f} |" if hist is not None else (" | |" if out["history_over_none"] else " |")))
    lines += ["", "Models (not the reference candidates) with each neighbour, their slowdown divided by a reference's "
              "slowdown in the same measurements (what putting them on that reference's scale leaves):", "",
              "| scale | within ±2 % | within ±5 % | median \\|error\\| | max |", "| --- | --- | --- | --- | --- |"]
    for c, v in out["models_on_reference_scale"].items():
        lines.append(f"| {c} | {100 * v['within_2']:.1f} % | {100 * v['within_5']:.1f} % | "
                     f"{100 * v['median_abs']:.1f} % | {100 * v['max_abs']:.1f} % |")
    lines += ["", "The same neighbour, measured again (every pair of rounds x every model, not the reference "
              "candidates), within ±2 / ±5 / ±10 %, as measured and on each candidate reference's scale:", "",
              "| neighbour | " + " | ".join(out["remeasured_same_neighbour"]["none"]) + " |",
              "| --- | " + " | ".join("---" for _ in out["remeasured_same_neighbour"]["none"]) + " |"]
    for h, per in out["remeasured_same_neighbour"].items():
        lines.append(f"| {h} | " + " | ".join(
            f"{100 * v['within_2']:.0f} / {100 * v['within_5']:.0f} / {100 * v['within_10']:.0f} %" for v in per.values())
            + " |")
    lines += ["", f"Spearman of the models' slowdown with the memory-streaming neighbour and their working set: "
              f"{out['spearman_stream_slowdown_vs_working_set']:.2f}."]
    if out["history_over_none"]:
        lines.append("Spearman of the exports' committed timings over their timings now (no neighbour) with their "
                     "slowdown under each neighbour: " + ", ".join(
                         f"{h} {v:.2f}" for h, v in out["spearman_history_vs"].items()) + ".")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
