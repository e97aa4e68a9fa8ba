"""Families with an activation nested in the family without it.

The predictor's second stage gives each family of kernels a multiplier of its kernels' stand-alone times. A
convolution followed by a costly activation (hardswish, hardsigmoid, sigmoid, swish) is a family of its own,
``conv_dense_k1/b32+hardswish``, fitted as freely as the family without it, ``conv_dense_k1/b32``, though only a few
whole models (MobileNetV3, EfficientNet, RegNetY of ``profile_models``) run it: on
``predictor_local_32_memory_variants9`` MobileNetV3's hardswish and hardsigmoid convolutions were held at a multiplier
of 0 while the squeeze-and-excitation ``scale/b32`` beside them rose to 3.6. ``LatencyPredictor.fit(
nested_families=True)`` fits such a family as its parent's multiplier plus a deviation of its own, with a penalty of
its own chosen by leave-one-out, and gives a child too rare for terms of its own its parent's multiplier. This
experiment fits the sixteen committed tables of ``weight_term_auto.py`` and the two tables where target 2 is decided
at 32 and 128 px (nine models of the exports' kinds added) both ways and scores them on their runs' held-out timings.

    python experiments/nested_families.py

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

WAYS = (("flat", {"nested_families": False}), ("nested", {"nested_families": True}))


def main() -> None:
    _fit_ways.main("nested_families", __doc__.split("\n\n")[0], WAYS, "Families with an activation nested",
                   ("the sixteen committed tables and two with nine models of the exports' kinds added, fitted with "
                    "every family free and with the families of an activation nested in their parent's "
                    "(`LatencyPredictor.fit(nested_families=...)`), every other choice the default fit's, scored on "
                    "their runs' held-out timings (on the predictor's scale where the fit corrects for the machine's "
                    "state)."), default_runs=_fit_ways.RUNS_WITH_NINE)


if __name__ == "__main__":
    main()
