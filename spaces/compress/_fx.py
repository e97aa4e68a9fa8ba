"""Small helpers shared by the compression operators: tracing a model's graph and swapping modules."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import fx

__all__ = ["trace_graph", "set_module", "ADD_TARGETS", "is_activation", "unit_end"]

#: Call targets that FX records for a residual ``a + b``.
ADD_TARGETS = ("add", "iadd")


def _leaf_types() -> tuple[type, ...]:
    from spaces.compress._qmodules import ActFakeQuant, QuantLayer

    return (ActFakeQuant, QuantLayer)


def trace_graph(model: "torch.nn.Module", *, leaf_names: tuple[str, ...] = ()) -> "fx.Graph":
    """The FX graph of ``model`` (its own graph if it is already a ``GraphModule``).

    ``leaf_names``: class names of modules recorded as one call instead of being traced into.

    Raises ``ValueError`` naming the model when it cannot be traced symbolically (data-dependent control
    flow); the compression operators need the graph to know which layers feed which.
    """
    import torch
    from torch import fx

    if isinstance(model, fx.GraphModule):
        return model.graph
    leaves = _leaf_types()

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return (isinstance(m, leaves) or type(m).__name__ in leaf_names
                    or super().is_leaf_module(m, qualname))

    try:
        return _Tracer().trace(model)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, RuntimeError... depending on the model
        raise ValueError(
            f"model={type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: {exc}); "
            "the compression operators need a model without data-dependent control flow"
        ) from exc


def to_graph_module(model: "torch.nn.Module") -> "fx.GraphModule":
    """``model`` as a ``GraphModule`` sharing its submodules (qualified names are kept)."""
    from torch import fx

    if isinstance(model, fx.GraphModule):
        return model
    graph = trace_graph(model)
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def set_module(root: "torch.nn.Module", name: str, new: "torch.nn.Module") -> None:
    """Replace the submodule at the qualified ``name`` by ``new``."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def target_name(node: "fx.Node") -> str:
    """A comparable name of a node's call target: ``add`` for ``operator.add``, ``torch.add`` and ``.add()``."""
    target = node.target
    if isinstance(target, str):
        return target.rstrip("_") if node.op == "call_method" else target
    name = getattr(target, "__name__", str(target))
    return name.rstrip("_")


def is_add(node: "fx.Node") -> bool:
    if node.op == "call_function" and node.target in (operator.add, operator.iadd):
        return True
    return node.op in ("call_function", "call_method") and target_name(node) in ADD_TARGETS and _tensor_args(node) == 2


def _tensor_args(node: "fx.Node") -> int:
    from torch import fx

    return sum(isinstance(a, fx.Node) for a in node.args)


def is_activation(node: "fx.Node", modules: dict[str, Any]) -> bool:
    """ReLU-like activations that ONNX Runtime fuses into the preceding quantised operator."""
    import torch

    if node.op == "call_module":
        m = modules.get(node.target)
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)):
            return True
        return isinstance(m, torch.nn.Hardtanh) and m.min_val == 0.0
    if node.op in ("call_function", "call_method"):
        return target_name(node) in ("relu", "relu6")
    return False


def unit_end(node: "fx.Node", modules: dict[str, Any]) -> "fx.Node":
    """Follow a layer's single-user chain through BatchNorm and a ReLU-like activation."""
    import torch

    end = node
    while len(end.users) == 1:
        user = next(iter(end.users))
        if user.op == "call_module" and isinstance(modules.get(user.target), torch.nn.modules.batchnorm._BatchNorm):
            end = user
            continue
        if is_activation(user, modules):
            end = user
        break
    return end
