"""Per-kernel latency from kernel rows: a physical linear model per family, corrected by nearest neighbours.

For each family (operator, convolution kind and size, bits) a non-negative least-squares fit of the
latency on (MACs, activation bytes, weight bytes, 1), in relative error, gives a smooth physical estimate.
The log-ratio of measured to physical latency is then interpolated from the nearest measured kernels of the
same family (inverse-distance weights over log-scale shape descriptors). A kernel that was measured
returns its measured latency. Families with too few rows fall back to the same kernels without their costly
activation (``conv_dw_k3/b32+hardswish`` -> ``conv_dw_k3/b32``), then to the same kind and bits at any kernel size
(``conv_dw_k7/b4`` -> ``size:conv_dw/b4``: the MACs carry the size), then to the operator's rows, then to all rows.
On an Intel Xeon at 128 px, a table that held one row of 4-bit 7x7 depthwise convolutions (ONNX Runtime's slow
path: a float grouped ``Conv`` fed by a weight ``DequantizeLinear``) predicts held-out MobileNet models with 23.7 %
RMSPE falling back to all convolutions, 11.0 % from its kind (``experiments/results/family_fallback.md``).

On a device whose ONNX Runtime blocks float convolutions (``nchwc``, see :mod:`latency_models._layout`), a float
kernel that runs the plain NCHW path instead (a grouped convolution with 8 channels per group, a depthwise one
with 122 channels) takes its neighbours from kernels on its own path first: the two paths differ by up to 4x at
equal MACs, and a neighbour from the other path would carry the other's correction.

Likewise a convolution whose input or output channels are not a multiple of 16 (:data:`CHANNEL_ALIGNMENT`) takes
its neighbours from such convolutions first, and an aligned one from aligned ones: the runtimes' vector kernels
step through 16 channels at a time (int8 depthwise convolutions most of all), so that 24 channels is not "between"
16 and 32. Measured on this CPU (a 128-px profile of the three spaces, ``predictor_local_128_settled``): leave-one-out
errors of the int8 depthwise families were +29 % on aligned and -24 % on unaligned kernels when their neighbours
mixed them (31 % rms), 7-14 % rms apart; over all kernel rows 14.1 -> 8.8 % rms.

On such a device the physical fit counts a blocked float convolution's channels padded to whole blocks (``block_padding``,
:func:`~latency_models._features.physical`): the runtime computes 116 channels as 128. Over the sixteen committed
tables of ``experiments/block_padding.py``, RegNetY-400MF (1x1 convolutions at 104, 208 and 440 channels, never timed)
went from a mean error of -21.6 to -2.5 %, the other exports and the spaces' models within about a point.

A depthwise convolution's output channels and groups equal its input channels, so its width counts three times in the
distance between neighbours and its map size once. ``depthwise_channels_once=True`` counts the width once: out of
sample, the untimed kernels of held-out MobileNet models are predicted closer (``experiments/untimed_kernels.py``), but
the whole held-out models of the committed tables did not gain (``experiments/depthwise_channels.py``), so it is off.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from latency_models._features import family, kernel_key, physical, shape_features
from latency_models._kernel import Kernel
from latency_models._layout import plain_path

__all__ = ["KernelModel"]

_MIN_ROWS = 4
_NEIGHBOURS = 4
#: Distance (in the family's scaled shape units, where neighbours lie about 0.5-2 apart) added between kernels
#: on different layout paths: a neighbour on the other path counts only when its own path has none near.
_PATH_GAP = 4.0
#: Channel counts that are a multiple of this run the vector kernels' full width: convolutions with an input
#: or output channel count that is not keep to their own kind when neighbours are chosen (``_PATH_GAP`` apart).
CHANNEL_ALIGNMENT = 16


def _nnls_relative(phi: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative least squares of t on phi, minimising relative error (active set by clipping)."""
    a = phi / t[:, None]
    b = np.ones(len(t))
    active = np.ones(phi.shape[1], dtype=bool)
    coef = np.zeros(phi.shape[1])
    for _ in range(phi.shape[1] + 1):
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        full = np.zeros(phi.shape[1])
        full[active] = sol
        if (full >= 0).all():
            coef = full
            break
        active &= full > 0
        if not active.any():
            break
    if not (coef > 0).any():  # degenerate: one constant
        coef = np.zeros(phi.shape[1])
        coef[-1] = float(np.median(t))
    return coef


def _any_size(f: str) -> str | None:
    """The group of a family's kind and bits at any kernel size: ``conv_dw_k7/b4`` -> ``size:conv_dw/b4``; None
    for a family without a kernel size (``add/b32``)."""
    base = f.partition("+")[0]
    sized = re.sub(r"_k\d+(?=/)", "", base)
    return None if sized == base else "size:" + sized


def _unaligned(k: Kernel, align: int | None) -> bool:
    """Whether ``k`` is a convolution whose input or output channels are not a multiple of ``align``."""
    if align is None or k.op != "conv":
        return False
    cin = k.input_shape[0]
    return bool(cin % align or (k.out_channels or cin) % align)


class KernelModel:
    """Latency of single kernels, fitted on kernel rows (milliseconds)."""

    def __init__(self, kernels: Sequence[Kernel], latencies_ms: Sequence[float], *,
                 nchwc: tuple[int, int] | None = None, channel_alignment: int | None = CHANNEL_ALIGNMENT,
                 block_padding: bool = True, depthwise_channels_once: bool = False) -> None:
        """``nchwc``: the device's blocked layout, (block, channel alignment) (``device["nchwc"]`` of a table
        measured on it), or None where it has none or it is unknown. ``channel_alignment``: convolutions with
        channels that are not a multiple of it take neighbours of their own kind (None: any neighbour).
        ``block_padding``: with ``nchwc``, the physical fit counts a blocked float convolution's channels padded to
        whole blocks (:func:`~latency_models._features.physical`); False: as given (kernel models saved before
        2026-12-06). ``depthwise_channels_once``: a depthwise convolution's channels count once in the distance between
        neighbours, not as input, output and group counts (False, the default: three times)."""
        if len(kernels) == 0:
            raise ValueError("KernelModel needs at least one kernel row")
        if channel_alignment is not None and (not isinstance(channel_alignment, int) or channel_alignment < 1):
            raise ValueError(f"channel_alignment={channel_alignment!r} must be a positive integer or None")
        self.channel_alignment = channel_alignment
        self.block_padding = bool(block_padding)
        self.depthwise_channels_once = bool(depthwise_channels_once)
        self.nchwc = tuple(nchwc) if nchwc else None
        self._padding = self.nchwc if self.block_padding else None
        self.kernels = list(kernels)
        self.latencies_ms = np.asarray(latencies_ms, dtype=np.float64)
        self.exact = {kernel_key(k): float(t) for k, t in zip(self.kernels, self.latencies_ms)}
        fams = [family(k) for k in self.kernels]
        self._phi = physical(self.kernels, nchwc=self._padding)
        self._z = self._shape(self.kernels)
        self._path = self._paths(self.kernels)
        self._coef: dict[str, np.ndarray] = {}
        self._groups: dict[str, np.ndarray] = {}
        by_fam: dict[str, list[int]] = {}
        by_op: dict[str, list[int]] = {}
        for i, (f, k) in enumerate(zip(fams, self.kernels)):
            by_fam.setdefault(f, []).append(i)
            sized = _any_size(f)
            if sized is not None:
                by_op.setdefault(sized, []).append(i)
            by_op.setdefault("op:" + k.op, []).append(i)
        by_op["all"] = list(range(len(self.kernels)))
        for name, idx in {**by_fam, **by_op}.items():
            idx_a = np.asarray(idx)
            self._groups[name] = idx_a
            if len(idx_a) >= _MIN_ROWS or name == "all":
                self._coef[name] = _nnls_relative(self._phi[idx_a], self.latencies_ms[idx_a])
        lin = np.einsum("ij,ij->i", self._phi, np.stack([self._coef[self._group_of(k)] for k in self.kernels]))
        self._log_ratio = np.log(self.latencies_ms / np.maximum(lin, 1e-9))
        self._scale: dict[str, np.ndarray] = {}
        for name, idx in self._groups.items():
            sd = self._z[idx].std(axis=0)
            self._scale[name] = np.where(sd > 1e-9, sd, 1.0)

    def _group_of(self, k: Kernel, f: str | None = None) -> str:
        f = family(k) if f is None else f
        if f in self._coef:
            return f
        base = f.partition("+")[0]  # a convolution with a costly activation: the same convolution without
        if base != f and base in self._coef:
            return base
        sized = _any_size(base)  # the same kind and bits at other kernel sizes: the MACs carry the size
        if sized in self._coef:
            return sized
        if "op:" + k.op in self._coef:
            return "op:" + k.op
        return "all"

    def _shape(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """The shape descriptors neighbours are found by (:func:`~latency_models._features.shape_features`); with
        ``depthwise_channels_once``, a depthwise convolution's output-channel and group columns are 0 (they repeat its
        input channels)."""
        z = shape_features(kernels)
        if self.depthwise_channels_once:
            dw = [i for i, k in enumerate(kernels) if k.op == "conv" and k.groups > 1 and k.groups == k.input_shape[0]]
            z[dw, 1] = z[dw, 4] = 0.0
        return z

    def _paths(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """The kind of implementation a kernel runs, for choosing neighbours: 1 for a float kernel on the plain
        NCHW path of a blocking device, plus 2 for a convolution with channels not aligned to
        :data:`CHANNEL_ALIGNMENT`; 0 otherwise."""
        nchwc, align = self.nchwc, self.channel_alignment
        return np.array([(1.0 if nchwc and plain_path(k, nchwc) else 0.0) + (2.0 if _unaligned(k, align) else 0.0)
                         for k in kernels])

    def uncertainty(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Expected relative error of :meth:`predict` for each kernel (for adaptive sampling).

        The inverse-distance weighted mean absolute leave-one-out error of its nearest measured neighbours,
        plus a term growing with the distance to them; 0 for measured kernels.
        """
        if not hasattr(self, "_loo_abs"):
            self._loo_abs = np.abs(self.loo_errors())
        out = np.zeros(len(kernels))
        for name, sl, rows, nn, dn in self._neighbours(kernels, self._shape(kernels), self._paths(kernels)):
            w = 1.0 / (dn + 0.05) ** 2
            err = (w * self._loo_abs[rows][nn]).sum(1) / w.sum(1)
            out[sl] = err + 0.05 * dn.min(1) + (0.5 if name != family(kernels[sl[0]]) else 0.0)
        for i, k in enumerate(kernels):
            if kernel_key(k) in self.exact:
                out[i] = 0.0
        return out

    def _neighbours(self, kernels: Sequence[Kernel], z: np.ndarray, path: np.ndarray, *, exclude_self: bool = False):
        """Per group and chunk: (group name, kernel indices, group rows, neighbour positions, distances)."""
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(kernels):
            groups.setdefault(self._group_of(k), []).append(i)
        for name, idx in groups.items():
            idx_a = np.asarray(idx)
            rows = self._groups[name]
            scale = self._scale[name]
            zr = self._z[rows] / scale
            zr2 = (zr**2).sum(1)
            for start in range(0, len(idx_a), 2048):
                sl = idx_a[start:start + 2048]
                zq = z[sl] / scale
                d = np.sqrt(np.maximum((zq**2).sum(1)[:, None] + zr2[None, :] - 2.0 * zq @ zr.T, 0.0))
                d = d + _PATH_GAP * (path[sl][:, None] != self._path[rows][None, :])
                if exclude_self:
                    d = np.where(d < 1e-3, np.inf, d)
                kk = min(_NEIGHBOURS, d.shape[1])
                nn = np.argpartition(d, kk - 1, axis=1)[:, :kk]
                yield name, sl, rows, nn, np.take_along_axis(d, nn, axis=1)

    def predict(self, kernels: Sequence[Kernel], *, exact: bool = True) -> np.ndarray:
        """Latency in ms of each kernel timed alone; ``exact=False`` ignores exact matches (leave-one-out use)."""
        out = np.empty(len(kernels))
        if len(kernels) == 0:
            return out
        phi = physical(kernels, nchwc=self._padding)
        for name, sl, rows, nn, dn in self._neighbours(kernels, self._shape(kernels), self._paths(kernels),
                                                       exclude_self=not exact):
            lin = phi[sl] @ self._coef[name]
            w = np.where(np.isfinite(dn), 1.0 / (dn + 0.05) ** 2, 0.0)
            corr = (w * self._log_ratio[rows][nn]).sum(1) / np.maximum(w.sum(1), 1e-12)
            out[sl] = np.maximum(lin, 1e-6) * np.exp(corr)
        if exact:
            get = self.exact.get
            for i, k in enumerate(kernels):
                t = get(kernel_key(k))
                if t is not None:
                    out[i] = t
        return out

    def loo_errors(self) -> np.ndarray:
        """Relative leave-one-out error of every training kernel (prediction without itself / measured - 1)."""
        return self.predict(self.kernels, exact=False) / self.latencies_ms - 1.0

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {"rows": [[k.to_dict(), float(t)] for k, t in zip(self.kernels, self.latencies_ms)],
                "channel_alignment": self.channel_alignment, "block_padding": self.block_padding,
                "depthwise_channels_once": self.depthwise_channels_once}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, nchwc: tuple[int, int] | None = None) -> "KernelModel":
        rows = data["rows"]
        return cls([Kernel.from_dict(r[0]) for r in rows], [float(r[1]) for r in rows], nchwc=nchwc,
                   channel_alignment=data.get("channel_alignment", CHANNEL_ALIGNMENT),
                   block_padding=bool(data.get("block_padding", False)),
                   depthwise_channels_once=bool(data.get("depthwise_channels_once", False)))
