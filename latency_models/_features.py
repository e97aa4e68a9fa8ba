"""Numeric features of kernels, vectorised over many kernels at once (numpy only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from latency_models._kernel import KERNEL_OPS, QLINEAR_BITS, Kernel

__all__ = ["family", "physical", "shape_features", "kernel_key", "PHYSICAL_NAMES"]

#: Names of the columns of :func:`physical`.
PHYSICAL_NAMES = ("mmacs", "act_mbytes", "weight_mbytes", "count")

_OP = {op: i for i, op in enumerate(KERNEL_OPS)}
_CONV, _LINEAR, _ADD, _SPLIT, _GAP = _OP["conv"], _OP["linear"], _OP["add"], _OP["split"], _OP["global_avgpool"]
_POOLS = (_OP["maxpool"], _OP["avgpool"])
_CRELU, _SCALE = _OP["crelu"], _OP["scale"]
#: Activations that cost time of their own beyond the operator they follow (ReLU and ReLU6 are free: ONNX
#: Runtime clamps inside the convolution): a kernel with one belongs to a family of its own.
_COSTLY_ACTIVATIONS = frozenset({"hardswish", "hardsigmoid", "sigmoid", "swish"})


def kernel_key(k: Kernel) -> str:
    """``k.key()``, stored on the instance: a string, whose hash Python caches, so look-ups stay cheap."""
    key = k.__dict__.get("_lm_key")
    if key is None:
        key = k.key()
        object.__setattr__(k, "_lm_key", key)  # not a dataclass field: equality and hash are unchanged
    return key


def family(k: Kernel) -> str:
    """The kernel's family: operator, convolution kind and kernel size, bit width.

    Kernels of one family run the same runtime implementation, so their latency varies smoothly with shape.
    Binary and ternary (1- and 2-bit) layers run as int8 kernels (ONNX Runtime has no binary kernels), so
    they belong to the 8-bit families. An activation other than ReLU / ReLU6 adds its name (``+hardswish``):
    it costs time of its own.
    """
    bits = 8 if k.bits in QLINEAR_BITS else k.bits
    if k.op == "act":
        return f"act_{k.activation}/b{bits}"
    if k.activation in _COSTLY_ACTIVATIONS:
        return f"{_family(k, bits)}+{k.activation}"
    return _family(k, bits)


def _family(k: Kernel, bits: int) -> str:
    if k.op == "conv":
        cin = k.input_shape[0]
        if k.groups == 1:
            kind = "dense"
        elif k.groups == cin:
            kind = "dw"
        else:
            kind = "grouped"
        return f"conv_{kind}_k{k.kernel_size}/b{bits}"
    if k.op in ("maxpool", "avgpool"):
        return f"{k.op}_k{k.kernel_size}/b{bits}"
    return f"{k.op}/b{bits}"


def _fields(kernels: Sequence[Kernel]) -> np.ndarray:
    """(n, 10) float array: op, cin, h, w, cout, k, s, groups, bits, pad."""
    rows = []
    for k in kernels:
        shp = k.input_shape
        h, w = (shp[1], shp[2]) if len(shp) == 3 else (1, 1)
        rows.append((_OP[k.op], shp[0], h, w, k.out_channels, k.kernel_size, k.stride, k.groups, k.bits,
                     k.kernel_size // 2 if k.padding is None else k.padding))
    return np.array(rows, dtype=np.float64).reshape(len(rows), 10)


def _derived(f: np.ndarray) -> tuple[np.ndarray, ...]:
    op, cin, h, w, cout, ks, s, g, bits, pad = f.T
    is_conv, is_lin = op == _CONV, op == _LINEAR
    is_pool = np.isin(op, _POOLS)
    spatial = is_conv | is_pool
    oh = np.where(spatial, np.floor((h + 2 * pad - ks) / s) + 1, h)
    ow = np.where(spatial, np.floor((w + 2 * pad - ks) / s) + 1, w)
    oc = np.where(is_conv | is_lin, np.where(cout > 0, cout, cin),
                  np.where(op == _SPLIT, cin / g, np.where(op == _CRELU, 2 * cin, cin)))
    oh = np.where(op == _GAP, 1, oh)
    ow = np.where(op == _GAP, 1, ow)
    n_in = cin * h * w
    n_out = oc * oh * ow
    macs = np.where(is_conv, n_out * (cin / g) * ks**2,
                    np.where(is_lin, cin * oc, np.where(is_pool, n_out * ks**2, np.where(op == _CRELU, n_out, n_in))))
    act = np.where(op == _ADD, 2 * n_in + n_out, np.where(op == _SPLIT, 2 * n_in,
                   np.where(op == _SCALE, n_in + n_out + cin, n_in + n_out)))
    elem = np.where(bits == 32, 4.0, np.where(bits == 16, 2.0, 1.0))  # 1-8 bits: int8 activations
    weights = np.where(is_conv, oc * (cin / g) * ks**2, np.where(is_lin, cin * oc, 0.0))
    wbytes = np.where(is_conv | is_lin, weights * bits / 8 + 4 * oc + np.where(bits <= 8, 4 * oc, 0), 0.0)
    return macs, act * elem, wbytes, oc


def physical(kernels: Sequence[Kernel], *, nchwc: tuple[int, int] | None = None) -> np.ndarray:
    """(n, 4) array: millions of MACs, MB of activations moved, MB of weights, 1 (the per-kernel cost).

    ``nchwc``: the device's blocked layout (block, alignment; :func:`latency_models.nchwc_layout`). Given, the float
    convolutions it runs blocked count their channels padded to whole blocks, as ONNX Runtime computes them (116
    channels as 128 on a 16-channel block; a dense convolution reading fewer channels than a block, the image, reads
    them unpadded): a blocked convolution at 116 channels costs what one at 128 does, not 91 % of it.
    """
    if len(kernels) == 0:
        return np.zeros((0, 4))
    f = _fields(kernels)
    if nchwc:
        from latency_models._layout import _blocked, whole_blocks

        block = nchwc[0]
        for i, k in enumerate(kernels):
            if k.op == "conv" and k.bits in (16, 32) and _blocked(k, nchwc):
                cin, cout = f[i, 1], f[i, 4] or f[i, 1]
                up_in, up_out = whole_blocks(cin, block), whole_blocks(cout, block)
                if k.groups == 1:
                    f[i, 1], f[i, 4] = (up_in if cin >= block else cin), up_out
                else:  # depthwise (a blocked grouped convolution is whole blocks per group already)
                    f[i, 1] = f[i, 4] = f[i, 7] = up_out
    macs, act_bytes, wbytes, _ = _derived(f)
    return np.stack([macs / 1e6, act_bytes / 1e6, wbytes / 1e6, np.ones(len(kernels))], axis=1)


def shape_features(kernels: Sequence[Kernel]) -> np.ndarray:
    """(n, 7) array of log-scale shape descriptors for nearest-neighbour search within a family."""
    if len(kernels) == 0:
        return np.zeros((0, 7))
    f = _fields(kernels)
    macs, _, _, oc = _derived(f)
    _, cin, h, w, _, ks, s, g, _, _ = f.T
    return np.stack([np.log2(cin), np.log2(oc), 0.5 * np.log2(h * w), s, np.log2(g),
                     np.log2(np.maximum(macs, 1)), ks], axis=1)
