"""Would settling on the memory probe make weight-heavy models re-time within ±2 %?

The protocol (``karumi-interleaved/3``) settles a job on its compute-bound reference: an attempt whose reference
is more than ``settle_tolerance`` above the fastest recent one is repeated. Its memory probe (a memory-bound
16 MiB vector-matrix product, ``memory_probe_mb``) is recorded but not waited on. Models with tens of megabytes
of weights follow the probe, not the reference (``experiments/results/memory_state.md``; at 128 px one job of four
torchvision exports ran 5-17 % slow with its probe 22 % slow and its reference unmoved,
``predictor_local_128_memory_retime``). This experiment asks whether waiting on the probe too would have helped,
without changing the protocol: the torchvision exports of a ``predictor_local.py`` run (at its input size) are
timed ``--rounds`` times, four to a job as ``measure_models`` times them, each job run by the protocol's worker
with *every* attempt made (``--attempts``, forced by a floor no attempt reaches) so that each attempt's reference,
probe and latencies are known. Rules read side by side from the same jobs:

- ``first attempt``: no settling (the ``/2`` protocol);
- ``reference settling``: the protocol as it is (stop at the first attempt within ``settle_tolerance`` of the
  fastest reference of the recent jobs or of this job's attempts; keep the fastest reference made);
- ``reference and probe, T``: stop only when the probe is also within ``T`` of its floor (the fastest kept probe
  of the recent jobs, or this job's), and keep, among the attempts made whose reference is within
  ``settle_tolerance`` of the fastest made, the one with the fastest probe;
- ``fastest attempt``: each model's fastest attempt of the job (a bound no rule reaches: it looks at the models).

For each rule: how far apart every pair of rounds of every model is (within ±2 / 5 / 10 %) and the attempts a job
would have made (its cost).

    python experiments/memory_settling.py --run predictor_local_128_memory --rounds 12

Writes ``experiments/results/NAME.json`` and ``.md`` (``--name``, default ``memory_settling``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import latency_models  # noqa: E402
from _common import loadavg, write_json  # noqa: E402
from latency_models import PROTOCOL_NAME, default_protocol, reference_model  # noqa: E402
from predictor_local import _run_exports  # noqa: E402
from settled_timing import FLOOR_JOBS, _agreement  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CHUNK = 4  # models per worker job, as measure_models times them
#: the worker script, run as a file (as a device runs it): the protocol's own, next to the package's modules
WORKER = pathlib.Path(latency_models.__file__).with_name("_worker.py")
TOLERANCES = (0.05, 0.10, 0.15)


def _job(paths: list[str], reference: pathlib.Path, attempts: int, folder: pathlib.Path) -> dict:
    """One worker job with every attempt made (a reference floor no attempt reaches)."""
    params = default_protocol()
    job = {k: params[k] for k in ("warmup", "warmup_ms", "blocks", "block_ms", "min_runs", "max_runs", "quantile",
                                  "seed", "settle_tolerance", "memory_probe_mb")}
    job.update(models=paths, reference=str(reference), threads=1, settle_attempts=attempts, reference_floor_ms=1e-9)
    (folder / "job.json").write_text(json.dumps(job))
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-I", str(WORKER), str(folder / "job.json"), str(folder / "out.json")],
                   check=True, env=env, timeout=3600, cwd=folder)
    return json.loads((folder / "out.json").read_text())


def _walk(refs: list[float], mems: list[float], floor_ref: float | None, floor_mem: float | None, tol: float,
          mem_tol: float | None) -> tuple[int, int]:
    """(attempts made, attempt kept) under a rule: reference settling, and the probe too when ``mem_tol``."""
    made = 0
    while made < len(refs):
        made += 1
        fastest = min(refs[:made])
        if floor_ref is None and made == 1:
            continue
        ok = refs[made - 1] <= (1 + tol) * (fastest if floor_ref is None else min(floor_ref, fastest))
        if mem_tol is not None:
            fm = min(mems[:made])
            ok = ok and mems[made - 1] <= (1 + mem_tol) * (fm if floor_mem is None else min(floor_mem, fm))
        if ok:
            break
    r = refs[:made]
    if mem_tol is None:
        return made, int(np.argmin(r))
    near = [a for a in range(made) if r[a] <= (1 + tol) * min(r)]
    return made, min(near, key=lambda a: mems[a])


def _settled(ref_a: np.ndarray, mem_a: np.ndarray, lat_a: np.ndarray, jobs: list[tuple[int, np.ndarray]],
             tol: float, mem_tol: float | None) -> tuple[np.ndarray, float]:
    """Each model's latency in every round had its jobs, in the order they ran, settled by the rule (the floors
    the host keeps from the :data:`FLOOR_JOBS` jobs before), and the mean attempts a job would have made."""
    kept_refs: list[float] = []
    kept_mems: list[float] = []
    lat = np.zeros(ref_a.shape[:2])
    made_all = []
    for rd, idx in jobs:
        refs, mems = list(ref_a[rd, idx[0]]), list(mem_a[rd, idx[0]])  # one job: its models share its attempts
        floor_ref = min(kept_refs[-FLOOR_JOBS:]) if kept_refs else None
        floor_mem = min(kept_mems[-FLOOR_JOBS:]) if kept_mems else None
        made, keep = _walk(refs, mems, floor_ref, floor_mem, tol, mem_tol)
        made_all.append(made)
        kept_refs.append(refs[keep])
        kept_mems.append(mems[keep])
        lat[rd, idx] = lat_a[rd, idx, keep]
    return lat, float(np.mean(made_all))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="predictor_local_128_memory", help="the predictor_local.py run whose "
                    "torchvision exports (at its input size) are timed")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--attempts", type=int, default=8, help="attempts every job makes (the protocol's most)")
    ap.add_argument("--name", default="memory_settling")
    args = ap.parse_args()
    if args.rounds < 2 or args.attempts < 2:
        raise SystemExit(f"error: --rounds={args.rounds}, --attempts={args.attempts}; allowed: 2 or more each")
    size, names, paths = _run_exports(args.run)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load0, t0 = loadavg(), time.time()
    n, rng = len(names), np.random.default_rng(20261205)
    ref_a = np.zeros((args.rounds, n, args.attempts))
    mem_a = np.zeros_like(ref_a)
    lat_a = np.zeros_like(ref_a)
    jobs: list[tuple[int, np.ndarray]] = []  # (round, its models) in the order the jobs ran
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        reference = folder / "reference.onnx"
        reference.write_bytes(reference_model().SerializeToString())
        for rd in range(args.rounds):
            order = rng.permutation(n)
            for j in range(0, n, CHUNK):
                idx = order[j:j + CHUNK]
                res = _job([paths[i] for i in idx], reference, args.attempts, folder)
                for slot, i in enumerate(idx):
                    ref_a[rd, i] = res["attempt_references_ms"]
                    mem_a[rd, i] = res["attempt_memory_references_ms"]
                    lat_a[rd, i] = [a[slot] for a in res["attempt_latency_ms"]]
                jobs.append((rd, idx))
            print(f"round {rd + 1}/{args.rounds}: {time.time() - t0:.0f} s", flush=True)
    tol = float(default_protocol()["settle_tolerance"])
    rules: dict[str, float | None] = {"reference settling": None, **{f"reference and probe, {int(t * 100)} %": t
                                                                     for t in TOLERANCES}}
    picked: dict[str, np.ndarray] = {"first attempt": lat_a[:, :, 0],
                                     "all attempts, fastest reference": np.take_along_axis(
                                         lat_a, ref_a.argmin(axis=2)[..., None], axis=2)[..., 0],
                                     "all attempts, fastest probe": np.take_along_axis(
                                         lat_a, mem_a.argmin(axis=2)[..., None], axis=2)[..., 0]}
    cost: dict[str, float] = {"first attempt": 1.0, "all attempts, fastest reference": float(args.attempts),
                              "all attempts, fastest probe": float(args.attempts)}
    for rule, mem_tol in rules.items():
        picked[rule], cost[rule] = _settled(ref_a, mem_a, lat_a, jobs, tol, mem_tol)
    picked["fastest attempt of each model"] = lat_a.min(axis=2)
    cost["fastest attempt of each model"] = float(args.attempts)
    agreement = {rule: {"all": _agreement(lat), **{names[i]: _agreement(lat[:, [i]]) for i in range(n)}}
                 for rule, lat in picked.items()}
    # within a job: how the probe and the models move between attempts
    spread_mem = float(np.median(mem_a.max(axis=2) / mem_a.min(axis=2)))
    spread_ref = float(np.median(ref_a.max(axis=2) / ref_a.min(axis=2)))
    lm = np.log(mem_a / mem_a.mean(axis=2, keepdims=True)).reshape(-1)
    ll = np.log(lat_a / lat_a.mean(axis=2, keepdims=True)).reshape(-1)
    lr = np.log(ref_a / ref_a.mean(axis=2, keepdims=True)).reshape(-1)
    out = {"command": f"python experiments/memory_settling.py --run {args.run} --rounds {args.rounds}"
                      + (f" --attempts {args.attempts}" if args.attempts != 8 else "")
                      + (f" --name {args.name}" if args.name != "memory_settling" else ""),
           "protocol": PROTOCOL_NAME, "settle_tolerance": tol, "input_size": size, "models": names,
           "started_utc": started, "seconds": time.time() - t0, "loadavg_before": load0, "loadavg_after": loadavg(),
           "attempts_per_job_by_rule": cost, "agreement": agreement,
           "within_job": {"probe_max_over_min_median": spread_mem, "reference_max_over_min_median": spread_ref,
                          "corr_model_with_probe": float(np.corrcoef(ll, lm)[0, 1]),
                          "corr_model_with_reference": float(np.corrcoef(ll, lr)[0, 1])},
           "attempt_references_ms": ref_a, "attempt_memory_references_ms": mem_a, "attempt_latency_ms": lat_a}
    write_json(RESULTS / f"{args.name}.json", out)
    lines = [f"# Settling on the memory probe: {n} exports at {size} px timed {args.rounds} times ({args.name})", "",
             f"Command: `{out['command']}`  ",
             f"Started {started}, {out['seconds'] / 60:.1f} min; load average before / after: {load0} / "
             f"{out['loadavg_after']} on 2 shared cores; protocol {PROTOCOL_NAME} (settle_tolerance {tol:g}, memory "
             f"probe {default_protocol()['memory_probe_mb']:g} MiB), {CHUNK} models per worker job, every job made "
             f"all {args.attempts} attempts, 1 thread; rules read from the same jobs; every pair of rounds of every "
             f"model compared.", "",
             f"Within a job, between its attempts: the probe's max / min {spread_mem:.3f} (median over jobs), the "
             f"reference's {spread_ref:.3f}; correlation of a model's attempt-to-attempt log change with the probe's "
             f"{out['within_job']['corr_model_with_probe']:+.2f}, with the reference's "
             f"{out['within_job']['corr_model_with_reference']:+.2f}.", "",
             "| rule | attempts per job | pairs | within ±2 % | within ±5 % | within ±10 % | median | 90th pct | worst |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rule, a in agreement.items():
        s = a["all"]
        lines.append(f"| {rule} | {cost[rule]:.2f} | {s['pairs']} | {100 * s['within_2']:.1f} % | "
                     f"{100 * s['within_5']:.1f} % | {100 * s['within_10']:.1f} % | {s['median_pct']:.1f} % | "
                     f"{s['p90_pct']:.1f} % | {s['worst_pct']:.1f} % |")
    lines += ["", "Per model, within ±2 % of each other (pairs of rounds):", "",
              "| rule | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |"]
    for rule, a in agreement.items():
        lines.append(f"| {rule} | " + " | ".join(f"{100 * a[m]['within_2']:.0f} %" for m in names) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
