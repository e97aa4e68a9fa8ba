"""Shared building blocks of the built-in student spaces.

A built-in space decodes a candidate into a *plan*: a small tree of plain dataclasses (convolutions with
BatchNorm and activation, residual sequences, ShuffleNet units, pooling, the classifier) with every channel
count, stride and bit width resolved. The plan is the single source of truth: :func:`plan_kernels` walks it
to list the runtime kernels (no torch), :func:`plan_module_bits` to name the quantisable modules, and
:func:`build_module` turns it into a ``torch.nn.Module`` whose ONNX export executes exactly those kernels.

:class:`PlannedSpace` implements the :class:`~spaces.SearchSpace` contract on top of a plan: a subclass
supplies its architecture genes (defaults, validation, sampling), its per-layer table and its plan.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

import numpy as np

from latency_models import BITS, Kernel
from spaces._base import PRUNE_RATIO_MAX, SEARCH_PARTS, Layer, SearchSpace
from spaces._candidate import Candidate

if TYPE_CHECKING:
    import optuna
    import torch

__all__ = [
    "ConvBN",
    "DualUnit",
    "GlobalPool",
    "Linear",
    "MaxPool",
    "PlannedSpace",
    "Seq",
    "Shuffle",
    "SplitUnit",
    "StudentSpace",
    "Suggest",
    "build_module",
    "keep_channels",
    "make_divisible",
    "plan_kernels",
    "plan_module_bits",
]

#: Step of the prune ratios that ``sample`` draws (from 0 to :data:`PRUNE_RATIO_MAX`).
PRUNE_RATIO_STEP = 0.05


# --------------------------------------------------------------------------------------------- plan nodes
@dataclasses.dataclass(frozen=True)
class ConvBN:
    """``Conv2d`` (no bias) + ``BatchNorm2d`` + optional activation; module ``<name>.conv`` is quantised."""

    name: str
    cin: int
    cout: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    activation: str = "relu"  # "relu", "relu6" or "none"
    padding: int | None = None  # None: kernel_size // 2
    bits: int = 32

    @property
    def pad(self) -> int:
        return self.kernel_size // 2 if self.padding is None else self.padding


@dataclasses.dataclass(frozen=True)
class Shuffle:
    """Channel shuffle with ``groups`` groups (reshape, transpose, reshape)."""

    name: str
    groups: int


@dataclasses.dataclass(frozen=True)
class Seq:
    """Children applied in order; with ``residual`` the input is added to the result."""

    name: str
    children: tuple["Node", ...] = ()
    residual: bool = False


@dataclasses.dataclass(frozen=True)
class SplitUnit:
    """ShuffleNetV2 basic unit: split channels in halves, ``branch`` on the second, concat, shuffle 2."""

    name: str
    branch: Seq


@dataclasses.dataclass(frozen=True)
class DualUnit:
    """ShuffleNetV2 down-sampling unit: concat(``branch1(x)``, ``branch2(x)``), shuffle 2."""

    name: str
    branch1: Seq
    branch2: Seq


@dataclasses.dataclass(frozen=True)
class MaxPool:
    name: str
    kernel_size: int
    stride: int
    padding: int


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    name: str


@dataclasses.dataclass(frozen=True)
class Linear:
    """Fully connected layer; module ``<name>`` is quantised."""

    name: str
    cin: int
    cout: int
    bits: int = 32


Node = Union[ConvBN, Shuffle, Seq, SplitUnit, DualUnit, MaxPool, GlobalPool, Linear]


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


# --------------------------------------------------------------------------------------------- kernels
def _kernel_padding(kernel_size: int, pad: int) -> int | None:
    """The canonical ``Kernel.padding``: ``None`` when it is the default ``kernel_size // 2``."""
    return None if pad == kernel_size // 2 else pad


def plan_kernels(node: Node, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Kernel]]:
    """The kernels ``node`` executes on an input of ``shape`` (batch 1, no batch dim) and its output shape.

    Weightless kernels (add, concat, split, shuffle, pools) are float32 (``bits=32``).
    """
    if isinstance(node, ConvBN):
        c, h, w = shape
        if c != node.cin:
            raise RuntimeError(f"plan error: {node.name} expects {node.cin} channels, gets {c}")
        k = Kernel(
            "conv", shape, out_channels=node.cout, kernel_size=node.kernel_size, stride=node.stride,
            groups=node.groups, bits=node.bits, activation=node.activation,
            padding=_kernel_padding(node.kernel_size, node.pad),
        )
        return k.output_shape, [k]
    if isinstance(node, Shuffle):
        return shape, [Kernel("channel_shuffle", shape, groups=node.groups)]
    if isinstance(node, Seq):
        out, kernels = shape, []
        for child in node.children:
            out, more = plan_kernels(child, out)
            kernels += more
        if node.residual:
            if out != shape:
                raise RuntimeError(f"plan error: residual {node.name} maps {shape} to {out}")
            kernels.append(Kernel("add", shape))
        return out, kernels
    if isinstance(node, SplitUnit):
        c, h, w = shape
        kernels = [Kernel("split", shape, groups=2)]
        (cb, hb, wb), more = plan_kernels(node.branch, (c - c // 2, h, w))
        out = (c // 2 + cb, hb, wb)
        return out, kernels + more + [Kernel("concat", out), Kernel("channel_shuffle", out, groups=2)]
    if isinstance(node, DualUnit):
        (c1, h1, w1), k1 = plan_kernels(node.branch1, shape)
        (c2, h2, w2), k2 = plan_kernels(node.branch2, shape)
        if (h1, w1) != (h2, w2):
            raise RuntimeError(f"plan error: branches of {node.name} disagree on spatial size")
        out = (c1 + c2, h1, w1)
        return out, k1 + k2 + [Kernel("concat", out), Kernel("channel_shuffle", out, groups=2)]
    if isinstance(node, MaxPool):
        k = Kernel("maxpool", shape, kernel_size=node.kernel_size, stride=node.stride,
                   padding=_kernel_padding(node.kernel_size, node.padding))
        return k.output_shape, [k]
    if isinstance(node, GlobalPool):
        return (shape[0],), [Kernel("global_avgpool", shape)]
    if isinstance(node, Linear):
        k = Kernel("linear", shape, out_channels=node.cout, bits=node.bits)
        return k.output_shape, [k]
    raise TypeError(f"unknown plan node {node!r}")


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Seq):
        return node.children
    if isinstance(node, SplitUnit):
        return (node.branch,)
    if isinstance(node, DualUnit):
        return (node.branch1, node.branch2)
    return ()


def plan_module_bits(node: Node, prefix: str = "") -> dict[str, int]:
    """Qualified ``Conv2d`` / ``Linear`` module names of ``build_module(node)`` mapped to their bits."""
    path = f"{prefix}{node.name}"
    if isinstance(node, ConvBN):
        return {f"{path}.conv": node.bits}
    if isinstance(node, Linear):
        return {path: node.bits}
    out: dict[str, int] = {}
    for child in _children(node):
        out.update(plan_module_bits(child, f"{path}." if path else ""))
    return out


# --------------------------------------------------------------------------------------------- torch modules
@functools.cache
def _torch_classes() -> dict[str, type]:
    """The torch module classes, defined on first use so that importing spaces never imports torch."""
    import torch
    from torch import nn

    class ConvBNAct(nn.Module):
        def __init__(self, spec: ConvBN) -> None:
            super().__init__()
            self.conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel_size, spec.stride, spec.pad,
                                  groups=spec.groups, bias=False)
            self.bn = nn.BatchNorm2d(spec.cout)
            self.act = {"relu": nn.ReLU, "relu6": nn.ReLU6, "none": nn.Identity}[spec.activation]()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.bn(self.conv(x)))

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


def build_module(node: Node, shape: tuple[int, ...]) -> "torch.nn.Module":
    """The ``torch.nn.Module`` of ``node`` for inputs of ``shape`` (C, H, W); BatchNorm at its defaults."""
    from collections import OrderedDict

    from torch import nn

    t = _torch_classes()
    if isinstance(node, ConvBN):
        return t["ConvBNAct"](node)
    if isinstance(node, Shuffle):
        return t["ChannelShuffle"](node.groups, shape)
    if isinstance(node, Seq):
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        out = shape
        for child in node.children:
            modules[child.name] = build_module(child, out)
            out, _ = plan_kernels(child, out)
        return (t["Residual"] if node.residual else nn.Sequential)(modules)
    if isinstance(node, SplitUnit):
        c, h, w = shape
        out, _ = plan_kernels(node, shape)
        return t["SplitBlock"](build_module(node.branch, (c - c // 2, h, w)), shape, out)
    if isinstance(node, DualUnit):
        out, _ = plan_kernels(node, shape)
        return t["DualBlock"](build_module(node.branch1, shape), build_module(node.branch2, shape), out)
    if isinstance(node, MaxPool):
        return nn.MaxPool2d(node.kernel_size, node.stride, node.padding)
    if isinstance(node, GlobalPool):
        return t["GlobalAvgPool"]()
    if isinstance(node, Linear):
        return nn.Linear(node.cin, node.cout)
    raise TypeError(f"unknown plan node {node!r}")


# --------------------------------------------------------------------------------------------- sampling
class Suggest:
    """One interface over an Optuna trial (or ``FixedTrial``) and a numpy generator.

    Parameter names are the Optuna parameter names, so a study resumed from storage, or a ``FixedTrial``
    of a finished trial's ``params``, gives the same candidate.
    """

    def __init__(self, trial_or_rng: Any) -> None:
        if isinstance(trial_or_rng, np.random.Generator):
            self.rng, self.trial = trial_or_rng, None
        elif hasattr(trial_or_rng, "suggest_categorical") and hasattr(trial_or_rng, "suggest_float"):
            self.rng, self.trial = None, trial_or_rng
        else:
            raise ValueError(
                f"trial_or_rng={trial_or_rng!r} is not supported; allowed: an optuna.trial.Trial (or FixedTrial) "
                "or a numpy.random.Generator"
            )

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if self.trial is not None:
            return self.trial.suggest_categorical(name, list(choices))
        return choices[int(self.rng.integers(len(choices)))]

    def integer(self, name: str, low: int, high: int) -> int:
        if low == high:
            return low
        if self.trial is not None:
            return int(self.trial.suggest_int(name, low, high))
        return int(self.rng.integers(low, high + 1))

    def real(self, name: str, low: float, high: float, step: float) -> float:
        if self.trial is not None:
            value = float(self.trial.suggest_float(name, low, high, step=step))
        else:
            value = low + step * int(self.rng.integers(0, round((high - low) / step) + 1))
        return round(value, 6)


# --------------------------------------------------------------------------------------------- the space
def _allowed(values: Sequence[Any]) -> str:
    return ", ".join(map(str, values))


class PlannedSpace(SearchSpace):
    """A :class:`~spaces.SearchSpace` whose models are decoded from a plan (see the module docstring).

    Subclasses implement:

    - ``_arch(genes)``: validate architecture genes (a dict without ``prune_ratios`` / ``bits``), fill in
      defaults for the missing ones and return JSON-ready genes; unknown or bad genes raise ``ValueError``.
    - ``_sample_arch(suggest)``: draw architecture genes with a :class:`Suggest`.
    - ``_layers(arch)``: the per-layer table (:class:`Layer`) of an architecture, in order.
    - ``_plan(arch, ratios, bits)``: the root :class:`Seq` of the model (``name=""``).

    Option shared by the built-in spaces: ``channel_multiple`` (pruned channel counts are multiples of it).
    """

    def __init__(self, *, num_classes: int, input_size: int, in_channels: int = 3, channel_multiple: int = 8) -> None:
        super().__init__(num_classes=num_classes, input_size=input_size, in_channels=in_channels)
        if not isinstance(channel_multiple, int) or isinstance(channel_multiple, bool) or channel_multiple < 1:
            raise ValueError(f"channel_multiple={channel_multiple!r} must be a positive integer")
        self.channel_multiple = channel_multiple

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "channel_multiple": self.channel_multiple}

    # ----------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _arch(self, genes: Mapping[str, Any]) -> dict[str, Any]:
        """The validated architecture genes, defaults filled in (``ValueError`` naming a bad gene)."""

    @abc.abstractmethod
    def _sample_arch(self, suggest: Suggest) -> dict[str, Any]:
        """Architecture genes drawn through ``suggest`` (an Optuna trial or a numpy generator)."""

    @abc.abstractmethod
    def _layers(self, arch: Mapping[str, Any]) -> list[Layer]:
        """The per-layer units of ``arch`` that prune ratios and bits index, in order."""

    def _plan(self, arch: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> Seq:
        """The network as plain data, from which ``build``, ``kernels`` and ``module_bits`` are derived.

        A space that overrides those three itself (the ``prune`` space decodes a teacher instead) need
        not implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no plan: it must override build, kernels and module_bits")

    # ----------------------------------------------------------------- the contract
    def candidate(self, **genes: Any) -> Candidate:
        """A validated candidate; architecture genes default to the space's default architecture.

        ``prune_ratios`` and ``bits`` (one per entry of :meth:`layer_names`) default to 0 and 32. A ratio
        on a layer with nothing to prune is reset to 0, and bits on a layer without weights to 32, so that
        equal networks are equal candidates.
        """
        ratios_in = genes.pop("prune_ratios", None)
        bits_in = genes.pop("bits", None)
        arch = self._arch(genes)
        layers = self._layers(arch)
        n = len(layers)
        ratios = self._check_list("prune_ratios", ratios_in, n, 0.0)
        bits = self._check_list("bits", bits_in, n, 32)
        for i, (layer, r, b) in enumerate(zip(layers, ratios, bits)):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= PRUNE_RATIO_MAX:
                raise ValueError(
                    f"prune_ratios[{i}] (layer {layer.name!r})={r!r} is not allowed; allowed: a number in "
                    f"[0, {PRUNE_RATIO_MAX}]"
                )
            if isinstance(b, bool) or b not in BITS:
                raise ValueError(f"bits[{i}] (layer {layer.name!r})={b!r} is not allowed; allowed: {_allowed(BITS)}")
        ratios = [round(float(r), 6) if layer.prunable else 0.0 for layer, r in zip(layers, ratios)]
        bits = [int(b) if layer.quantisable else 32 for layer, b in zip(layers, bits)]
        cand = Candidate(self.name, arch, ratios, bits, self.options)
        # Remember who validated it (not a dataclass field: equality, hash and JSON are unchanged), so that
        # plan(), kernels() and build() of an equal space skip validating it again.
        object.__setattr__(cand, "_validated_by", self._validation_key())
        return cand

    def _validation_key(self) -> tuple[str, str, str]:
        key = self.__dict__.get("_vkey")
        if key is None:
            options = json.dumps(self.options, sort_keys=True, default=repr)
            key = self.__dict__["_vkey"] = (type(self).__qualname__, self.name, options)
        return key

    @staticmethod
    def _check_list(gene: str, values: Any, n: int, default: Any) -> list[Any]:
        if values is None:
            return [default] * n
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"{gene}={values!r} is not allowed; allowed: a list of {n} values, one per layer")
        if len(values) != n:
            raise ValueError(f"{gene} has {len(values)} values; allowed: exactly {n}, one per layer")
        return list(values)

    def sample(
        self, trial_or_rng: "optuna.trial.Trial | np.random.Generator", *, search: Sequence[str] = SEARCH_PARTS
    ) -> Candidate:
        if isinstance(search, str) or not set(search) <= set(SEARCH_PARTS):
            raise ValueError(f"search={search!r} is not allowed; allowed: a subset of {SEARCH_PARTS}")
        suggest = Suggest(trial_or_rng)
        arch = self._sample_arch(suggest) if "arch" in search else self._arch({})
        layers = self._layers(arch)
        ratios = [
            suggest.real(f"prune_{layer.name}", 0.0, PRUNE_RATIO_MAX, PRUNE_RATIO_STEP)
            if "prune" in search and layer.prunable else 0.0
            for layer in layers
        ]
        bits = [
            suggest.categorical(f"bits_{layer.name}", BITS) if "bits" in search and layer.quantisable else 32
            for layer in layers
        ]
        return self.candidate(**arch, prune_ratios=ratios, bits=bits)

    def _decode(self, candidate: Candidate) -> tuple[dict[str, Any], list[float], list[int]]:
        """Validate ``candidate`` for this space; returns (architecture genes, prune ratios, bits)."""
        if not isinstance(candidate, Candidate):
            raise ValueError(f"candidate={candidate!r} is not allowed; allowed: a spaces.Candidate")
        if candidate.space != self.name:
            raise ValueError(f"candidate.space={candidate.space!r} is not allowed; allowed: {self.name!r}")
        if candidate.options and dict(candidate.options) != self.options:
            raise ValueError(
                f"candidate.options={dict(candidate.options)!r} differ from this space's options {self.options!r}; "
                f"use get_space({self.name!r}, **candidate.options)"
            )
        if candidate.__dict__.get("_validated_by") == self._validation_key():
            return dict(candidate.genes), list(candidate.prune_ratios), list(candidate.bits)
        genes = dict(candidate.genes)
        for key in ("prune_ratios", "bits"):
            if key in genes:
                raise ValueError(f"candidate.genes has {key!r}; allowed: architecture genes only")
        valid = self.candidate(**genes, prune_ratios=list(candidate.prune_ratios) or None,
                               bits=list(candidate.bits) or None)
        if valid == candidate:  # already in normal form: decode it without validating next time
            object.__setattr__(candidate, "_validated_by", self._validation_key())
        return dict(valid.genes), list(valid.prune_ratios), list(valid.bits)

    def plan(self, candidate: Candidate) -> Seq:
        """The resolved plan of ``candidate`` (channel counts, strides, bits of every layer)."""
        arch, ratios, bits = self._decode(candidate)
        return self._plan(arch, ratios, bits)

    def layer_names(self, candidate: Candidate) -> list[str]:
        arch, _, _ = self._decode(candidate)
        return [layer.name for layer in self._layers(arch)]

    def layers(self, candidate: Candidate) -> list[Layer]:
        """The per-layer table of ``candidate``: name, whether prunable, whether it has weights."""
        arch, _, _ = self._decode(candidate)
        return self._layers(arch)

    def kernels(self, candidate: Candidate) -> list[Kernel]:
        out, kernels = plan_kernels(self.plan(candidate), self.input_shape)
        if out != (self.num_classes,):
            raise RuntimeError(f"plan error: the model outputs {out}, not ({self.num_classes},)")
        return kernels

    def module_bits(self, candidate: Candidate) -> dict[str, int]:
        return plan_module_bits(self.plan(candidate))

    def build(self, candidate: Candidate) -> "torch.nn.Module":
        return build_module(self.plan(candidate), self.input_shape).eval()


class StudentSpace(PlannedSpace):
    """A :class:`PlannedSpace` with the options of the MobileNet / ShuffleNet students.

    Options: ``num_classes`` (100), ``input_size`` (32), ``in_channels`` (3), ``channel_multiple`` (8),
    ``stem_stride`` (1 or 2; ``None`` picks :func:`default_stem_stride` of the input size).
    """

    def __init__(
        self,
        *,
        num_classes: int = 100,
        input_size: int = 32,
        in_channels: int = 3,
        channel_multiple: int = 8,
        stem_stride: int | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                         channel_multiple=channel_multiple)
        self.stem_stride = (
            default_stem_stride(input_size) if stem_stride is None else check_choice("stem_stride", stem_stride, (1, 2))
        )

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "stem_stride": self.stem_stride}


def per_stage(
    gene: str, value: Any, depths: Sequence[int], allowed: Sequence[Any], check: Callable[[Any], bool] | None = None
) -> list[list[Any]]:
    """Validate a nested per-stage, per-block gene (``value[stage][block]``) against ``depths``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != len(depths):
        raise ValueError(f"{gene}={value!r} is not allowed; allowed: {len(depths)} lists, one per stage")
    out = []
    for s, (stage, depth) in enumerate(zip(value, depths)):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != depth:
            raise ValueError(
                f"{gene}[{s}]={stage!r} is not allowed; allowed: a list of {depth} values (the stage's depth)"
            )
        for j, v in enumerate(stage):
            ok = check(v) if check is not None else (not isinstance(v, bool) and v in allowed)
            if not ok:
                raise ValueError(f"{gene}[{s}][{j}]={v!r} is not allowed; allowed: {_allowed(allowed)}")
        out.append(list(stage))
    return out


def check_choice(gene: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed`` (booleans never are), else ``ValueError``."""
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{gene}={value!r} is not allowed; allowed: {_allowed(allowed)}")
    return value


def check_depths(gene: str, value: Any, max_depths: Sequence[int]) -> list[int]:
    """Per-stage block counts, each an integer in [1, max_depths[stage]]."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != len(max_depths):
        raise ValueError(f"{gene}={value!r} is not allowed; allowed: {len(max_depths)} integers, one per stage")
    for s, (d, top) in enumerate(zip(value, max_depths)):
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= top:
            raise ValueError(f"{gene}[{s}]={d!r} is not allowed; allowed: an integer in [1, {top}]")
    return [int(d) for d in value]


def sample_stages(
    suggest: Suggest,
    depth_gene: str,
    depth_param: str,
    max_depths: Sequence[int],
    per_block: Mapping[str, tuple[str, Sequence[Any]]],
) -> dict[str, Any]:
    """Draw per-stage depths (gene ``depth_gene``, parameters ``f"{depth_param}_{s}"``) and, for every
    block, one choice per entry of ``per_block``.

    ``per_block`` maps a gene name to (parameter prefix, choices); the parameter of block ``j`` of stage
    ``s`` is ``f"{prefix}_{s}_{j}"``, the same whatever the depths, so Optuna's history stays meaningful.
    """
    depths = [suggest.integer(f"{depth_param}_{s}", 1, top) for s, top in enumerate(max_depths)]
    genes: dict[str, Any] = {depth_gene: depths}
    for gene, (prefix, choices) in per_block.items():
        genes[gene] = [[suggest.categorical(f"{prefix}_{s}_{j}", choices) for j in range(d)] for s, d in enumerate(depths)]
    return genes


def check_unknown(genes: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(genes) - set(known))
    if unknown:
        raise ValueError(
            f"gene {unknown[0]}={genes[unknown[0]]!r} is not known; allowed: {_allowed(sorted({*known, 'prune_ratios', 'bits'}))}"
        )
