"""The plan: a candidate's network as plain data, from which its kernels, its bits and its model follow.

A space decodes a candidate into a *plan*: a small tree of frozen dataclasses (convolutions with BatchNorm
and activation, residual sequences, ShuffleNet units, pooling, the classifier) with every channel count,
stride and bit width resolved. The plan is the single source of truth. Every node answers three questions:

- ``kernels(shape)``: the runtime kernels its ONNX export executes on an input of ``shape`` (no torch), and
  its output shape;
- ``module_bits(prefix)``: the qualified ``Conv2d``/``Linear`` module names of its model, mapped to bits;
- ``build(shape)``: the ``torch.nn.Module`` (BatchNorm at its defaults), whose module paths are the node
  names, so that weights can be looked up by name (a supernet, a state dict).

A space whose model is not made of these nodes (the ``prune`` space decodes a teacher) supplies a node
class of its own with the same three methods.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any, Union

from latency_models import QLINEAR_BITS, Kernel
from spaces.compress._quant import _INT_BITS

if TYPE_CHECKING:
    import torch

__all__ = [
    "QDQ_BITS",
    "QLINEAR_BITS",
    "ConvBN",
    "DualUnit",
    "GlobalPool",
    "Linear",
    "MaxPool",
    "Node",
    "Seq",
    "Shuffle",
    "SplitUnit",
    "crelu_walk",
    "shuffle_bits",
    "default_stem_stride",
    "keep_channels",
    "make_divisible",
    "pool_bits",
    "with_pool_bits",
    "with_crelu",
]

Shape = tuple[int, ...]


# --------------------------------------------------------------------------------------------- channel maths
def make_divisible(value: float, multiple: int) -> int:
    """Round ``value`` to the nearest multiple of ``multiple`` (at least one multiple, never below 90 %)."""
    rounded = max(multiple, int(value + multiple / 2) // multiple * multiple)
    if rounded < 0.9 * value:
        rounded += multiple
    return rounded


def keep_channels(channels: int, ratio: float, multiple: int) -> int:
    """Channels left after pruning ``ratio`` of ``channels``, rounded to ``multiple``.

    Ratio 0 keeps every channel (even when ``channels`` is not a multiple); otherwise the result is a
    multiple of ``multiple``, at least one multiple and never more than ``channels``.
    """
    if ratio <= 0:
        return channels
    kept = max(multiple, math.floor(channels * (1.0 - ratio) / multiple + 0.5) * multiple)
    return min(channels, kept)


def default_stem_stride(input_size: int) -> int:
    """Stem stride of the students: 1 for small inputs (CIFAR, digits), 2 (as on ImageNet) above 64 pixels."""
    return 1 if input_size <= 64 else 2


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


# --------------------------------------------------------------------------------------------- plan nodes
@dataclasses.dataclass(frozen=True)
class ConvBN:
    """``Conv2d`` (no bias) + ``BatchNorm2d`` + optional activation; module ``<name>.conv`` is quantised.

    With ``crelu`` (transferred filters, Shang et al. 2016) the convolution learns ``cout / 2`` filters and
    the layer outputs ``act(concat(y, -y))``: half the weights and MACs for the same ``cout`` channels.
    """

    name: str
    cin: int
    cout: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    activation: str = "relu"  # "relu", "relu6" or "none"
    padding: int | None = None  # None: kernel_size // 2
    bits: int = 32
    crelu: bool = False

    @property
    def pad(self) -> int:
        return self.kernel_size // 2 if self.padding is None else self.padding

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        out, kernels = _conv_kernels(self, tuple(shape))
        return out, list(kernels)

    def _kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        if shape[0] != self.cin:
            raise RuntimeError(f"plan error: {self.name} expects {self.cin} channels, gets {shape[0]}")
        if self.crelu:
            k = Kernel("conv", shape, out_channels=self.cout // 2, kernel_size=self.kernel_size, stride=self.stride,
                       groups=self.groups, bits=self.bits, activation="none", padding=self.pad)
            c = Kernel("crelu", k.output_shape, activation=self.activation)
            return c.output_shape, [k, c]
        k = Kernel("conv", shape, out_channels=self.cout, kernel_size=self.kernel_size, stride=self.stride,
                   groups=self.groups, bits=self.bits, activation=self.activation, padding=self.pad)
        return k.output_shape, [k]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        return {_join(_join(prefix, self.name), "conv"): self.bits}

    def build(self, shape: Shape) -> "torch.nn.Module":
        return _torch_classes()["ConvBNAct"](self)


@functools.lru_cache(maxsize=1 << 14)
def _kernel(op: str, shape: Shape, **attributes: Any) -> Kernel:
    """``Kernel(op, shape, **attributes)``, the same instance for the next candidates that have it."""
    return Kernel(op, tuple(shape), **attributes)


@functools.lru_cache(maxsize=1 << 14)
def _conv_kernels(node: ConvBN, shape: Shape) -> tuple[Shape, tuple[Kernel, ...]]:
    """A convolution's kernels, kept for the next candidates that have it (the same ``Kernel`` instances
    again: a predictor finds their records on them without hashing them)."""
    out, kernels = node._kernels(shape)
    return out, tuple(kernels)


@dataclasses.dataclass(frozen=True)
class Shuffle:
    """Channel shuffle with ``groups`` groups (reshape, transpose, reshape)."""

    name: str
    groups: int

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        return shape, [_kernel("channel_shuffle", shape, groups=self.groups)]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        return {}

    def build(self, shape: Shape) -> "torch.nn.Module":
        return _torch_classes()["ChannelShuffle"](self.groups, shape)


@dataclasses.dataclass(frozen=True)
class Seq:
    """Children applied in order; with ``residual`` the input is added to the result."""

    name: str
    children: tuple["Node", ...] = ()
    residual: bool = False

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        out, kernels = shape, []
        for child in self.children:
            out, more = child.kernels(out)
            if isinstance(child, Shuffle) and kernels and kernels[-1].op == "conv":
                more = _shuffled_after(more, kernels[-1].bits)
            kernels += more
        if self.residual:
            if out != shape:
                raise RuntimeError(f"plan error: residual {self.name} maps {shape} to {out}")
            kernels.append(_kernel("add", shape))
        return out, kernels

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        path, out = _join(prefix, self.name), {}
        for child in self.children:
            out.update(child.module_bits(path))
        return out

    def build(self, shape: Shape) -> "torch.nn.Module":
        from collections import OrderedDict

        from torch import nn

        modules: OrderedDict[str, nn.Module] = OrderedDict()
        out = shape
        for child in self.children:
            modules[child.name] = child.build(out)
            out, _ = child.kernels(out)
        return (_torch_classes()["Residual"] if self.residual else nn.Sequential)(modules)


@dataclasses.dataclass(frozen=True)
class SplitUnit:
    """ShuffleNetV2 basic unit: split channels in halves, ``branch`` on the second, concat, shuffle 2."""

    name: str
    branch: Seq

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        c, h, w = shape
        (cb, hb, wb), more = self.branch.kernels((c - c // 2, h, w))
        out = (c // 2 + cb, hb, wb)
        return out, [_kernel("split", shape, groups=2), *more, _kernel("concat", out),
                     _kernel("channel_shuffle", out, groups=2)]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        return self.branch.module_bits(_join(prefix, self.name))

    def build(self, shape: Shape) -> "torch.nn.Module":
        c, h, w = shape
        out, _ = self.kernels(shape)
        return _torch_classes()["SplitBlock"](self.branch.build((c - c // 2, h, w)), shape, out)


@dataclasses.dataclass(frozen=True)
class DualUnit:
    """ShuffleNetV2 down-sampling unit: concat(``branch1(x)``, ``branch2(x)``), shuffle 2."""

    name: str
    branch1: Seq
    branch2: Seq

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        (c1, h1, w1), k1 = self.branch1.kernels(shape)
        (c2, h2, w2), k2 = self.branch2.kernels(shape)
        if (h1, w1) != (h2, w2):
            raise RuntimeError(f"plan error: branches of {self.name} disagree on spatial size")
        out = (c1 + c2, h1, w1)
        ends = [ks[-1].bits if ks and ks[-1].op == "conv" else 32 for ks in (k1, k2)]  # (a CReLU ends in float)
        return out, [*k1, *k2, _kernel("concat", out),
                     _kernel("channel_shuffle", out, groups=2, bits=shuffle_bits(*ends))]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        path = _join(prefix, self.name)
        return {**self.branch1.module_bits(path), **self.branch2.module_bits(path)}

    def build(self, shape: Shape) -> "torch.nn.Module":
        out, _ = self.kernels(shape)
        return _torch_classes()["DualBlock"](self.branch1.build(shape), self.branch2.build(shape), out)


#: Bit widths whose layers quantise the activations around them (QDQ, uint8 activations): the quantiser's own.
QDQ_BITS = _INT_BITS


def shuffle_bits(*producer_bits: int) -> int:
    """The bits a channel shuffle runs at after the layers of ``producer_bits`` (one, or each input of the
    concatenation it shuffles): 8 when every one runs as ``QLinearConv`` (:data:`QLINEAR_BITS`), 32 otherwise.

    The export quantises such a layer's output (and a concatenation of quantised tensors), and ONNX Runtime
    then shuffles the uint8 NHWC tensor with one strided ``Transpose`` merged with the layout's, 3.4-4.6 ns per
    element in the models on an Intel Xeon against 0.35-1.0 for a float shuffle alone
    (``experiments/results/int8_shuffle.md``): a different kernel, which the profiler times as such
    (``latency_models.kernel_graph``). After a 4-bit layer
    (a float ``Conv``, NCHW) the shuffle runs on uint8 NCHW, about as fast as in float: it stays at 32."""
    return 8 if producer_bits and all(b in QLINEAR_BITS for b in producer_bits) else 32


def _shuffled_after(kernels: list[Kernel], producer_bits: int) -> list[Kernel]:
    """A :class:`Shuffle`'s kernels at :func:`shuffle_bits` of the convolution before it."""
    bits = shuffle_bits(producer_bits)
    return [dataclasses.replace(k, bits=bits) if k.op == "channel_shuffle" and k.bits != bits else k
            for k in kernels]


def pool_bits(producer_bits: int, consumer_bits: int) -> int:
    """The bits a max pool runs at between a layer of ``producer_bits`` and one of ``consumer_bits``: 8 when
    either quantises its activations (:data:`QDQ_BITS`: a ``DequantizeLinear`` before the pool or a
    ``QuantizeLinear`` after it), 32 otherwise. ONNX Runtime moves that quantisation across the pool and runs
    it on uint8, 4 to 21 times slower than in float on this x86 CPU (``experiments/results/int8_maxpool.md``)."""
    return 8 if producer_bits in QDQ_BITS or consumer_bits in QDQ_BITS else 32


def with_pool_bits(kernels: list[Kernel]) -> list[Kernel]:
    """``kernels`` with every ``maxpool`` at :func:`pool_bits` of the weight layers next to it in the list (the
    kernel before it and the one after it, when they are ``conv`` / ``linear``): a chain of layers, as a
    plain CNN's export lists them."""
    out = list(kernels)
    for i, k in enumerate(kernels):
        if k.op != "maxpool":
            continue
        before = kernels[i - 1].bits if i and kernels[i - 1].op in ("conv", "linear") else 32
        after = kernels[i + 1].bits if i + 1 < len(kernels) and kernels[i + 1].op in ("conv", "linear") else 32
        bits = pool_bits(before, after)
        if bits != k.bits:
            out[i] = dataclasses.replace(k, bits=bits)
    return out


@dataclasses.dataclass(frozen=True)
class MaxPool:
    """Max pooling; ``bits`` is what it runs at (:func:`pool_bits` of its neighbours: 8 or 32)."""

    name: str
    kernel_size: int
    stride: int
    padding: int
    bits: int = 32

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        k = _kernel("maxpool", shape, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    bits=self.bits)
        return k.output_shape, [k]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        return {}

    def build(self, shape: Shape) -> "torch.nn.Module":
        from torch import nn

        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding)


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    name: str

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        return (shape[0],), [_kernel("global_avgpool", shape)]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        return {}

    def build(self, shape: Shape) -> "torch.nn.Module":
        return _torch_classes()["GlobalAvgPool"]()


@dataclasses.dataclass(frozen=True)
class Linear:
    """Fully connected layer; module ``<name>`` is quantised."""

    name: str
    cin: int
    cout: int
    bits: int = 32

    def kernels(self, shape: Shape) -> tuple[Shape, list[Kernel]]:
        k = _kernel("linear", shape, out_channels=self.cout, bits=self.bits)
        return k.output_shape, [k]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        return {_join(prefix, self.name): self.bits}

    def build(self, shape: Shape) -> "torch.nn.Module":
        from torch import nn

        return nn.Linear(self.cin, self.cout)


#: A plan node: anything with ``kernels(shape)``, ``module_bits(prefix)`` and ``build(shape)``.
Node = Union[ConvBN, Shuffle, Seq, SplitUnit, DualUnit, MaxPool, GlobalPool, Linear, Any]


def crelu_eligible(node: ConvBN) -> bool:
    """A dense convolution with a ReLU/ReLU6 and an even channel count can learn half and mirror the rest."""
    return node.groups == 1 and node.activation in ("relu", "relu6") and node.cout % 2 == 0 and node.cout >= 2


def with_crelu(root: Node, n: int, *, exclude: tuple[str, ...] = ("head",)) -> Node:
    """``root`` with CReLU on its first ``n`` eligible convolutions in graph order (:func:`crelu_eligible`,
    top-level names in ``exclude`` skipped): the "early convolutions" of transferred filters."""
    return crelu_walk(root, n, exclude=exclude)[0]


def crelu_walk(root: Node, n: int, *, exclude: tuple[str, ...] = ("head",)) -> tuple[Node, int]:
    """:func:`with_crelu` of ``root``, and how many of the ``n`` CReLUs are left for the nodes after it (a
    plan cut into consecutive parts gets the same CReLUs as the whole when each part starts with what the
    previous one left)."""
    left = [n]

    def walk(node: Node, top: bool) -> Node:
        if left[0] <= 0:
            return node
        if isinstance(node, ConvBN):
            if crelu_eligible(node) and not (top and node.name in exclude):
                left[0] -= 1
                return dataclasses.replace(node, crelu=True)
            return node
        if isinstance(node, Seq):
            return dataclasses.replace(node, children=tuple(walk(c, top and node.name == "") for c in node.children))
        if isinstance(node, SplitUnit):
            return dataclasses.replace(node, branch=walk(node.branch, False))
        if isinstance(node, DualUnit):
            return dataclasses.replace(node, branch1=walk(node.branch1, False), branch2=walk(node.branch2, False))
        return node

    return (walk(root, True), left[0]) if n > 0 else (root, n)


# --------------------------------------------------------------------------------------------- torch modules
@functools.cache
def _torch_classes() -> dict[str, type]:
    """The torch module classes, defined on first use so that importing spaces never imports torch."""
    import torch
    from torch import nn

    class ConvBNAct(nn.Module):
        def __init__(self, spec: ConvBN) -> None:
            super().__init__()
            learned = spec.cout // 2 if spec.crelu else spec.cout
            self.conv = nn.Conv2d(spec.cin, learned, spec.kernel_size, spec.stride, spec.pad,
                                  groups=spec.groups, bias=False)
            self.bn = nn.BatchNorm2d(learned)
            self.act = {"relu": nn.ReLU, "relu6": nn.ReLU6, "none": nn.Identity}[spec.activation]()
            self.crelu = spec.crelu

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            if self.crelu:  # transferred filters: the negated half, then the activation
                y = torch.cat((y, -y), dim=1)
            return self.act(y)

    class ChannelShuffle(nn.Module):
        """Reshape-transpose-reshape with static channel and spatial sizes, so ONNX gets constant shapes."""

        def __init__(self, groups: int, shape: tuple[int, int, int]) -> None:
            super().__init__()
            self.groups, self.shape = groups, tuple(shape)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c, h, w = self.shape
            x = x.reshape(-1, self.groups, c // self.groups, h, w).transpose(1, 2)
            return x.reshape(-1, c, h, w)

    class Residual(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + super().forward(x)

    class SplitBlock(nn.Module):
        def __init__(self, branch: nn.Module, shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> None:
            super().__init__()
            self.branch = branch
            self.half = shape[0] // 2
            self.rest = shape[0] - self.half
            self.shuffle = ChannelShuffle(2, out_shape)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = x.split([self.half, self.rest], dim=1)
            return self.shuffle(torch.cat((a, self.branch(b)), dim=1))

    class DualBlock(nn.Module):
        def __init__(self, branch1: nn.Module, branch2: nn.Module, out_shape: tuple[int, int, int]) -> None:
            super().__init__()
            self.branch1, self.branch2 = branch1, branch2
            self.shuffle = ChannelShuffle(2, out_shape)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shuffle(torch.cat((self.branch1(x), self.branch2(x)), dim=1))

    class GlobalAvgPool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    return {
        "ConvBNAct": ConvBNAct, "ChannelShuffle": ChannelShuffle, "Residual": Residual,
        "SplitBlock": SplitBlock, "DualBlock": DualBlock, "GlobalAvgPool": GlobalAvgPool,
    }
