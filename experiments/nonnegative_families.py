"""Family multipliers held at zero where the free fit makes them negative.

The predictor's second stage gives each family of kernels a multiplier of its kernels' stand-alone times, shrunk
toward 1 by a penalty chosen by leave-one-out. Nothing keeps it positive, and on the committed tables the cheap
operators' families come out negative (``predictor_local_32_memory``: ``add/b32`` -1.6, ``maxpool_k3/b32`` -2.9,
``split/b32`` -4.3, ``global_avgpool/b32`` -1.3), as do, with nine more models of the exports' kinds, the
hardswish convolutions of MobileNetV3 (``conv_dw_k5/b32+hardswish`` -1.1), while the squeeze-and-excitation
``scale/b32`` they run beside rose to 5.5: two families that always occur together traded against each other, and
EfficientNet-B0, whose scale layers have no hardswish beside them, was predicted +30 %. A kernel does not take
negative time in a model. ``LatencyPredictor.fit(nonnegative_families=True)`` holds such a family at a multiplier of
0 (it costs nothing beyond what the shared terms give it) and fits the rest again, until none is negative. This
experiment fits the sixteen committed tables of ``weight_term_auto.py`` both ways and scores them on their runs'
held-out timings.

    python experiments/nonnegative_families.py

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

WAYS = (("free", {"nonnegative_families": False}), ("non-negative", {"nonnegative_families": True}))


def main() -> None:
    _fit_ways.main("nonnegative_families", __doc__.split("\n\n")[0], WAYS, "Family multipliers held at zero",
                   ("the sixteen committed tables fitted with free family multipliers and with those the free fit "
                    "makes negative held at 0 (`LatencyPredictor.fit(nonnegative_families=...)`), every other choice the "
                    "default fit's, scored on their runs' held-out timings (on the predictor's scale where the fit "
                    "corrects for the machine's state)."))


if __name__ == "__main__":
    main()
