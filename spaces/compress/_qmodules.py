"""Fake quantisation: the weight quantiser and the modules that apply it (this module imports torch, so
the other compression modules import it on first use).

The lowest layer of ``spaces.compress``: it imports nothing of the project.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["ActFakeQuant", "QuantConv2d", "QuantLayer", "QuantLinear", "TERNARY_THRESHOLD", "fake_quant_weight",
           "low_bit_weight", "qmax", "weight_scale"]

#: Ternary weights: a weight is zero when its magnitude is below this fraction of its channel's mean magnitude
#: (Li et al., "Ternary weight networks", 2016: the threshold 0.7 E|w| approximately minimises the error).
TERNARY_THRESHOLD = 0.7


def qmax(bits: int) -> int:
    """Largest magnitude of a symmetric signed integer of ``bits`` bits (127 for 8, 7 for 4)."""
    return 2 ** (bits - 1) - 1


def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric scale: ``max|w_c| / (2**(bits-1) - 1)`` (float32)."""
    amax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return (amax / qmax(bits)).clamp_min(1e-12).float()


def low_bit_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary (``bits=1``) or ternary (``bits=2``) codes and per-output-channel scales of ``weight``.

    Binary (BinaryConnect's sign with XNOR-Net's scale): codes ``sign(w)`` in {-1, +1} (0 counts as +1),
    scale ``a_c = mean |w_c|``, the least-squares scale of the signs. Ternary (TWN): codes in {-1, 0, +1},
    zero where ``|w| <= 0.7 mean |w_c|``, scale ``a_c`` = mean of ``|w|`` over the channel's non-zero codes.
    Returns ``(codes, scale)`` as int8 and float32 tensors; the weight is ``codes * scale[:, None, ...]``.
    Both commute with BatchNorm folding (a per-channel factor scales ``a_c`` and may flip the signs).
    """
    w = weight.detach().float()
    flat = w.abs().reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    if bits == 1:
        codes = torch.where(w >= 0, 1, -1).to(torch.int8)
        scale = flat.mean(dim=1)
    elif bits == 2:
        keep = w.abs() > TERNARY_THRESHOLD * flat.mean(dim=1).reshape(shape)
        codes = (torch.sign(w) * keep).to(torch.int8)
        kept = keep.reshape(w.shape[0], -1)
        scale = (flat * kept).sum(dim=1) / kept.sum(dim=1).clamp_min(1)
    else:
        raise ValueError(f"bits={bits!r} is not a binary (1) or ternary (2) width")
    return codes, scale.clamp_min(1e-12).float()


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel symmetric fake quantisation with a straight-through gradient (identity in ``weight``).

    Bits 8 and 4: integers in [-2**(bits-1), 2**(bits-1) - 1] at scale ``max|w_c| / qmax``; bits 2 and 1:
    ternary and binary weights (:func:`low_bit_weight`).
    """
    if bits in (1, 2):
        codes, scale = low_bit_weight(weight, bits)
        q = codes.to(weight.dtype) * scale.to(weight.dtype).reshape((-1,) + (1,) * (weight.dim() - 1))
        return weight + (q - weight).detach()
    scale = weight_scale(weight, bits)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -qmax(bits) - 1, qmax(bits))


class QuantLayer:
    """Mixin of the quantised layers: ``bits`` (1, 2, 4, 8, 16, 32) and an ``exporting`` switch.

    While ``exporting`` is true the layer computes in plain float32 (the exporter writes the quantised
    weights and the float16 casts into the ONNX graph itself).
    """

    bits: int
    exporting: bool

    def _qweight(self) -> torch.Tensor:
        if self.exporting or self.bits == 32:
            return self.weight
        if self.bits == 16:
            return self.weight.half().float()
        return fake_quant_weight(self.weight, self.bits)

    def _fp16_round(self, x: torch.Tensor) -> torch.Tensor:
        return x if (self.exporting or self.bits != 16) else x.half().float()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"  # type: ignore[misc]


class QuantConv2d(QuantLayer, torch.nn.Conv2d):
    """A ``Conv2d`` whose weights (and, at 16 bits, inputs and outputs) are fake-quantised."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is None else self._fp16_round(self.bias)
        return self._fp16_round(self._conv_forward(self._fp16_round(x), self._qweight(), bias))


class QuantLinear(QuantLayer, torch.nn.Linear):
    """A ``Linear`` whose weights (and, at 16 bits, inputs and outputs) are fake-quantised."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is None else self._fp16_round(self.bias)
        return self._fp16_round(F.linear(self._fp16_round(x), self._qweight(), bias))


class ActFakeQuant(torch.nn.Module):
    """Per-tensor uint8 affine fake quantiser of an activation, with an observed range.

    Modes: ``"qat"`` (in training mode the range follows an exponential moving average of the batch
    min/max; in eval mode it is frozen), ``"observe"`` (collects values for :func:`spaces.compress.calibrate`, passes
    them through), ``"off"`` (identity). The range always contains 0, so a ReLU output gets zero point 0.
    """

    def __init__(self, *, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.mode = "qat"
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialised", torch.tensor(False))
        self._samples: list[torch.Tensor] = []

    def extra_repr(self) -> str:
        return f"mode={self.mode}, range=[{float(self.min_val):.4g}, {float(self.max_val):.4g}]"

    def set_range(self, lo: float, hi: float) -> None:
        """Set the quantisation range (widened to contain 0) and the scale and zero point it implies."""
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        zero = int(min(max(round(-lo / scale), 0), 255))
        self.min_val.fill_(lo)
        self.max_val.fill_(hi)
        self.scale.fill_(scale)
        self.zero_point.fill_(zero)
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        if self.mode == "observe":
            self._samples.append(x.detach())
            return x
        if self.training:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            if not (math.isfinite(lo) and math.isfinite(hi)):  # a diverging batch does not move the range
                lo, hi = float(self.min_val), float(self.max_val)
            elif bool(self.initialised):
                m = self.momentum
                lo, hi = (1 - m) * float(self.min_val) + m * lo, (1 - m) * float(self.max_val) + m * hi
            self.set_range(lo, hi)
        elif not bool(self.initialised):
            raise RuntimeError("an activation quantiser has no range: calibrate the model or train it first")
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)
