"""Cross-validation of a committed table's own random-width models of one space, and what the errors follow.

The held-out MobileNet random widths of ``predictor_local_128_fastexport`` miss by a 6.3 % sd on both timings
(errors correlated 0.97), while the table's own MobileNet rows are fitted closely in sample. This leaves each
fold of the table's random-width rows of ``SPACE`` out of the default fit (at the exponent the status run chose),
scores them, and correlates their errors with counts of layers per bit width and of the bit-width and layout
transitions the fit prices (the predictor's own ``_transitions``). Fits only, times nothing:

    python experiments/results/mobilenet_cv/crossval.py predictor_local_128_fastexport mobilenet 4

Its output of 2026-12-07 is ``crossval_128_fastexport.log`` beside it.
"""

from __future__ import annotations

import copy
import json
import pathlib
import sys
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from offgrid_siblings import _score  # noqa: E402
from weight_term import _run_tables  # noqa: E402

from latency_models import LatencyPredictor  # noqa: E402
from latency_models._predictor import _nchwc, _transitions  # noqa: E402


def _counts(kernels, nchwc) -> dict[str, float]:
    """Counts of layers per bit width and kind, and the transitions the fit prices."""
    weight = [k for k in kernels if k.op in ("conv", "linear")]
    dw = [k for k in weight if k.op == "conv" and k.groups > 1 and k.groups == k.input_shape[0]]
    pw = [k for k in weight if k.op == "conv" and k.groups == 1 and k.kernel_size == 1]
    out = dict(_transitions(kernels, nchwc))
    out.update({"kernels": len(kernels), "depthwise float": sum(k.bits > 8 for k in dw),
                "depthwise 16-bit": sum(k.bits == 16 for k in dw), "1x1 16-bit": sum(k.bits == 16 for k in pw),
                **{f"layers {b}-bit": sum(k.bits == b for k in weight) for b in (4, 8, 16, 32)}})
    return out


def main() -> None:
    run, space, folds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    warnings.simplefilter("ignore")
    table, _, groups = _run_tables(run)
    status = json.loads((ROOT / "experiments/results/latency_status.json").read_text())["runs"][run]
    rows = table.model_rows
    idx = [i for i, r in enumerate(rows) if r.source == space and r.candidate and len(set(r.candidate["bits"])) > 1]
    np.random.default_rng(0).shuffle(idx)
    errors, scored = [], []
    for k in range(folds):
        out = set(idx[k::folds])
        t2 = copy.copy(table)
        t2.model_rows = [r for i, r in enumerate(rows) if i not in out]
        pred = LatencyPredictor.fit(t2, reference_exponent=status["reference_exponent"])
        left = [rows[i] for i in sorted(out)]
        errors += [e["error"] for e in _score(pred, t2, left)["rows"]]
        scored += left
    _report(f"{run} {space}: {len(errors)} of the table's random-width rows in {folds} folds", np.array(errors),
            scored, _nchwc(table.device))
    pred = LatencyPredictor.fit(table, reference_exponent=status["reference_exponent"])
    own = [r for r in rows if r.source == space]
    e_own = np.array([e["error"] for e in _score(pred, table, own)["rows"]])
    print(f"{run} {space}: the table's {len(own)} rows of {space} in sample (the whole table's fit): error sd "
          f"{e_own.std():.3f}, mean {e_own.mean():+.3f}")
    held = dict(groups)[space]
    _report(f"{run} {space}: the run's {len(held)} held-out random-width models, fitted on the whole table",
            np.array([e["error"] for e in _score(pred, table, held)["rows"]]), held, _nchwc(table.device))


def _report(title: str, e: np.ndarray, rows: list, nchwc) -> None:
    print(f"{title}: error sd {e.std():.3f}, mean {e.mean():+.3f}, within ±5 % {np.mean(abs(e) < 0.05):.2f}, "
          f"±10 % {np.mean(abs(e) < 0.10):.2f}")
    feats = [_counts(r.kernels, nchwc) for r in rows]
    corr = []
    for n in sorted({n for f in feats for n in f}):
        v = np.array([f.get(n, 0.0) for f in feats], dtype=float)
        if v.std() > 0:
            corr.append((float(np.corrcoef(v, e)[0, 1]), n, float(v.mean())))
    for c, n, m in sorted(corr):
        print(f"  correlation {c:+.2f}  {n} (mean {m:.2f})")


if __name__ == "__main__":
    main()
