"""Weight-sharing supernets of the student spaces (Once-for-All style weight inheritance).

Every student space builds its model from a plan whose module names are stable (``stem``,
``stages.{s}.{j}.expand``, ``blocks.{i}.dw``, ``head``, ``classifier``...). A :class:`Supernet` holds, for
every such name, one tensor of the largest shape any candidate of the space gives it (the largest width,
depth, expansion and kernel), and a candidate's parameters are *slices* of those tensors:

- channels: the first ``k`` output (and input) channels: a narrower width, a smaller expansion or a prune
  ratio keeps the leading channels. Training samples random widths and prune ratios, so the leading
  channels are the ones every sub-network shares (slimmable networks); :meth:`Supernet.sort_channels`
  additionally orders each block's hidden channels by the L1 norm of the weights that read them (OFA's
  ``re_organize_middle_weights``), so pruning keeps the most important ones;
- kernels: the centre ``k x k`` crop of the largest kernel (OFA's centre crop, without its transform matrices);
- depth: the first ``d`` blocks of a stage (the others are simply not in the candidate's plan);
- grouped convolutions (FBNet's ``_g2`` blocks): the block-diagonal part of the dense weight;
- BatchNorm: the first ``k`` affine parameters and statistics (recalibrate them per sub-network: the shared
  running statistics belong to no sub-network in particular).

Slices are views into the supernet tensors, so :meth:`Supernet.forward` runs any candidate on the shared
weights with gradients flowing back into them: the dynamic forward that trains the supernet (the training
itself, by distillation from a teacher with the sandwich rule, is ``search``'s). :meth:`Supernet.extract`
returns the ordinary model of ``space.build(candidate)`` (same module names, same ONNX export, same
kernels) holding copies of the inherited weights. Bits are not part of the shared weights: fake
quantisation applies to the extracted model (``spaces.compress.prepare_qat``).

The state is a flat dict of tensors (:meth:`Supernet.state_dict`), saved with ``torch.save`` and loaded
with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from spaces._base import PRUNE_RATIO_MAX, SearchSpace
from spaces._candidate import Candidate

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["SUPERNET_SPACES", "Supernet", "supports_supernet"]

logger = logging.getLogger(__name__)


def _mobilenet(space: SearchSpace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    depths = list(space.MAX_DEPTHS)
    largest = {"width": max(space.WIDTHS), "depths": depths,
               "expansions": [[max(space.EXPANSIONS)] * d for d in depths],
               "kernel_sizes": [[max(space.KERNEL_SIZES)] * d for d in depths]}
    smallest = {"width": min(space.WIDTHS), "depths": [1] * len(depths),
                "expansions": [[min(space.EXPANSIONS)]] * len(depths),
                "kernel_sizes": [[min(space.KERNEL_SIZES)]] * len(depths)}
    return [largest], smallest


def _shufflenet(space: SearchSpace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from spaces._shufflenet import KERNEL_SIZES, MAX_REPEATS, WIDTHS

    largest = {"repeats": list(MAX_REPEATS), "widths": [max(WIDTHS)] * len(MAX_REPEATS),
               "kernel_sizes": [[max(KERNEL_SIZES)] * r for r in MAX_REPEATS]}
    smallest = {"repeats": [1] * len(MAX_REPEATS), "widths": [min(WIDTHS)] * len(MAX_REPEATS),
                "kernel_sizes": [[min(KERNEL_SIZES)]] * len(MAX_REPEATS)}
    return [largest], smallest


def _fbnet(space: SearchSpace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from spaces._fbnet import NUM_LAYERS

    # the largest inverted residual everywhere, plus the 1x1 projections of "skip" blocks that change shape
    return [{"ops": ["k5_e6"] * NUM_LAYERS}, {"ops": ["skip"] * NUM_LAYERS}], {"ops": ["k3_e1"] * NUM_LAYERS}


#: The spaces a supernet covers: name -> (architecture genes of the candidates whose union of parameter
#: names and shapes covers every candidate, the smallest architecture).
SUPERNET_SPACES: dict[str, Callable[[SearchSpace], tuple[list[dict[str, Any]], dict[str, Any]]]] = {
    "mobilenet": _mobilenet,
    "shufflenet": _shufflenet,
    "fbnet": _fbnet,
}


def supports_supernet(space: SearchSpace) -> bool:
    """Whether ``space`` has a weight-sharing supernet (the student spaces; not ``prune``)."""
    return space.name in SUPERNET_SPACES


class Supernet:
    """The shared weights of every candidate of a student space.

    Args:
        space: a space of :data:`SUPERNET_SPACES` (its options fix the shapes: classes, input channels...).
        seed: seed of the initial weights (those of ``space.build`` of the largest candidate).

    Attributes:
        space: the space.
        tensors: parameter and buffer name -> shared tensor (parameters require gradients).
        groups: convolution weight name -> the groups of the supernet's convolution (1: dense, else depthwise).
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        import torch

        if not supports_supernet(space):
            raise ValueError(f"space {space.name!r} has no supernet; allowed: {', '.join(sorted(SUPERNET_SPACES))}")
        self.space = space
        covering, smallest = SUPERNET_SPACES[space.name](space)
        self.largest_candidates = [space.candidate(**genes) for genes in covering]
        small = space.candidate(**smallest)
        self.smallest_candidate = space.candidate(
            **smallest, prune_ratios=[PRUNE_RATIO_MAX if layer.prunable else 0.0 for layer in space.layers(small)])
        self.tensors: dict[str, torch.Tensor] = {}
        self.groups: dict[str, int] = {}
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            for cand in self.largest_candidates:
                model = space.build(cand)
                params = dict(model.named_parameters())
                for mod_name, mod in model.named_modules():
                    if isinstance(mod, torch.nn.Conv2d):
                        self.groups.setdefault(f"{mod_name}.weight", mod.groups)
                for name, value in model.state_dict().items():
                    if name in self.tensors:
                        if tuple(self.tensors[name].shape) != tuple(value.shape):
                            raise RuntimeError(f"supernet error: {name} has shapes {tuple(self.tensors[name].shape)} "
                                               f"and {tuple(value.shape)} in the covering candidates")
                        continue
                    t = value.detach().clone()
                    if name in params:
                        t.requires_grad_(True)
                    self.tensors[name] = t
        finally:
            torch.random.set_rng_state(gen_state)

    # ----------------------------------------------------------------- state
    def parameters(self) -> list["torch.Tensor"]:
        """The trainable shared tensors (weights, biases, BatchNorm affine parameters)."""
        return [t for t in self.tensors.values() if t.requires_grad]

    def named_parameters(self) -> list[tuple[str, "torch.Tensor"]]:
        return [(k, t) for k, t in self.tensors.items() if t.requires_grad]

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """Name -> a detached copy of every shared tensor (save with ``torch.save``)."""
        return {k: t.detach().clone() for k, t in self.tensors.items()}

    def load_state_dict(self, state: Mapping[str, "torch.Tensor"]) -> None:
        """Copy ``state`` (from :meth:`state_dict`) into the shared tensors; names and shapes must match."""
        import torch

        missing = sorted(set(self.tensors) - set(state))
        extra = sorted(set(state) - set(self.tensors))
        if missing or extra:
            raise ValueError(f"supernet state does not match the space {self.space.name!r}: "
                             f"missing {missing[:3]}, unexpected {extra[:3]}")
        with torch.no_grad():
            for k, t in self.tensors.items():
                if tuple(state[k].shape) != tuple(t.shape):
                    raise ValueError(f"supernet state {k} has shape {tuple(state[k].shape)}, expected {tuple(t.shape)}")
                t.copy_(state[k])

    # ----------------------------------------------------------------- sub-networks
    def sample(self, rng: "np.random.Generator", *, prune: bool = True) -> Candidate:
        """A random sub-network: random architecture and (with ``prune``) per-layer prune ratios, 32 bits."""
        return self.space.sample(rng, search=("arch", "prune") if prune else ("arch",))

    def inherited(self, model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
        """Name -> the slice of the shared tensors for every parameter and buffer of ``model`` (a model of
        ``space.build(candidate)``; only its module structure is read). Slices are differentiable views."""
        import torch

        out: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        for name, value in list(model.named_parameters()) + list(model.named_buffers()):
            if name not in self.tensors:
                raise KeyError(f"supernet of {self.space.name!r} has no tensor {name!r} (a gene it does not cover)")
            src = self.tensors[name]
            owner = modules[name.rpartition(".")[0]]
            out[name] = self._slice(name, src, tuple(value.shape), owner)
        return out

    def _slice(self, name: str, src: "torch.Tensor", shape: tuple[int, ...], owner: Any) -> "torch.Tensor":
        import torch

        if src.dim() == 0 or tuple(src.shape) == shape:
            return src
        if isinstance(owner, torch.nn.Conv2d) and name.endswith(".weight"):
            cout, cin_g, k, _ = shape
            big = src.shape[-1]
            lo = (big - k) // 2
            w = src[..., lo:lo + k, lo:lo + k]
            g, g_src = owner.groups, self.groups.get(name, 1)
            if g == 1 or g_src != 1:  # dense from dense, depthwise from depthwise: leading channels
                return w[:cout, :cin_g]
            co_g = cout // g  # grouped from dense: the block-diagonal part
            return torch.cat([w[i * co_g:(i + 1) * co_g, i * cin_g:(i + 1) * cin_g] for i in range(g)], dim=0)
        index = tuple(slice(0, n) for n in shape)
        return src[index]

    def forward(self, candidate: Candidate, x: "torch.Tensor", *, train: bool = True) -> "torch.Tensor":
        """Logits of ``candidate``'s sub-network on ``x``, computed on the shared tensors (gradients reach them).

        In ``train`` mode BatchNorm normalises with batch statistics (and updates the shared running
        statistics, which only a recalibration makes right for one sub-network).
        """
        import torch
        from torch.func import functional_call

        with torch.device("meta"):
            template = self.space.build(candidate)
        template.train(train)
        return functional_call(template, self.inherited(template), (x,), strict=True)

    def extract(self, candidate: Candidate) -> "torch.nn.Module":
        """``space.build(candidate)`` holding copies of the inherited weights, in eval mode.

        The BatchNorm statistics are the shared ones; recalibrate them on training images before use
        (``search.recalibrate_batchnorm``).
        """
        import torch

        model = self.space.build(candidate)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.inherited(model).items()}
        model.load_state_dict(state, strict=True)
        return model.eval()

    # ----------------------------------------------------------------- channel order
    def sort_channels(self) -> int:
        """Order the hidden channels of every expand -> depthwise -> project triple (and ShuffleNet's
        pw1 -> dw -> pw2) by importance, the L1 norm of the projection's input weights, most important first.

        The network's function is unchanged (the hidden channels are only permuted, together with their
        BatchNorm); what changes is which channels a narrower expansion or a prune ratio keeps. Grouped
        triples (FBNet ``_g2``) are left alone (a permutation would cross groups). Returns the number of
        triples sorted.
        """
        import torch

        triples = []
        for name in self.tensors:
            for first, mid, last in (("expand", "dw", "project"), ("pw1", "dw", "pw2")):
                suffix = f".{first}.conv.weight"
                if name.endswith(suffix):
                    base = name[: -len(suffix)]
                    if all(f"{base}.{n}.conv.weight" in self.tensors for n in (mid, last)):
                        triples.append((base, first, mid, last))
        sorted_n = 0
        with torch.no_grad():
            for base, first, mid, last in triples:
                if self.groups.get(f"{base}.{first}.conv.weight", 1) != 1 or \
                        self.groups.get(f"{base}.{last}.conv.weight", 1) != 1:
                    continue
                w_last = self.tensors[f"{base}.{last}.conv.weight"]
                order = torch.argsort(w_last.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
                for layer, dim in ((first, 0), (mid, 0), (last, 1)):
                    for key, t in self.tensors.items():
                        if not key.startswith(f"{base}.{layer}."):
                            continue
                        if key.endswith("num_batches_tracked") or (layer == last and not key.endswith("conv.weight")):
                            continue
                        t.copy_(t.index_select(dim, order))
                sorted_n += 1
        return sorted_n
