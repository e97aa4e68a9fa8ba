"""Blocked convolutions priced on whole blocks: the kernel model with and without the channels padded to the block.

ONNX Runtime's blocked layout (NCHWc, 16 channels a block with AVX-512) computes a convolution on whole blocks: at 104
or 116 channels it does the work of 112 or 128. The kernel model's physical fit counted the channels as given, so a
convolution at such a width, never timed alone, was predicted from its aligned neighbours as about 10-20 % cheaper
than it runs (``export_coverage.py``: RegNetY-400MF, 1x1 convolutions at 104, 208 and 440 channels, under-predicted on
every table). Since 2026-12-06 ``KernelModel`` counts a blocked float convolution's channels padded to whole blocks
(``LatencyPredictor.fit(block_padding=True)``, the default). This experiment fits the sixteen committed tables of
``weight_term_auto.py`` both ways and scores them on their runs' held-out timings: the torchvision exports, the
spaces' random widths and their whole float32 models, each export's mean error over the tables beside it.

    python experiments/block_padding.py

Fits only, no timing (about 15 minutes on 2 cores). Writes ``experiments/results/NAME.json`` and ``.md``.
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

WAYS = (("as given", {"block_padding": False}), ("padded", {"block_padding": True}))


def main() -> None:
    _fit_ways.main("block_padding", __doc__.split("\n\n")[0], WAYS, 'Blocked convolutions priced on whole blocks',
                   ("the sixteen committed tables fitted with the kernel model's channels as given and padded to "
                    "whole blocks (`LatencyPredictor.fit(block_padding=...)`), scored on their runs' held-out timings "
                    "(on the predictor's scale where the fit corrects for the machine's state). Tables without a "
                    "recorded blocked layout are the same both ways."))


if __name__ == "__main__":
    main()
