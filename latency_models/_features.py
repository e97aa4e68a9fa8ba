"""Numeric features of kernels, vectorised over many kernels at once (numpy only)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from latency_models._kernel import Kernel

__all__ = ["family", "physical", "shape_features", "PHYSICAL_NAMES"]

#: Names of the columns of :func:`physical`.
PHYSICAL_NAMES = ("mmacs", "act_mbytes", "weight_mbytes", "count")


def _act_elem_bytes(bits: int) -> int:
    return {32: 4, 16: 2}.get(bits, 1)


def family(k: Kernel) -> str:
    """The kernel's family: operator, convolution kind and kernel size, bit width.

    Kernels of one family run the same runtime implementation, so their latency varies smoothly with shape.
    """
    if k.op == "conv":
        cin = k.input_shape[0]
        if k.groups == 1:
            kind = "dense"
        elif k.groups == cin:
            kind = "dw"
        else:
            kind = "grouped"
        return f"conv_{kind}_k{k.kernel_size}/b{k.bits}"
    if k.op in ("maxpool", "avgpool"):
        return f"{k.op}_k{k.kernel_size}/b{k.bits}"
    return f"{k.op}/b{k.bits}"


def _act_elems(k: Kernel) -> int:
    """Activation elements read plus written."""
    n_in = math.prod(k.input_shape)
    n_out = math.prod(k.output_shape)
    if k.op == "add":
        return 2 * n_in + n_out
    if k.op == "split":
        return 2 * n_in
    return n_in + n_out


def physical(kernels: Sequence[Kernel]) -> np.ndarray:
    """(n, 4) array: millions of MACs, MB of activations moved, MB of weights, 1 (the per-kernel cost)."""
    out = np.empty((len(kernels), 4), dtype=np.float64)
    for i, k in enumerate(kernels):
        out[i, 0] = k.macs / 1e6
        out[i, 1] = _act_elems(k) * _act_elem_bytes(k.bits) / 1e6
        out[i, 2] = k.weight_bytes / 1e6
        out[i, 3] = 1.0
    return out


def shape_features(kernels: Sequence[Kernel]) -> np.ndarray:
    """(n, 7) array of log-scale shape descriptors for nearest-neighbour search within a family."""
    out = np.empty((len(kernels), 7), dtype=np.float64)
    for i, k in enumerate(kernels):
        cin = k.input_shape[0]
        hw = k.input_shape[1] * k.input_shape[2] if len(k.input_shape) == 3 else 1
        cout = k.out_channels or cin
        out[i] = (
            math.log2(cin),
            math.log2(cout),
            0.5 * math.log2(hw),
            float(k.stride),
            math.log2(k.groups),
            math.log2(max(k.macs, 1)),
            float(k.kernel_size),
        )
    return out
