"""The stand-alone graphs' input and output: a shared cost per megabyte a kernel's one-kernel graph takes in and gives out.

A kernel timed alone is a session run of a one-kernel graph: ONNX Runtime takes the graph's input from the caller
and hands its output back, and those megabytes are part of the kernel's stand-alone time. A layer inside a whole
model reads its input from, and writes its output to, buffers the session already holds. Until 2026-12-06 the
predictor's physical stage had no term for this: the family multipliers and per-kernel costs carried it, shrinking
the stand-alone times of layers with large activations and small compute (depthwise convolutions, channel
shuffles, concatenations) by whatever the spaces' candidates implied, and carrying that to models of other
proportions. ``LatencyPredictor.fit(io_term=True)`` (the default) adds the megabytes of each kernel's stand-alone
graph's inputs and outputs (``latency_models._microgen.standalone_io_mbytes``) as one more physical column, with one
shared cost per megabyte fitted on the model rows. This experiment fits the sixteen committed tables of
``weight_term_auto.py`` both ways and scores them on their runs' held-out timings: the spaces' random widths, their
whole float32 models and the torchvision exports, each export's mean error over the tables beside it.

    python experiments/io_term.py

Fits only, no timing (about 30 minutes on 2 cores). Writes ``experiments/results/NAME.json`` and ``.md``.
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

WAYS = (("without", {"io_term": False}), ("with", {"io_term": True}))


def main() -> None:
    _fit_ways.main("io_term", __doc__.split("\n\n")[0], WAYS, "The stand-alone graphs' input and output",
                   ("the sixteen committed tables fitted without and with a shared cost per megabyte each kernel's "
                    "stand-alone graph takes in and gives out (`LatencyPredictor.fit(io_term=...)`), scored on their "
                    "runs' held-out timings (on the predictor's scale where the fit corrects for the machine's "
                    "state)."))


if __name__ == "__main__":
    main()
