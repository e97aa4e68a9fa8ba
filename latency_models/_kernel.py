"""`Kernel`: one operator the runtime executes, as plain data.

A kernel is what the latency predictor reasons about: an operator type, the shape it reads (batch 1,
channels first) and the few attributes that decide its cost. Spaces list the kernels a candidate's
exported ONNX model will execute; the profiler times kernels; the ONNX reader recovers them from a graph.
No torch here: this module runs on an edge device with only numpy and onnxruntime.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

__all__ = ["Kernel", "KERNEL_OPS", "ACTIVATIONS", "BITS"]

#: Operator types a kernel can have.
#: - ``conv``: 2-D convolution (depthwise and grouped through ``groups``), BatchNorm folded in, with an
#:   optional fused activation. ``input_shape`` is (C, H, W).
#: - ``linear``: fully connected layer. ``input_shape`` is (features,).
#: - ``add``: element-wise residual add of two (C, H, W) tensors, optional fused activation.
#: - ``concat``: channel concatenation; ``input_shape`` is the (C, H, W) of the *output*.
#: - ``split``: channel split into ``groups`` equal parts; ``input_shape`` is the (C, H, W) input.
#: - ``channel_shuffle``: reshape-transpose-reshape with ``groups`` groups on a (C, H, W) tensor.
#: - ``global_avgpool``: global average pooling of a (C, H, W) tensor to (C,).
#: - ``maxpool`` / ``avgpool``: spatial pooling with ``kernel_size`` and ``stride``.
#: - ``crelu``: concatenated ReLU (Shang et al., 2016): ``act(concat(x, -x))`` on a (C, H, W) input, output
#:   (2C, H, W); ``activation`` is the ReLU or ReLU6 applied after the concatenation.
#: - ``scale``: a (C, H, W) tensor multiplied channel-wise by a (C, 1, 1) one computed from it: the excitation
#:   of a squeeze-and-excitation block (MobileNetV3, EfficientNet, RegNetY); optional fused activation.
#: - ``act``: an activation of its own on a (C, H, W) tensor (one that follows no conv, linear or add);
#:   ``activation`` says which and is never ``"none"``.
KERNEL_OPS = (
    "conv",
    "linear",
    "add",
    "concat",
    "split",
    "channel_shuffle",
    "global_avgpool",
    "maxpool",
    "avgpool",
    "crelu",
    "scale",
    "act",
)
#: Activations a kernel can fuse: ``hardswish`` and ``hardsigmoid`` as PyTorch defines them (ONNX ``HardSwish``,
#: ``HardSigmoid(alpha=1/6, beta=0.5)``), ``sigmoid``, and ``swish`` (SiLU: ``x * sigmoid(x)``, exported as a
#: ``Sigmoid`` and a ``Mul``).
ACTIVATIONS = ("none", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "swish")
#: Bit widths: 32 float32, 16 float16, 8 int8 weights and activations, 4 int4 weights with int8 activations,
#: 2 ternary weights ({-a, 0, +a} per output channel) and 1 binary weights ({-a, +a}) with int8 activations.
#: ONNX Runtime has no binary or ternary kernels: 1- and 2-bit layers run as int8 (``QLinearConv``); their
#: bits count for size (:attr:`Kernel.weight_bytes`), their time is that of int8.
BITS = (1, 2, 4, 8, 16, 32)
#: Bit widths with integer weights, a per-output-channel float32 scale and int8 activations.
INT_BITS = (1, 2, 4, 8)
#: Bit widths whose convolutions ONNX Runtime runs as int8 ``QLinearConv`` (binary and ternary weights are stored
#: as int8), which holds its uint8 output channels-last (NHWC). 4-bit weights run a float ``Conv``.
QLINEAR_BITS = (1, 2, 8)

_VALID: set[tuple] = set()
_VALID_MAX = 1_000_000

@dataclasses.dataclass(frozen=True)
class Kernel:
    """One runtime operator at batch size 1.

    Attributes:
        op: one of :data:`KERNEL_OPS`.
        input_shape: (C, H, W) for spatial operators, (features,) for ``linear``.
        out_channels: output channels (``conv``) or output features (``linear``); 0 means "same as input".
        kernel_size: square kernel size (``conv``, ``maxpool``, ``avgpool``).
        stride: spatial stride.
        groups: convolution groups, or the groups of ``split`` / ``channel_shuffle``.
        bits: one of :data:`BITS`; 32 is float32.
        activation: fused activation, one of :data:`ACTIVATIONS`.
        padding: spatial padding on each side; ``None`` means ``kernel_size // 2``. The default is stored as
            ``None`` whichever way it was given, so equal kernels compare and hash equal.
    """

    op: str
    input_shape: tuple[int, ...]
    out_channels: int = 0
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    bits: int = 32
    activation: str = "none"
    padding: int | None = None

    def __post_init__(self) -> None:
        shape = tuple(map(int, self.input_shape))
        object.__setattr__(self, "input_shape", shape)
        if self.padding is not None and isinstance(self.kernel_size, int) and self.padding == self.kernel_size // 2:
            object.__setattr__(self, "padding", None)  # the canonical form of the default padding
        # A search lists the same kernels again and again: fields already validated (same values, int types)
        # skip the checks. The set is bounded: cleared when it grows past _VALID_MAX.
        sig = (self.op, shape, self.out_channels, self.kernel_size, self.stride, self.groups, self.bits,
               self.activation, self.padding)
        if sig in _VALID and type(self.out_channels) is type(self.kernel_size) is type(self.stride) \
                is type(self.groups) is type(self.bits) is int:
            return
        self._validate()
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID.add(sig)

    def _validate(self) -> None:
        if self.op not in KERNEL_OPS:
            raise ValueError(f"Kernel op={self.op!r} is not supported; allowed: {', '.join(KERNEL_OPS)}")
        want = 1 if self.op == "linear" else 3
        if len(self.input_shape) != want or any(d <= 0 for d in self.input_shape):
            raise ValueError(
                f"Kernel input_shape={self.input_shape} for op {self.op!r} must be {want} positive integers"
                + (" (features,)" if want == 1 else " (C, H, W)")
            )
        if self.bits not in BITS:
            raise ValueError(f"Kernel bits={self.bits!r} is not supported; allowed: {', '.join(map(str, BITS))}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Kernel activation={self.activation!r} is not supported; allowed: {', '.join(ACTIVATIONS)}")
        for name in ("out_channels", "padding"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"Kernel {name}={value!r} must be a non-negative integer")
        for name in ("kernel_size", "stride", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Kernel {name}={value!r} must be a positive integer")
        cin = self.input_shape[0]
        if self.op == "conv":
            if self.out_channels < 1:
                raise ValueError(f"Kernel out_channels={self.out_channels} must be >= 1 for a conv")
            if cin % self.groups or self.out_channels % self.groups:
                raise ValueError(
                    f"Kernel groups={self.groups} must divide input channels {cin} and out_channels {self.out_channels}"
                )
        if self.op == "act" and self.activation == "none":
            raise ValueError(f"Kernel op='act' needs an activation; allowed: {', '.join(ACTIVATIONS[1:])}")
        if self.op in ("split", "channel_shuffle") and cin % self.groups:
            raise ValueError(f"Kernel groups={self.groups} must divide the {cin} channels of a {self.op}")

    # ----------------------------------------------------------------- derived quantities
    @property
    def pad(self) -> int:
        """Spatial padding on each side."""
        return self.kernel_size // 2 if self.padding is None else self.padding

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Output shape at batch 1: (C, H, W), (C,) after global pooling, (features,) for ``linear``."""
        if self.op == "linear":
            return (self.out_channels or self.input_shape[0],)
        c, h, w = self.input_shape
        if self.op == "global_avgpool":
            return (c,)
        if self.op in ("conv", "maxpool", "avgpool"):
            k, s, p = self.kernel_size, self.stride, self.pad
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            return (self.out_channels if self.op == "conv" else c, oh, ow)
        if self.op == "split":
            return (c // self.groups, h, w)
        if self.op == "crelu":
            return (2 * c, h, w)
        return (c, h, w)

    @property
    def params(self) -> int:
        """Learnable parameters after BatchNorm folding (weights and bias)."""
        if self.op == "conv":
            cin = self.input_shape[0]
            return self.out_channels * (cin // self.groups) * self.kernel_size**2 + self.out_channels
        if self.op == "linear":
            out = self.out_channels or self.input_shape[0]
            return out * self.input_shape[0] + out
        return 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates (conv and linear); element operations count one each for the rest."""
        if self.op == "conv":
            cout, oh, ow = self.output_shape
            return cout * oh * ow * (self.input_shape[0] // self.groups) * self.kernel_size**2
        if self.op == "linear":
            return self.input_shape[0] * (self.out_channels or self.input_shape[0])
        if self.op in ("maxpool", "avgpool"):
            return math.prod(self.output_shape) * self.kernel_size**2
        if self.op == "crelu":
            return math.prod(self.output_shape)
        return math.prod(self.input_shape)

    @property
    def weight_bytes(self) -> float:
        """Bytes of the stored weights at ``bits`` (bias and scales kept in float32)."""
        if self.op not in ("conv", "linear"):
            return 0.0
        out = self.out_channels or self.input_shape[0]
        weights = self.params - out
        extra = 4 * out + (4 * out if self.bits in INT_BITS else 0)  # float32 bias, per-channel scales
        return weights * self.bits / 8 + extra

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Kernel":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"Kernel has unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
        if "op" not in data or "input_shape" not in data:
            raise ValueError("Kernel needs the fields 'op' and 'input_shape'")
        return cls(**{k: (tuple(v) if k == "input_shape" else v) for k, v in data.items()})

    def key(self) -> str:
        """A compact, unique string for this kernel (lookup-table key)."""
        shape = "x".join(map(str, self.input_shape))
        return (
            f"{self.op}:{shape}:o{self.out_channels}:k{self.kernel_size}:s{self.stride}:g{self.groups}"
            f":b{self.bits}:{self.activation}:p{self.pad}"
        )
