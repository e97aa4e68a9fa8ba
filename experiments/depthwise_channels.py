"""Depthwise channels counted once: a depthwise convolution's neighbours in the kernel model, found by its map size.

The kernel model predicts a kernel never timed alone from a physical fit of its family, corrected by the log-ratio of
its nearest timed neighbours (:class:`latency_models.KernelModel`). Neighbours are found by seven log-scale shape
descriptors (input and output channels, map size, stride, groups, MACs, kernel size), each scaled by its spread in the
family. A depthwise convolution's output channels and groups equal its input channels: its width counted three times and
its map size once, so an untimed depthwise layer took its neighbours from other map sizes at similar widths (on
``predictor_local_128_fastexport``, a 4-bit 7x7 one at 320 channels on an 8x8 map, from a 4x4 map, a 32x32 map and two
stride-2 layers: predicted -28 % against its own timing; ``experiments/untimed_kernels.py``).
``LatencyPredictor.fit(depthwise_channels_once=True)`` counts them once (off by default: measured here, the whole
held-out models did not gain). This experiment fits the sixteen committed tables of ``weight_term_auto.py``, the two
where target 2 is decided at 32 and 128 px (nine models of the exports' kinds added) and the two fastexport profiles
(128 and 224 px) both ways and scores them on their runs' held-out timings.

    python experiments/depthwise_channels.py

Fits only, no timing. Writes ``experiments/results/NAME.json`` and ``.md``.
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

WAYS = (("three times", {"depthwise_channels_once": False}), ("once", {"depthwise_channels_once": True}))
RUNS = _fit_ways.RUNS_WITH_NINE + ",predictor_local_128_fastexport,predictor_local_224_fastexport"


def main() -> None:
    _fit_ways.main("depthwise_channels", __doc__.split("\n\n")[0], WAYS, "Depthwise channels counted once",
                   ("the sixteen committed tables, the two with nine models of the exports' kinds and the two "
                    "fastexport profiles, fitted with a depthwise convolution's channels counted three times (input, "
                    "output, groups) and once in the kernel model's distance between neighbours "
                    "(`LatencyPredictor.fit(depthwise_channels_once=...)`), scored on their runs' held-out timings (on "
                    "the predictor's scale where the fit corrects for the machine's state)."), default_runs=RUNS)


if __name__ == "__main__":
    main()
