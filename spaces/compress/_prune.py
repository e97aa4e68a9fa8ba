"""Structured pruning: dependency-aware removal of channels, with pluggable importance criteria.

How coupled channels are found: the model is traced with ``torch.fx`` (in training mode, so that
training-only branches such as auxiliary classifiers are seen) and run once on ``example_input`` while every
tensor carries, beside its values, a tensor of *channel ids* of the same shape. Convolutions and linear
layers create fresh ids for their output channels (linear layers along the last dimension); BatchNorm,
LayerNorm (over the last dimension, module or function), activations and pooling keep them; residual adds
and multiplications merge the ids they combine (union-find); concatenation, flattening, ``permute`` /
``transpose`` and depthwise convolutions map them through exactly. Parameters used directly in the graph
(a layer scale, a functional LayerNorm's weight) carry ids of their own along their one non-singleton
dimension, so they are merged and pruned like channels.

Layouts that depend on the channel count are kept consistent by *coupling*: ``chunk``/``split`` into equal
parts couples position ``j`` of every part; a reshape that splits the channels into ``(g, C/g)`` (the
channel shuffle, with ``C/g`` computed from the tensor's size) couples position ``j`` of every group, and the
reshape that merges them back couples each block; a grouped convolution couples the same in-group position
of every group, on its input and on its output, so groups shrink evenly and stay groups. Removing a
coupled class removes every member, so the reshaped and grouped layouts stay valid. Anything else that
depends on the channel count (slicing, a reshape to constant sizes, unknown operators) *locks* the ids it
touches: those channels are never removed, so the pruned model is always consistent. Model inputs and
outputs are locked.

A *group* is a set of layers whose output channels are coupled (e.g. all convolutions writing into one
residual stream); a channel class (one column across the group) is scored by summing each member's
normalised channel importance, and the lowest-scoring classes are removed from every producer and every
consumer, so the exported network is really smaller.
"""

from __future__ import annotations

import abc
import copy
import logging
import math
import operator
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, TypeVar

if TYPE_CHECKING:
    import torch

from spaces.compress._fx import trace_graph

__all__ = [
    "PRUNE_RATIO_MAX",
    "Importance",
    "apply_plan",
    "check_ratio",
    "get_importance",
    "list_importances",
    "prune_groups",
    "prune_plan",
    "prune_structured",
    "register_importance",
]

logger = logging.getLogger(__name__)

#: Largest fraction of a layer's channels that pruning may remove.
PRUNE_RATIO_MAX = 0.9


# ----------------------------------------------------------------------------------------------------------
# Importance criteria
class Importance(abc.ABC):
    """Scores the output channels of one layer; the pruner removes the least important channels.

    Contract: ``scores(module)`` returns a 1-D tensor with one non-negative score per output channel of
    ``module`` (a ``Conv2d``, ``Linear`` or ``BatchNorm2d``), or ``None`` when the criterion does not apply
    to that module type (its channels are then scored by the other members of their group). Criteria that
    need gradients set ``needs_gradients = True``: the pruner then makes sure ``.grad`` is populated.
    Register a subclass with :func:`register_importance`.
    """

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = False

    @abc.abstractmethod
    def scores(self, module: "torch.nn.Module") -> "torch.Tensor | None":
        """One score per output channel of ``module``, or ``None`` if not applicable."""


_IMPORTANCES: dict[str, type[Importance]] = {}
I = TypeVar("I", bound="type[Importance]")


def register_importance(name: str) -> Callable[[I], I]:
    """Class decorator registering an :class:`Importance` under ``name`` (a taken name is an error)."""

    def decorator(cls: I) -> I:
        if name in _IMPORTANCES and _IMPORTANCES[name] is not cls:
            raise ValueError(f"importance name {name!r} is already registered by {_IMPORTANCES[name].__qualname__}")
        cls.name = name
        _IMPORTANCES[name] = cls
        return cls

    return decorator


def list_importances() -> list[str]:
    """Names of the registered importance criteria."""
    return sorted(_IMPORTANCES)


def get_importance(importance: "str | Importance") -> Importance:
    """An :class:`Importance` instance from a registered name, or ``importance`` itself."""
    if isinstance(importance, Importance):
        return importance
    if importance not in _IMPORTANCES:
        raise ValueError(f"importance={importance!r} is not registered; allowed: {', '.join(list_importances())}")
    return _IMPORTANCES[importance]()


def _weighted(module: "torch.nn.Module") -> bool:
    import torch

    return isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))


@register_importance("l1")
class L1Importance(Importance):
    """L1 norm of each output filter (Li et al., 2017)."""

    def scores(self, module: "torch.nn.Module") -> "torch.Tensor | None":
        if not _weighted(module):
            return None
        return module.weight.detach().abs().reshape(module.weight.shape[0], -1).sum(dim=1)


@register_importance("l2")
class L2Importance(Importance):
    """L2 norm of each output filter."""

    def scores(self, module: "torch.nn.Module") -> "torch.Tensor | None":
        if not _weighted(module):
            return None
        return module.weight.detach().reshape(module.weight.shape[0], -1).norm(dim=1)


@register_importance("bn_scale")
class BNScaleImportance(Importance):
    """|gamma| of the BatchNorm following each convolution (network slimming, Liu et al., 2017)."""

    def scores(self, module: "torch.nn.Module") -> "torch.Tensor | None":
        import torch

        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.affine:
            return module.weight.detach().abs()
        return None


@register_importance("taylor")
class TaylorImportance(Importance):
    """First-order Taylor saliency ``|sum(w * dL/dw)|`` per output channel (Molchanov et al., 2019).

    Uses the gradients present on the parameters; when there are none, the pruner computes them from the
    cross entropy of the model's outputs on ``example_input`` against its own predictions.
    """

    needs_gradients = True

    def scores(self, module: "torch.nn.Module") -> "torch.Tensor | None":
        import torch

        if _weighted(module) or (isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.affine):
            total = None
            for p in (module.weight, module.bias):
                if p is None or p.grad is None:
                    continue
                s = (p.detach() * p.grad.detach()).reshape(p.shape[0], -1).sum(dim=1)
                total = s if total is None else total + s
            return None if total is None else total.abs()
        return None


# ----------------------------------------------------------------------------------------------------------
# Channel-dependency analysis
class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self, n: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return list(range(start, start + n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


_PASS_MODULES = ("ReLU", "ReLU6", "Hardtanh", "Hardswish", "Hardsigmoid", "Sigmoid", "SiLU", "GELU", "Tanh",
                 "LeakyReLU", "ELU", "Mish", "Dropout", "Dropout2d", "Identity", "StochasticDepth")
#: Modules recorded as one call (their training-mode body draws random masks that would lock channels).
_LEAF_MODULES = ("StochasticDepth",)
_LAYOUT_FUNCS = {"permute", "transpose", "movedim", "swapaxes", "swapdims"}
_POOL_MODULES = ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d")
_PASS_FUNCS = {"relu", "relu6", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh",
               "dropout", "clamp", "clip", "leaky_relu", "elu", "mish", "neg", "abs", "contiguous", "float",
               "detach", "clone", "to"}
_POOL_FUNCS = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax", "sum"}
_BINARY_FUNCS = {"add", "iadd", "sub", "isub", "mul", "imul", "truediv", "div"}
_FLATTEN_FUNCS = {"flatten", "view", "reshape"}


class _Analysis:
    """Result of the channel-dependency analysis of a model."""

    def __init__(self) -> None:
        self.uf = _UnionFind()
        self.locked: set[int] = set()
        # (module name, tensor attribute, dim, channel ids along that dim) for producers and consumers.
        self.producers: list[tuple[str, str, int, list[int]]] = []
        self.consumers: list[tuple[str, str, int, list[int]]] = []
        self.out_ids: dict[str, list[int]] = {}  # module -> ids of its output channels

    def lock(self, ids: Iterable[int]) -> None:
        self.locked.update(ids)

    def is_locked(self, i: int) -> bool:
        return i in self.locked_roots

    def finish(self) -> None:
        self.locked_roots = {self.uf.find(i) for i in self.locked}


def _name(node: Any) -> str:
    target = node.target
    if isinstance(target, str):
        return target.rstrip("_")
    return getattr(target, "__name__", str(target)).rstrip("_")


def _analyse(model: "torch.nn.Module", example_input: "torch.Tensor", ignored: set[str]) -> _Analysis:
    """The channel analysis of the training-mode graph (training-only branches, e.g. auxiliary classifiers,
    included); the eval-mode graph when the training-mode one cannot be traced or run on ``example_input``
    (then a warning says that training-only branches were not analysed)."""
    was_training = model.training
    try:
        model.train()
        graph = trace_graph(model, leaf_names=_LEAF_MODULES)
        return _analyse_graph(model, graph, example_input, ignored)
    except (ValueError, RuntimeError) as exc:
        model.eval()
        graph = trace_graph(model, leaf_names=_LEAF_MODULES)
        if any(n.op == "call_module" for n in graph.nodes):
            logger.warning("pruning %s: the training-mode graph failed (%s); analysing the eval-mode graph, so "
                           "training-only branches (auxiliary classifiers) are not pruned consistently",
                           type(model).__name__, str(exc).splitlines()[0])
        return _analyse_graph(model, graph, example_input, ignored)
    finally:
        model.train(was_training)


def _analyse_graph(model: "torch.nn.Module", graph: "Any", example_input: "torch.Tensor",
                   ignored: set[str]) -> _Analysis:
    import torch
    from torch import fx

    gm = fx.GraphModule(model, graph)
    modules = dict(model.named_modules())
    an = _Analysis()
    uf = an.uf

    def fresh(shape: torch.Size, dim: int = 1) -> torch.Tensor:
        if len(shape) < 2:
            return torch.tensor(uf.new(int(shape[0]) if len(shape) else 1)).reshape(shape)
        dim %= len(shape)
        ids = torch.tensor(uf.new(int(shape[dim])))
        view = [1] * len(shape)
        view[dim] = -1
        return ids.reshape(view).expand(*shape).clone()

    def channels(ids: torch.Tensor, dim: int = 1) -> list[int]:
        if ids.dim() < 2:
            return ids.reshape(-1).tolist()
        dim %= ids.dim()
        return ids[tuple(slice(None) if d == dim else 0 for d in range(ids.dim()))].tolist()

    def couple(ids: torch.Tensor, dim: int, parts: int) -> None:
        """Union position j of each of ``parts`` equal slices of ``ids`` along ``dim`` (all other positions)."""
        moved = ids.movedim(dim, 0)
        chunks = moved.reshape(parts, moved.shape[0] // parts, -1)
        for k in range(1, parts):
            pairs = torch.unique(torch.stack([chunks[0].reshape(-1), chunks[k].reshape(-1)], dim=1), dim=0)
            for x, y in pairs.tolist():
                uf.union(x, y)

    param_ids: dict[str, torch.Tensor] = {}

    def parameter(n: fx.Node, real: Any) -> Any:
        """Ids of a parameter or buffer used in the graph: along its one non-singleton dim (else locked)."""
        if n.target in param_ids:
            return param_ids[n.target]
        big = [d for d, size in enumerate(real.shape) if size > 1] if isinstance(real, torch.Tensor) else None
        if big is None or len(big) != 1 or not real.is_floating_point():
            return locked_fresh(real, [])
        ids = fresh(real.shape, big[0])
        owner, _, attr = n.target.rpartition(".")
        an.producers.append((owner, attr, big[0], channels(ids, big[0])))
        param_ids[n.target] = ids
        return ids

    def all_ids(value: Any) -> list[int]:
        if isinstance(value, torch.Tensor):
            return torch.unique(value).tolist()
        if isinstance(value, (list, tuple)):
            return [i for v in value for i in all_ids(v)]
        return []

    def expand_channels(chs: list[int], shape: torch.Size) -> torch.Tensor:
        ids = torch.tensor(chs)
        if len(shape) < 2:
            return ids.reshape(shape)
        return ids.reshape([1, -1] + [1] * (len(shape) - 2)).expand(*shape).clone()

    def locked_fresh(real: Any, inputs: Iterable[Any]) -> Any:
        for v in inputs:
            an.lock(all_ids(v))
        out = _map_tensors(real, lambda t: fresh(t.shape))
        an.lock(all_ids(out))
        return out

    class _Interp(fx.Interpreter):
        def __init__(self) -> None:
            super().__init__(gm)
            self.ids: dict[fx.Node, Any] = {}

        def run_node(self, n: fx.Node) -> Any:
            real = super().run_node(n)
            # Non-tensor values (sizes, ints) are kept as they are, so shape ops can be replayed on ids.
            self.ids[n] = self._ids(n, real) if _has_tensor(real) or n.op == "output" else real
            return real

        def _arg_ids(self, a: Any) -> Any:
            if isinstance(a, fx.Node):
                return self.ids.get(a)
            if isinstance(a, (list, tuple)):
                return _rebuild(a, [self._arg_ids(v) for v in a])
            return a

        def _ids(self, n: fx.Node, real: Any) -> Any:
            if n.op == "placeholder":
                out = _map_tensors(real, lambda t: fresh(t.shape))
                an.lock(all_ids(out))
                return out
            if n.op == "output":
                an.lock(all_ids(self._arg_ids(n.args[0])))
                return None
            if n.op == "get_attr":
                return parameter(n, real)
            args = [self._arg_ids(a) for a in n.args]
            tensor_args = [a for a in n.args if isinstance(a, fx.Node) and isinstance(self.ids.get(a), torch.Tensor)]
            first = self.ids.get(tensor_args[0]) if tensor_args else None
            if n.op == "call_module":
                return self._module(n, real, first)
            name = _name(n)
            if n.op == "call_function" and n.target is operator.getitem and isinstance(args[0], (list, tuple)):
                return args[0][n.args[1]]
            if name in _PASS_FUNCS and first is not None and first.shape == real.shape:
                return first
            if name in _LAYOUT_FUNCS and first is not None:
                out = self._replay(n, args)
                if out is not None:
                    return out
            if name in ("chunk", "split") and first is not None:
                out = self._split(n, real, first)
                if out is not None:
                    return out
            if name in ("view", "reshape") and first is not None and isinstance(real, torch.Tensor):
                out = self._reshape(n, real, first, args)
                if out is not None:
                    return out
            if name == "layer_norm" and first is not None and first.shape == real.shape:
                normalized = args[1] if len(args) > 1 else n.kwargs.get("normalized_shape")
                if isinstance(normalized, (list, tuple, torch.Size)) and len(normalized) == 1:
                    last = channels(first, -1)
                    for key in ("weight", "bias"):
                        pos = {"weight": 2, "bias": 3}[key]
                        p = args[pos] if len(args) > pos else self._arg_ids(n.kwargs.get(key))
                        if isinstance(p, torch.Tensor):
                            for x, y in zip(p.reshape(-1).tolist(), last):
                                uf.union(x, y)
                    return first
            if name in _BINARY_FUNCS:
                if len(tensor_args) == 2:
                    a, b = torch.broadcast_tensors(self.ids[tensor_args[0]], self.ids[tensor_args[1]])
                    pairs = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)], dim=1), dim=0)
                    for x, y in pairs.tolist():
                        uf.union(x, y)
                    big = a if a.shape == real.shape else b
                    return big.clone() if big.shape == real.shape else locked_fresh(real, [a, b])
                if first is not None and first.shape == real.shape:
                    return first
            if name in _POOL_FUNCS and first is not None and real.dim() >= 2 and first.dim() >= 2 \
                    and real.shape[1] == first.shape[1] and _keeps_channel_dim(n):
                return expand_channels(channels(first), real.shape)
            if name == "cat" and _cat_dim(n, real) == 1:
                return torch.cat(list(args[0]), dim=1)
            if name in _FLATTEN_FUNCS and first is not None and real.dim() == 2 \
                    and real.shape[1] == math.prod(first.shape[1:]):
                return first.reshape(real.shape)
            # Anything else: propagate exactly where possible (shape ops), but lock everything it touches.
            an.lock(all_ids(args))
            kwargs = {k: self._arg_ids(v) for k, v in n.kwargs.items()}
            try:
                out = getattr(torch.Tensor, n.target)(*args, **kwargs) if n.op == "call_method" \
                    else n.target(*args, **kwargs)
                # ids only move (no op that reads tensor values as indices or arithmetic on them)
                if _same_structure(out, real) and set(all_ids(out)) <= set(all_ids(args)):
                    an.lock(all_ids(out))
                    return out
            except Exception:  # noqa: BLE001 - the op does not accept id tensors; fall back to fresh ids
                pass
            return locked_fresh(real, [])

        def _replay(self, n: fx.Node, args: list[Any]) -> Any:
            """A pure layout op (permute, transpose) applied to the ids: they move with the data."""
            kwargs = {k: self._arg_ids(v) for k, v in n.kwargs.items()}
            try:
                if n.op == "call_method":
                    return getattr(torch.Tensor, n.target)(*args, **kwargs)
                return n.target(*args, **kwargs)
            except Exception:  # noqa: BLE001 - not replayable: the generic path locks it
                return None

        def _split(self, n: fx.Node, real: Any, first: torch.Tensor) -> Any:
            """``chunk``/``split`` into equal parts along the channel dim: couple position j of every part."""
            if not isinstance(real, (list, tuple)) or len(real) < 2 or first.dim() < 2:
                return None
            dim = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)
            if not isinstance(dim, int) or dim % first.dim() != 1:
                return None
            sizes = {t.shape[1] for t in real}
            if len(sizes) != 1 or sum(t.shape[1] for t in real) != first.shape[1]:
                return None
            couple(first, 1, len(real))
            return tuple(torch.split(first, sizes.pop(), dim=1))

        def _reshape(self, n: fx.Node, real: torch.Tensor, first: torch.Tensor, args: list[Any]) -> Any:
            """The channel shuffle's reshapes, (N, C, *S) <-> (N, g, C/g, *S), with ``C/g`` (split) or ``C``
            (merge) computed from the tensor (an fx node, not a constant): couple so that removing a class
            keeps the layout."""
            src, dst = tuple(first.shape), tuple(real.shape)
            sizes = list(n.args[1:])
            if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
                sizes = list(sizes[0])
            if len(src) < 2 or len(dst) < 2 or src[0] != dst[0]:
                return None
            if len(dst) == len(src) + 1 and dst[3:] == src[2:] and dst[1] * dst[2] == src[1] and dst[1] > 1:
                # split C -> (g, C/g): g must be a constant, C/g follow the tensor's size
                if len(sizes) != len(dst) or isinstance(sizes[1], fx.Node) or not isinstance(sizes[2], fx.Node):
                    return None
                couple(first, 1, dst[1])
                return first.reshape(dst)
            if len(dst) + 1 == len(src) and src[3:] == dst[2:] and src[1] * src[2] == dst[1]:
                # merge (a, b) -> a*b: the merged size follows the tensor; removing a class removes a block of b
                if len(sizes) != len(dst) or not isinstance(sizes[1], fx.Node):
                    return None
                moved = first.movedim(2, 0)
                for k in range(1, src[2]):
                    pairs = torch.unique(torch.stack([moved[0].reshape(-1), moved[k].reshape(-1)], dim=1), dim=0)
                    for x, y in pairs.tolist():
                        uf.union(x, y)
                return first.reshape(dst)
            return None

        def _module(self, n: fx.Node, real: Any, first: Any) -> Any:
            name = n.target
            m = modules[name]
            kind = type(m).__name__
            if isinstance(m, torch.nn.Conv2d) and first is not None:
                cin = channels(first)
                if m.groups == 1:
                    an.consumers.append((name, "weight", 1, cin))
                    out = fresh(real.shape)
                    chs = channels(out)
                    an.producers.append((name, "weight", 0, chs))
                    if m.bias is not None:
                        an.producers.append((name, "bias", 0, chs))
                elif m.groups == m.in_channels == m.out_channels:  # depthwise: channels pass through
                    chs = cin
                    out = expand_channels(chs, real.shape)
                    an.producers.append((name, "weight", 0, chs))
                    if m.bias is not None:
                        an.producers.append((name, "bias", 0, chs))
                else:  # grouped: the same in-group positions of every group, on both sides
                    g = m.groups
                    couple(first, 1, g)
                    an.consumers.append((name, "weight", 1, cin[: m.in_channels // g]))
                    out = fresh(real.shape)
                    couple(out, 1, g)
                    chs = channels(out)
                    an.producers.append((name, "weight", 0, chs))
                    if m.bias is not None:
                        an.producers.append((name, "bias", 0, chs))
                an.out_ids[name] = chs
                if name in ignored:
                    an.lock(chs)
                return out
            if isinstance(m, torch.nn.Linear) and first is not None:
                an.consumers.append((name, "weight", 1, first.reshape(-1, first.shape[-1])[0].tolist()))
                out = fresh(real.shape, -1)
                chs = channels(out, -1)
                an.producers.append((name, "weight", 0, chs))
                if m.bias is not None:
                    an.producers.append((name, "bias", 0, chs))
                an.out_ids[name] = chs
                if name in ignored:
                    an.lock(chs)
                return out
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and first is not None:
                chs = channels(first)
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(m, attr, None) is not None:
                        an.producers.append((name, attr, 0, chs))
                return first
            if isinstance(m, torch.nn.LayerNorm) and first is not None and len(m.normalized_shape) == 1 \
                    and first.shape == real.shape and type(m).forward is torch.nn.LayerNorm.forward:
                chs = channels(first, -1)
                for attr in ("weight", "bias"):
                    if getattr(m, attr, None) is not None:
                        an.producers.append((name, attr, 0, chs))
                return first
            if kind in _PASS_MODULES and first is not None and first.shape == real.shape:
                return first
            if kind in _POOL_MODULES and first is not None and real.dim() == first.dim():
                return expand_channels(channels(first), real.shape)
            if kind == "Flatten" and first is not None and real.dim() == 2 \
                    and real.shape[1] == math.prod(first.shape[1:]):
                return first.reshape(real.shape)
            logger.debug("pruning: module %s (%s) is not understood; its channels are kept", name, kind)
            return locked_fresh(real, [first] if first is not None else [])

    with torch.no_grad():
        was_training = model.training
        model.eval()
        _Interp().run(example_input[:1])
        model.train(was_training)
    an.finish()
    return an


def _rebuild(seq: Any, items: list[Any]) -> Any:
    """A list, tuple or named tuple of the same type as ``seq`` holding ``items``."""
    if isinstance(seq, tuple) and hasattr(type(seq), "_fields"):
        return type(seq)(*items)
    return type(seq)(items)


def _map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return _rebuild(value, [_map_tensors(v, fn) for v in value])
    return None


def _has_tensor(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (list, tuple)) and any(_has_tensor(v) for v in value)


def _same_structure(ids: Any, real: Any) -> bool:
    import torch

    if isinstance(real, torch.Tensor):
        return isinstance(ids, torch.Tensor) and ids.shape == real.shape and not ids.is_floating_point()
    if isinstance(real, (list, tuple)):
        return isinstance(ids, (list, tuple)) and len(ids) == len(real) and all(
            _same_structure(a, b) for a, b in zip(ids, real))
    return False


def _keeps_channel_dim(node: Any) -> bool:
    """Reductions (``mean``/``sum``/``amax``) count as pooling only when they reduce spatial dims only."""
    if _name(node) not in ("mean", "amax", "sum"):
        return True
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if dims is None:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    return all(d not in (0, 1, -3) for d in dims) if dims else False


def _cat_dim(node: Any, real: "torch.Tensor") -> int:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return dim % real.dim()


# ----------------------------------------------------------------------------------------------------------
def check_ratio(name: str, ratio: Any) -> float:
    """``ratio`` as a float, or ``ValueError`` naming ``name`` unless it is in [0, :data:`PRUNE_RATIO_MAX`]."""
    if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= PRUNE_RATIO_MAX:
        raise ValueError(f"{name}={ratio!r} must be a number in [0, {PRUNE_RATIO_MAX}]")
    return float(ratio)


def _ensure_gradients(model: "torch.nn.Module", example_input: "torch.Tensor") -> None:
    import torch.nn.functional as F

    if any(p.grad is not None for p in model.parameters()):
        return
    was_training = model.training
    model.eval()
    out = model(example_input)
    loss = F.cross_entropy(out, out.detach().argmax(dim=1)) if out.dim() == 2 else out.pow(2).mean()
    model.zero_grad(set_to_none=True)
    loss.backward()
    model.train(was_training)


def _groups(an: _Analysis) -> tuple[list[set[str]], list[set[int]]]:
    """Producer layers whose output channel classes are coupled, and the class roots of each group."""
    uf = an.uf
    group_of: dict[int, int] = {}  # class root -> group id
    groups: list[set[str]] = []
    classes: list[set[int]] = []
    for name, chs in an.out_ids.items():
        roots = {uf.find(i) for i in chs}
        hit = sorted({group_of[r] for r in roots if r in group_of})
        if hit:
            gid = hit[0]
            for other in hit[1:]:
                groups[gid] |= groups[other]
                classes[gid] |= classes[other]
                for r in classes[other]:
                    group_of[r] = gid
                groups[other], classes[other] = set(), set()
        else:
            gid = len(groups)
            groups.append(set())
            classes.append(set())
        groups[gid].add(name)
        classes[gid] |= roots
        for r in roots:
            group_of[r] = gid
    keep = [i for i, members in enumerate(groups) if members]
    return [groups[i] for i in keep], [classes[i] for i in keep]


def prune_groups(model: "torch.nn.Module", example_input: "torch.Tensor") -> list[tuple[list[str], bool]]:
    """The coupled layer groups of ``model``: ``(member layer names in model order, prunable)``.

    A group is prunable when at least one of its channel classes is free (not locked). A ratio given to any
    member of a group prunes the whole group (see :func:`prune_structured`).
    """
    an = _analyse(model, example_input, set())
    groups, classes = _groups(an)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    out = []
    for members, roots in zip(groups, classes):
        free = any(r not in an.locked_roots for r in roots)
        out.append((sorted(members, key=order.__getitem__), free))
    return sorted(out, key=lambda g: order[g[0][0]])


def prune_plan(model: "torch.nn.Module", ratios: "Mapping[str, float] | float", *, importance: "str | Importance",
               example_input: "torch.Tensor", round_to: int = 1,
               ignored_layers: Iterable[str] = ()) -> dict[str, dict[int, "torch.Tensor"]]:
    """Which indices to *keep* per tensor: ``{"<module>.<attr>": {dim: kept indices}}`` (nothing applied)."""
    import torch

    modules = dict(model.named_modules())
    if isinstance(ratios, Mapping):
        for name, r in ratios.items():
            check_ratio(f"ratios[{name!r}]", r)
            if not isinstance(modules.get(name), (torch.nn.Conv2d, torch.nn.Linear)):
                raise ValueError(f"ratios names {name!r}, which is not a Conv2d or Linear of the model")
    else:
        check_ratio("ratios", ratios)
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to={round_to!r} must be a positive integer")
    ignored = set(ignored_layers)
    for name in ignored:
        if name not in modules:
            raise ValueError(f"ignored_layers names {name!r}, which is not a module of the model")
    crit = get_importance(importance)
    an = _analyse(model, example_input, ignored)
    uf = an.uf
    if crit.needs_gradients:
        _ensure_gradients(model, example_input)

    groups, classes = _groups(an)

    # Scores per class root: sum of each member's normalised channel importance.
    score: dict[int, float] = {}
    scored_modules = set()
    for name, attr, dim, chs in an.producers:
        if name in scored_modules or attr != "weight":
            continue
        s = crit.scores(modules[name])
        if s is None:
            continue
        scored_modules.add(name)
        s = s.detach().float()
        s = s / (s.abs().mean() + 1e-12)
        for i, v in zip(chs, s.tolist()):
            r = uf.find(i)
            score[r] = score.get(r, 0.0) + v

    removed: set[int] = set()
    for gid, members in enumerate(groups):
        if not members:
            continue
        if isinstance(ratios, Mapping):
            given = [ratios[m] for m in members if m in ratios]
            if not given:
                continue
            ratio = max(given)
        else:
            ratio = float(ratios)
        free = sorted(r for r in classes[gid] if r not in an.locked_roots)
        total = len(classes[gid])
        if not free or ratio <= 0:
            continue
        keep = max(round_to, total - int(math.floor(ratio * total + 0.5)))
        keep = int(math.ceil(keep / round_to) * round_to)
        n_remove = min(len(free), max(0, total - keep))
        if len(free) - n_remove < 1 and total - n_remove < 1:
            n_remove = len(free) - 1
        if n_remove <= 0:
            continue
        order = sorted(free, key=lambda r: (score.get(r, 0.0), r))
        removed.update(order[:n_remove])
        logger.debug("pruning group %s: %d of %d channels removed", sorted(members), n_remove, total)

    plan: dict[str, dict[int, torch.Tensor]] = {}
    for name, attr, dim, chs in an.producers + an.consumers:
        keep_idx = [k for k, i in enumerate(chs) if uf.find(i) not in removed]
        if len(keep_idx) < len(chs):
            plan.setdefault(f"{name}.{attr}", {})[dim] = torch.tensor(keep_idx, dtype=torch.long)
    return plan


def apply_plan(model: "torch.nn.Module", plan: Mapping[str, Mapping[int, "torch.Tensor"]]) -> "torch.nn.Module":
    """Physically remove the channels a plan drops, in place; module attributes follow the new shapes."""
    import torch

    touched: set[str] = set()
    for key, dims in plan.items():
        name, _, attr = key.rpartition(".")
        m = model.get_submodule(name)
        tensor = getattr(m, attr)
        new = tensor.detach()
        for dim, idx in dims.items():
            new = new.index_select(dim, idx)
        new = new.clone()
        if isinstance(tensor, torch.nn.Parameter):
            setattr(m, attr, torch.nn.Parameter(new, requires_grad=tensor.requires_grad))
        else:
            setattr(m, attr, new)
        touched.add(name)
    for name in touched:
        m = model.get_submodule(name)
        if isinstance(m, torch.nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            m.out_channels = m.weight.shape[0]
            m.in_channels = m.weight.shape[1] * (m.weight.shape[0] if depthwise else m.groups)
            if depthwise:
                m.groups = m.out_channels
                m.in_channels = m.out_channels
        elif isinstance(m, torch.nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.num_features = m.running_mean.shape[0] if m.running_mean is not None else m.weight.shape[0]
        elif isinstance(m, torch.nn.LayerNorm) and m.weight is not None and len(m.normalized_shape) == 1:
            m.normalized_shape = (m.weight.shape[0],)
    return model


def prune_structured(model: "torch.nn.Module", ratios: "Mapping[str, float] | float", *,
                     importance: "str | Importance" = "l1", example_input: "torch.Tensor", round_to: int = 1,
                     ignored_layers: Iterable[str] = ()) -> "torch.nn.Module":
    """A copy of ``model`` with channels physically removed (dependency-aware structured pruning).

    Args:
        model: any ``torch.fx``-traceable CNN (torchvision ResNet, MobileNetV2, ShuffleNetV2, the
            built-in spaces...). Not modified.
        ratios: fraction of output channels removed, in [0, 0.9]: one number for every prunable layer, or
            per ``Conv2d``/``Linear`` qualified name (layers not named are not pruned). Coupled layers (e.g.
            the convolutions of one residual stream) form a group pruned together at the largest ratio
            given to any member.
        importance: ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"taylor"`` (see :func:`list_importances`) or an
            :class:`Importance` instance.
        example_input: a batch (only its first item is used) to trace shapes and, for ``"taylor"`` without
            gradients on the parameters, to compute them.
        round_to: keep a multiple of this many channels per group (e.g. 8 for SIMD-friendly widths).
        ignored_layers: qualified names of layers whose output channels are kept.

    Channels that cannot be removed consistently (model inputs and outputs, grouped convolutions, tensors
    reshaped by a channel shuffle or split by ``chunk``) are kept; see the module docstring.
    """
    pruned = copy.deepcopy(model)
    plan = prune_plan(pruned, ratios, importance=importance, example_input=example_input, round_to=round_to,
                      ignored_layers=ignored_layers)
    pruned.zero_grad(set_to_none=True)
    return apply_plan(pruned, plan)
