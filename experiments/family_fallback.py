"""Families short of kernel rows: what the committed profiles held, and what predicting such a family from its kind
at other kernel sizes changes (fits only, nothing timed).

The kernel model fits each family (operator, convolution kind and kernel size, bits: ``latency_models.family``)
on its own rows when it has at least four. Until 2026-12-05 a family with fewer fell back to every row of its
operator: a 4-bit 7x7 depthwise convolution, which ONNX Runtime runs on the slow path of a float ``Conv`` fed by
a weight ``DequantizeLinear`` (no pre-packed weights), was then predicted from all convolutions. It now falls back
to its kind and bits at any kernel size first (``size:conv_dw/b4``), and the profiler brings every family up to
four rows before ranking kernels by expected error.

For each committed ``predictor_local.py`` run (``--runs``): the families of its table with fewer than four kernel
rows that its held-out models use (rows, kernels in the held-out models) and, where ``--timed-in`` (a table of the same CPU) timed kernels of such a
family alone, how the run's kernel model predicts them now; then its held-out scores as committed
(the ``state`` fit on the predictor's scale, from ``NAME.json``, fitted by the code of that day) beside the same
table fitted now and scored on the same timings. Only the fallback differs where the code did not change
otherwise since the run; the committed figure is what a user of that day got.

    python experiments/family_fallback.py --name family_fallback
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import loadavg, write_json  # noqa: E402
from predictor_local import RESULTS, _exists, _read, _scores  # noqa: E402

from latency_models import KernelModel, LatencyPredictor, family  # noqa: E402

#: The fewest rows a family is fitted on by itself (``latency_models``' kernel model).
MIN_ROWS = 4
DEFAULT_RUNS = ("predictor_local_128_intel_cover,predictor_local_128_intel_shuffle8,predictor_local_128_intel,"
                "predictor_local_32_intel_shuffle8,predictor_local_32_intel,predictor_local_128_pool,predictor_local_32_pool,"
                "predictor_local_224_pool,predictor_local_96_memory")
GROUPS = ("fbnet", "mobilenet", "shufflenet", "spaces, all", "spaces, float32, all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="committed predictor_local.py runs (comma separated)")
    ap.add_argument("--timed-in", default="predictor_local_128_intel_cover",
                    help="a run whose table timed the short families' kernels alone: each run's kernel model is "
                         "scored on them (same CPU only)")
    ap.add_argument("--name", default="family_fallback")
    args = ap.parse_args()
    ref = _read(RESULTS / args.timed_in, "table.json")
    started, load_before = dt.datetime.now(dt.timezone.utc), loadavg()
    out: dict = {"command": "python experiments/family_fallback.py " + " ".join(sys.argv[1:]), "runs": []}
    for run in args.runs.split(","):
        record = json.loads((RESULTS / f"{run}.json").read_text(encoding="utf-8"))
        folder = RESULTS / run
        table, held = _read(folder, "table.json"), _read(folder, "held.json")
        held_float = _read(folder, "held_float.json") if _exists(folder, "held_float.json") else None
        rows_per = collections.Counter(family(r.kernel) for r in table.kernel_rows)
        used = collections.Counter(family(k) for r in held.model_rows for k in r.kernels)
        short = [{"family": f, "kernel_rows": rows_per.get(f, 0), "held_out_kernels": n}
                 for f, n in sorted(used.items()) if rows_per.get(f, 0) < MIN_ROWS]
        if run != args.timed_in and table.device.get("cpu_model") == ref.device.get("cpu_model"):
            km = KernelModel([r.kernel for r in table.kernel_rows], [r.latency_ms for r in table.kernel_rows],
                             nchwc=table.device.get("nchwc"))
            for s in short:
                timed = [r for r in ref.kernel_rows if family(r.kernel) == s["family"]]
                if timed:
                    ratio = km.predict([r.kernel for r in timed]) / np.array([r.latency_ms for r in timed])
                    s["timed_in"] = {"run": args.timed_in, "kernels": len(timed),
                                     "median_predicted_over_timed": float(np.median(ratio)),
                                     "range": [float(ratio.min()), float(ratio.max())]}
        t0 = time.perf_counter()
        pred = LatencyPredictor.fit(table)
        fit_s = time.perf_counter() - t0
        groups = {s: [r for r in held.model_rows if r.source == s] for s in ("fbnet", "mobilenet", "shufflenet")}
        groups["spaces, all"] = held.model_rows
        if held_float is not None:
            groups["spaces, float32, all"] = held_float.model_rows
        scores = []
        for g in GROUPS:
            if not groups.get(g):
                continue
            then = record["results"][g]["state"].get("on_scale")
            now = _scores(pred, groups[g], 1.0)["on_scale"]
            scores.append({"group": g, "n": len(groups[g]), "committed": then and {
                k: then[k] for k in ("within_5", "within_10", "rmspe")}, "now": {
                k: now[k] for k in ("within_5", "within_10", "rmspe")}})
        out["runs"].append({"run": run, "cpu_model": table.device.get("cpu_model"), "kernel_rows": len(table.kernel_rows),
                            "model_rows": len(table.model_rows), "fit_seconds": fit_s, "short_families": short,
                            "scores": scores})
        print(f"{run}: {len(short)} short families used by its held-out models; fitted in {fit_s:.0f} s", flush=True)
    # what the depthwise families cost per MAC alone, as the --timed-in table measured them
    per_mac: dict = collections.defaultdict(list)
    for r in ref.kernel_rows:
        k = r.kernel
        if k.op == "conv" and k.groups == k.input_shape[0] and k.groups > 1:
            per_mac[family(k)].append(r.latency_ms * 1e6 / k.macs)
    out["depthwise_ns_per_mac"] = {"run": args.timed_in, "families": {
        f: {"kernels": len(v), "median": float(np.median(v))} for f, v in sorted(per_mac.items())}}
    out.update({"finished_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                "minutes": (dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60.0,
                "load_average_before_after": [load_before, loadavg()]})
    write_json(RESULTS / f"{args.name}.json", out)
    _markdown(args.name, out)


def _pct(m: dict | None, key: str) -> str:
    return "-" if not m else f"{100 * m[key]:.1f}"


def _markdown(name: str, out: dict) -> None:
    lines = [f"# Families short of kernel rows ({name})", "",
             f"Command: `{out['command']}`  ", f"Finished {out['finished_utc']} after {out['minutes']:.1f} min (fits "
             f"only, nothing timed); load average (1/5/15 min) before / after: {out['load_average_before_after'][0]} / "
             f"{out['load_average_before_after'][1]}.", "",
             "Scores: held-out models of each run, the `state` fit on the predictor's scale; *committed* is the run's "
             "own report (the code of its day), *now* the same table fitted by this checkout, on the same timings.", ""]
    dw = out["depthwise_ns_per_mac"]
    lines += [f"Depthwise convolutions alone, as `{dw['run']}` timed them (median ns per multiply-accumulate; 4-bit "
              "layers run a float `Conv` whose weights a `DequantizeLinear` computes at run time, so ONNX Runtime "
              "cannot pre-pack them):", "", "| family | kernels | ns per MAC |", "| --- | --- | --- |"]
    lines += [f"| `{f}` | {v['kernels']} | {v['median']:.3f} |" for f, v in dw["families"].items()] + [""]
    for r in out["runs"]:
        lines += [f"## {r['run']} ({r['cpu_model']}; {r['kernel_rows']} kernel rows, {r['model_rows']} model rows)", ""]
        if r["short_families"]:
            lines += ["Families with fewer than four kernel rows that the held-out models use: " + ", ".join(
                f"`{s['family']}` ({s['kernel_rows']} rows, {s['held_out_kernels']} kernels)" for s in r["short_families"])
                + ".", ""]
            timed = [s for s in r["short_families"] if "timed_in" in s]
            if timed:
                lines += [f"Their kernels as `{timed[0]['timed_in']['run']}` timed them alone, predicted by this run's "
                          "kernel model now: " + ", ".join(
                              f"`{s['family']}` {s['timed_in']['kernels']} kernels, predicted / timed median "
                              f"{s['timed_in']['median_predicted_over_timed']:.2f} (range "
                              f"{s['timed_in']['range'][0]:.2f}-{s['timed_in']['range'][1]:.2f})" for s in timed) + ".", ""]
        else:
            lines += ["Every family the held-out models use has four kernel rows or more.", ""]
        lines += ["| models | n | within ±5 % committed / now | within ±10 % committed / now | RMSPE committed / now |",
                  "| --- | --- | --- | --- | --- |"]
        for s in r["scores"]:
            c, n = s["committed"], s["now"]
            lines.append(f"| {s['group']} | {s['n']} | {_pct(c, 'within_5')} / {_pct(n, 'within_5')} | "
                         f"{_pct(c, 'within_10')} / {_pct(n, 'within_10')} | {_pct(c, 'rmspe')} / {_pct(n, 'rmspe')} |")
        lines.append("")
    (RESULTS / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
