"""Segment codes: one int64 per small segment (a convolution and what follows it), for the batch hook of
:class:`spaces.CompiledLatency` (``_segment_codes`` / ``_code_kernels``), and the channel arithmetic of
:mod:`spaces._plan` over numpy arrays.

A code packs the fields that decide a segment's kernels: its kind (a space's own numbering), the input's
spatial size, channels in and out, kernel size, stride, bits and one flag (CReLU, a residual add, ...).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIELDS", "first_n_per_row", "keep_channels_array", "pack", "unpack"]

#: (field, bit width), least significant first: 60 bits in all, so a code fits an int64.
FIELDS = (("flag", 1), ("bits", 7), ("stride", 3), ("kernel_size", 4), ("cout", 14), ("cin", 14), ("size", 12),
          ("kind", 5))
_SHIFTS = {}
_shift = 0
for _name, _width in FIELDS:
    _SHIFTS[_name] = (_shift, _width)
    _shift += _width


def keep_channels_array(channels: np.ndarray, ratios: np.ndarray, multiple: int) -> np.ndarray:
    """:func:`spaces._plan.keep_channels` of each (channels, ratio) pair, the same float operations in the
    same order, so every count equals the scalar one."""
    channels = np.asarray(channels, dtype=np.int64)
    ratios = np.asarray(ratios, dtype=np.float64)
    kept = np.maximum(multiple, np.floor(channels * (1.0 - ratios) / multiple + 0.5).astype(np.int64) * multiple)
    return np.where(ratios <= 0, channels, np.minimum(channels, kept))


def pack(**fields: np.ndarray | int) -> np.ndarray | None:
    """The codes of arrays of fields (see :data:`FIELDS`; missing ones are 0); None when a value does not
    fit its field (negative or too large), so the caller falls back to keys."""
    out: np.ndarray | int = 0
    for name, value in fields.items():
        shift, width = _SHIFTS[name]
        v = np.asarray(value, dtype=np.int64)
        if v.size and (v.min() < 0 or v.max() >= 1 << width):
            return None
        out = out | (v << shift)
    return np.asarray(out, dtype=np.int64)


def unpack(code: int) -> dict[str, int]:
    """The fields of one code."""
    code = int(code)
    return {name: (code >> shift) & ((1 << width) - 1) for name, (shift, width) in _SHIFTS.items()}


def first_n_per_row(eligible: np.ndarray, counts: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``eligible`` (one flag per code, the rows' codes one row after another, ``counts`` per row) kept
    only for the first ``n[row]`` eligible codes of each row: which convolutions get a CReLU."""
    row = np.repeat(np.arange(len(counts)), counts)
    before = np.cumsum(eligible) - eligible
    start = np.cumsum(counts) - counts
    first_of_row = np.zeros(len(counts), dtype=np.int64)
    has = counts > 0
    first_of_row[has] = before[start[has]]
    return eligible & (before - first_of_row[row] < n[row])
