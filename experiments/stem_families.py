"""Stems in families of their own.

The predictor's second stage gives each family of kernels a multiplier of its kernels' stand-alone times. A dense
3x3 convolution is one family whether it reads the image (the stem of every model of the built-in spaces: three
channels, the largest maps, which ONNX Runtime's blocked layout reads unblocked) or sits deep in a ResNet (hundreds
of channels on 1x1-4x4 maps at 32 px, weight-bound): on ``predictor_local_32_memory_variants9`` the family's
multiplier, 0.75, is the stems', and ResNet-18, whose 3x3 layers take 89 % of its predicted time, was predicted
-28 %. ``LatencyPredictor.fit(stem_families=True)`` puts a dense convolution that reads at most four channels on a
map larger than 1x1 in a family of its own (``conv_stem_k3/b32``). This experiment fits the sixteen committed tables
of ``weight_term_auto.py`` and the two tables where target 2 is decided at 32 and 128 px (nine models of the
exports' kinds added) both ways and scores them on their runs' held-out timings.

    python experiments/stem_families.py

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

WAYS = (("one dense family", {"stem_families": False}), ("stems apart", {"stem_families": True}))


def main() -> None:
    _fit_ways.main("stem_families", __doc__.split("\n\n")[0], WAYS, "Stems in families of their own",
                   ("the sixteen committed tables and two with nine models of the exports' kinds added, fitted with "
                    "the stems in the dense convolutions' families and in families of their own "
                    "(`LatencyPredictor.fit(stem_families=...)`), every other choice the default fit's, scored on "
                    "their runs' held-out timings (on the predictor's scale where the fit corrects for the machine's "
                    "state)."), default_runs=_fit_ways.RUNS_WITH_NINE)


if __name__ == "__main__":
    main()
