"""Means over the tables of ``evaluate.py``'s output, per mode: the held-out groups' shares within ±5 / ±10 % and
the exports' mean absolute error; and the tables whose exports within ±10 % moved.

    python experiments/results/cold_excess/summarise.py experiments/results/cold_excess/evaluate_18.log > experiments/results/cold_excess/summarise_18.log
"""
import ast
import re
import sys
from collections import defaultdict

import numpy as np

rows = defaultdict(dict)
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"(\S+) (\d) (\d+) \d+s loo (\S+) cold (.*?) w \S+ (\{.*?\}) ins (\S+) worst (\[.*?\]) (.*)$", line)
    if not m:
        continue
    run, small, c, loo, cold, groups, ins, _, exports = m.groups()
    errs = [float(x) for x in re.findall(r"[+-]\d+", exports)]
    rows[run][f"{small}:{c}"] = {"loo": float(loo), "groups": ast.literal_eval(groups), "ins": float(ins),
                                 "mae": float(np.mean(np.abs(errs))) if errs else None, "cold": cold}
modes = sorted({mode for r in rows.values() for mode in r})
full = {run: r for run, r in rows.items() if all(mode in r for mode in modes)}
print(f"{len(full)} tables with every mode ({', '.join(modes)})")
for mode in modes:
    parts = []
    for g in ("spaces, all", "spaces, floa", "torchvision"):
        v = [r[mode]["groups"][g] for r in full.values() if g in r[mode]["groups"]]
        parts.append(f"{g}: {np.mean([a for a, _ in v]):.1f} / {np.mean([b for _, b in v]):.1f} % (n={len(v)})")
    mae = [r[mode]["mae"] for r in full.values() if r[mode]["mae"] is not None]
    print(f"mode {mode}: " + "; ".join(parts) + f"; exports' mean abs error {np.mean(mae):.1f} %; "
          f"leave-one-out RMSPE mean {np.mean([r[mode]['loo'] for r in full.values()]):.2f} %")
base = modes[0]
for run, r in full.items():
    moved = [f"{mode} {r[mode]['groups'].get('torchvision', (0, 0))[1]}" for mode in modes[1:]
             if r[mode]["groups"].get("torchvision") != r[base]["groups"].get("torchvision")]
    if moved:
        print(f"  {run}: exports within ±10 % {r[base]['groups'].get('torchvision', (0, 0))[1]} -> " + ", ".join(moved))
