"""Unstructured magnitude pruning, its sparsity report, and one-shot / gradual pruning schedules.

Unstructured sparsity shrinks a *compressed* (sparse) file, but ONNX Runtime's CPU kernels are dense: a
model with 90 % zero weights runs exactly as fast as the dense one. Use structured pruning
(:func:`spaces.compress.prune_structured`) for speed.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    import torch

from spaces.compress._prune import apply_plan, check_ratio, prune_plan

__all__ = ["gradual_prune", "prune_unstructured", "sparsity_report"]

logger = logging.getLogger(__name__)

_SCOPES = ("layer", "global")
_KINDS = ("structured", "unstructured")


def _layers(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Module"]]:
    import torch

    return [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _masks(model: "torch.nn.Module", amount: float, scope: str) -> dict[str, "torch.Tensor"]:
    """Boolean keep-masks removing the ``amount`` smallest-magnitude weights (per layer or globally), as
    ``torch.nn.utils.prune.L1Unstructured`` computes them (``global``: over all weights at once, as
    ``global_unstructured`` does)."""
    import torch
    from torch.nn.utils import prune

    method = prune.L1Unstructured(amount)
    layers = _layers(model)
    if scope == "layer":
        return {name: method.compute_mask(m.weight.detach(), torch.ones_like(m.weight)).bool() for name, m in layers}
    flat = torch.cat([m.weight.detach().reshape(-1) for _, m in layers])
    keep = method.compute_mask(flat, torch.ones_like(flat)).bool()
    masks, start = {}, 0
    for name, m in layers:
        n = m.weight.numel()
        masks[name] = keep[start:start + n].reshape(m.weight.shape)
        start += n
    return masks


def prune_unstructured(model: "torch.nn.Module", amount: float, *, scope: str = "layer") -> "torch.nn.Module":
    """Zero the ``amount`` fraction of smallest-magnitude weights of every ``Conv2d``/``Linear``, in place.

    ``scope="layer"`` removes that fraction from each layer; ``"global"`` ranks all weights together (so
    large layers lose more). Biases are kept. Returns ``model``. The zeros make the model compressible
    (see :func:`sparsity_report`), not faster: ONNX Runtime's CPU kernels are dense.
    """
    import torch

    if not isinstance(amount, (int, float)) or not 0.0 <= amount < 1.0:
        raise ValueError(f"amount={amount!r} must be a number in [0, 1)")
    if scope not in _SCOPES:
        raise ValueError(f"scope={scope!r} is not supported; allowed: {', '.join(_SCOPES)}")
    masks = _masks(model, float(amount), scope)
    with torch.no_grad():
        for name, m in _layers(model):
            m.weight.mul_(masks[name])
    return model


def sparsity_report(model: "torch.nn.Module") -> dict[str, Any]:
    """Sparsity and storage of the ``Conv2d``/``Linear`` weights of ``model``.

    Returns ``sparsity`` (fraction of zero weights), ``weights`` and ``zeros`` (counts), ``dense_bytes``
    (float32), ``sparse_bytes`` (CSR-like: float32 value + int32 column index per non-zero, plus one int32
    row pointer per output channel + 1, each layer's weight viewed as [out, rest]), and ``layers``: per
    layer ``{"sparsity", "dense_bytes", "sparse_bytes"}``.
    """
    layers: dict[str, dict[str, float]] = {}
    total = zeros = dense = sparse = 0
    for name, m in _layers(model):
        w = m.weight.detach()
        n, nz = w.numel(), int((w != 0).sum())
        d = 4 * n
        s = 8 * nz + 4 * (w.shape[0] + 1)
        layers[name] = {"sparsity": 1.0 - nz / n if n else 0.0, "dense_bytes": d, "sparse_bytes": s}
        total, zeros, dense, sparse = total + n, zeros + (n - nz), dense + d, sparse + s
    return {
        "sparsity": zeros / total if total else 0.0,
        "weights": total,
        "zeros": zeros,
        "dense_bytes": dense,
        "sparse_bytes": sparse,
        "layers": layers,
    }


def _schedule(final_ratio: float, steps: int) -> list[float]:
    """Cumulative ratios of the gradual schedule (Zhu & Gupta, 2017): ``r_k = r (1 - (1 - k/n)^3)``."""
    return [final_ratio * (1.0 - (1.0 - k / steps) ** 3) for k in range(1, steps + 1)]


def gradual_prune(model: "torch.nn.Module", final_ratio: float, steps: int,
                  fine_tune_fn: "Callable[[torch.nn.Module], torch.nn.Module | None] | None" = None,
                  rewind: bool = False, *, kind: str = "structured", importance: str = "l1",
                  example_input: "torch.Tensor | None" = None, scope: str = "layer", round_to: int = 1,
                  ignored_layers: Iterable[str] = ()) -> "torch.nn.Module":
    """Iterative pruning: prune a little, fine-tune, repeat, until ``final_ratio`` is reached.

    ``steps=1`` is one-shot pruning. The cumulative ratio after step ``k`` follows the cubic schedule
    ``final_ratio * (1 - (1 - k/steps)^3)``. ``fine_tune_fn(model)`` trains the model after each step
    (it may return a new model, or ``None`` to keep training in place); pruned weights stay pruned during
    fine-tuning (unstructured: the mask is re-applied after it; structured: the channels no longer exist).

    ``rewind=True`` is the lottery-ticket option (Frankle & Carbin, 2019): after each pruning step the
    surviving weights are reset to their values at the start (the "winning ticket" initialisation) before
    fine-tuning.

    ``kind`` is ``"structured"`` (channels removed, needs ``example_input``; ratio as in
    :func:`prune_structured`) or ``"unstructured"`` (magnitude, ``scope`` as in
    :func:`prune_unstructured`). Returns the pruned model; ``model`` itself is not modified.
    """
    import torch

    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} is not supported; allowed: {', '.join(_KINDS)}")
    check_ratio("final_ratio", final_ratio)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer")
    if kind == "structured" and example_input is None:
        raise ValueError("example_input=None: structured gradual pruning needs an example input batch")
    ignored = list(ignored_layers)
    current = copy.deepcopy(model)
    initial = copy.deepcopy(model.state_dict())
    # Indices of the original tensors still present, per tensor and dim (structured rewinding).
    kept: dict[str, dict[int, torch.Tensor]] = {}
    done = 0.0
    for k, target in enumerate(_schedule(float(final_ratio), steps), start=1):
        if kind == "unstructured":
            masks = _masks(current, target, scope)
            with torch.no_grad():
                for name, m in _layers(current):
                    if rewind:
                        m.weight.copy_(initial[f"{name}.weight"])
                    m.weight.mul_(masks[name])
            if rewind:
                _rewind_others(current, initial, kept, skip=[f"{name}.weight" for name, _ in _layers(current)])
        else:
            step_ratio = 1.0 - (1.0 - target) / (1.0 - done) if done < 1.0 else 0.0
            step_ratio = min(max(step_ratio, 0.0), 0.9)
            plan = prune_plan(current, step_ratio, importance=importance, example_input=example_input,
                              round_to=round_to, ignored_layers=ignored)
            current.zero_grad(set_to_none=True)
            apply_plan(current, plan)
            for key, dims in plan.items():
                entry = kept.setdefault(key, {})
                for dim, idx in dims.items():
                    entry[dim] = entry[dim][idx] if dim in entry else idx
            if rewind:
                _rewind_others(current, initial, kept)
        done = target
        logger.debug("gradual pruning step %d/%d: cumulative ratio %.3f", k, steps, target)
        if fine_tune_fn is not None:
            result = fine_tune_fn(current)
            if result is not None:
                current = result
            if kind == "unstructured":
                with torch.no_grad():
                    for name, m in _layers(current):
                        m.weight.mul_(masks[name])
    return current


def _rewind_others(model: "torch.nn.Module", initial: dict[str, "torch.Tensor"],
                   kept: dict[str, dict[int, "torch.Tensor"]], *, skip: Iterable[str] = ()) -> None:
    """Reset every parameter and buffer to its initial value, restricted to the channels still present.

    ``skip``: state keys left alone (unstructured weights, already rewound and masked by the caller).
    """
    import torch

    skip = set(skip)
    with torch.no_grad():
        state = model.state_dict()
        for key, value in state.items():
            if key not in initial or not value.is_floating_point():
                continue
            init = initial[key]
            for dim, idx in kept.get(key, {}).items():
                init = init.index_select(dim, idx)
            if init.shape == value.shape and key not in skip:
                value.copy_(init)
