"""Float16 layers in the float32 layout: their state in the bit-width and layout transitions.

ONNX Runtime has no float16 convolution on x86: a float16 layer of the spaces' graphs (a ``Cast`` to float16, the
convolution on float16 weights, a ``Cast`` back) is optimised into a float32 convolution, its weights cast once and
the casts removed, and on a CPU with the channel-blocked layout it runs blocked or on the plain NCHW path as a float32
layer of its shape would (read from the optimised graphs of the held-out MobileNet models of the 128-px tables:
``experiments/model_miss.py``). The predictor's transitions gave such a layer the state 16, so a change between float16
and float32 layers was priced as a cast and the layout reorders around float16 layers were not seen.
``LatencyPredictor.fit(float16_layout=True)`` gives it the float32 layer's layout state. This experiment fits the
twenty tables of ``depthwise_channels.py`` both ways and scores them on their runs' held-out timings.

    python experiments/float16_layout.py --jobs 2

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
from depthwise_channels import RUNS  # noqa: E402

WAYS = (("state 16", {"float16_layout": False}), ("float32 layout", {"float16_layout": True}))


def main() -> None:
    _fit_ways.main("float16_layout", __doc__.split("\n\n")[0], WAYS, "Float16 layers in the float32 layout",
                   ("the twenty tables of `depthwise_channels.py`, fitted with a float16 layer's state in the "
                    "transitions its bit width (16) and the layout a float32 layer of its shape takes "
                    "(`LatencyPredictor.fit(float16_layout=...)`), scored on their runs' held-out timings (on the "
                    "predictor's scale where the fit corrects for the machine's state)."), default_runs=RUNS)


if __name__ == "__main__":
    main()
