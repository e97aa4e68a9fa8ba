"""The transitions' own penalty: the bit-width and layout transitions fitted apart from the per-kernel costs.

The predictor's second stage fits penalised deviations from its physical model in groups, each with its strength
chosen by exact leave-one-out on the table's model rows. Until 2026-12-06 the costs of the transitions between
consecutive kernels (the quantise / dequantise / cast nodes between layers of different bits, the reorders between
ONNX Runtime's blocked layout and plain NCHW) shared one penalty with the per-kernel cost of every family. They are
different things: a family's per-kernel cost corrects the stand-alone timings of its kernels (many families, each
seen in a few contexts, easily over-fitted), a transition is a node the model adds between two kernels (a few
terms, well determined by the quantised and plain-path models). One strength for both either shrinks the
transitions or frees the families. ``LatencyPredictor.fit(transition_penalty=True)`` (the default) gives the
transitions a penalty of their own. This experiment fits the sixteen committed tables of ``weight_term_auto.py``
both ways and scores them on their runs' held-out timings: the spaces' random widths, their whole float32 models
and the torchvision exports, each export's mean error over the tables beside it.

    python experiments/transition_penalty.py

Fits only, no timing (31.5 minutes on 2 cores beside other fits, 2026-12-06). Writes
``experiments/results/NAME.json`` and ``.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pathlib  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _fit_ways  # noqa: E402

WAYS = (("shared", {"transition_penalty": False}), ("own", {"transition_penalty": True}))


def main() -> None:
    _fit_ways.main("transition_penalty", __doc__.split("\n\n")[0], WAYS, "The transitions' own penalty",
                   ("the sixteen committed tables fitted with the transitions' costs sharing the per-kernel "
                    "costs' penalty and with a penalty of their own (`LatencyPredictor.fit(transition_penalty=...)`), "
                    "each strength chosen by leave-one-out on the table's model rows, scored on their runs' held-out "
                    "timings (on the predictor's scale where the fit corrects for the machine's state)."))


if __name__ == "__main__":
    main()
