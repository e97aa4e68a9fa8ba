"""`prune`: compress my own model. The teacher itself, with per-layer prune ratios, bits and rank ratios.

The AMC / HAQ setting on any CNN that ``torch.fx`` can trace: the per-layer table (``layer_names``) is the
teacher's ``Conv2d``/``Linear`` layers in module order. Coupled layers (one residual stream, a depthwise
convolution and its expansion) form a group pruned together; the group's first layer carries its prune
ratio (``prunable``), the other members' ratios are reset to 0. Layers whose channels cannot be removed
consistently (the classifier, channels sliced or reshaped to constant sizes) are not prunable. Every
layer carries its bits. The architecture genes are ``rank_ratios``: one per 1x1 convolution / linear
layer (``lowrank_layers``), 1.0 meaning not factorised. ``build`` inherits the teacher's weights: channels
are kept by importance (:func:`spaces.compress.prune_structured`), factorised layers by truncated SVD
(:func:`spaces.compress.factorize_lowrank`); the distillation fine-tune then recovers the accuracy.

Teacher specs (the ``teacher`` option, always a JSON string in ``options``):

- ``"builtin"`` (default): :func:`builtin_teacher`, the same VGG-style CNN that ``python -m search`` trains
  as its built-in teacher, with seeded initialisation, so ``get_space("prune")`` works with no arguments;
- ``"torchvision:<builder>"``: e.g. ``"torchvision:resnet18"``, ``"torchvision:mobilenet_v2"``,
  ``"torchvision:shufflenet_v2_x0_5"``, built with ``weights=None`` and ``num_classes`` (no download);
- an in-memory ``nn.Module`` passed as ``teacher=``: recorded as ``"memory:<fingerprint>"``. Only the space
  instance that was given the module can decode such candidates: save the weights and use ``state_dict=``
  to share them across processes.

``state_dict`` (a path, loaded with ``weights_only=True``) loads trained weights into the teacher.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from latency_models import Kernel, kernels_from_onnx
from spaces._base import Architecture, Layer, SearchSpace, Suggest, check_unknown
from spaces._plan import QDQ_BITS, with_pool_bits
from spaces._registry import register_space
from spaces.compress import (
    export_onnx,
    factorize_lowrank,
    list_importances,
    lowrank_eligible,
    prune_groups,
    prune_structured,
)

if TYPE_CHECKING:
    import torch

__all__ = ["BUILTIN_TEACHER_WIDTH", "PruneSpace", "builtin_teacher"]

logger = logging.getLogger(__name__)

#: Rank ratios the search draws from (1.0: layer not factorised).
RANK_CHOICES = (0.25, 0.5, 0.75, 1.0)
#: Channels of the built-in teacher's first stage (doubled at each of its two poolings).
BUILTIN_TEACHER_WIDTH = 48
#: Pruned models and kernel lists a space instance keeps (most recent first out).
_CACHE_SIZE = 64


def builtin_teacher(*, in_channels: int = 3, num_classes: int = 10, width: int = BUILTIN_TEACHER_WIDTH) -> "torch.nn.Module":
    """The built-in teacher: three stages of two conv-BN-ReLU blocks (``width``, 2x, 4x channels, a max
    pool between stages), global average pooling and a linear classifier.

    Its layers are ``conv1`` ... ``conv6`` and ``classifier``. ``python -m search`` trains it on the data
    on first use (``--teacher builtin``); the ``prune`` space compresses it.
    """
    from collections import OrderedDict

    from torch import nn

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin, i = in_channels, 0
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        if stage:
            layers[f"pool{stage}"] = nn.MaxPool2d(2)
        for _ in range(2):
            i += 1
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(cout)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            cin = cout
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["classifier"] = nn.Linear(cin, num_classes)
    return nn.Sequential(layers)


def _fingerprint(model: "torch.nn.Module") -> str:
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class CompressedTeacher:
    """The plan node of a ``prune`` candidate: the teacher pruned, factorised and at the given bits.

    Its model comes from the compression operators, its kernels from the float export of that model (both
    cached by the space instance), its bits from the per-layer table.
    """

    name: str
    space: "PruneSpace" = dataclasses.field(compare=False, repr=False)
    rank_ratios: tuple[float, ...]
    prune_ratios: tuple[float, ...]
    bits: tuple[int, ...]

    def module_bits(self, prefix: str = "") -> dict[str, int]:
        factorised = {n for n, r in zip(self.space.lowrank_layers, self.rank_ratios) if r < 1.0}
        out: dict[str, int] = {}
        for name, b in zip(self.space.layer_table, self.bits):
            names = (f"{name}.0", f"{name}.1") if name in factorised else (name,)
            out.update({f"{prefix}.{n}" if prefix else n: b for n in names})
        return out

    def kernels(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Kernel]]:
        """Read from the float32 ONNX export of the compressed teacher (cached), with the candidate's bits."""
        kernels = self.space._float_kernels(self)
        bits = list(self.module_bits().values())
        weighted = [i for i, k in enumerate(kernels) if k.op in ("conv", "linear")]
        if len(weighted) != len(bits):
            raise RuntimeError(f"prune space: {len(weighted)} conv/linear kernels for {len(bits)} layers")
        out = list(kernels)
        for i, b in zip(weighted, bits):
            out[i] = dataclasses.replace(out[i], bits=b)
        out = with_pool_bits(out)  # a max pool next to a quantised layer runs at 8 bits
        return out[-1].output_shape, out

    def build(self, shape: tuple[int, ...]) -> "torch.nn.Module":
        return copy.deepcopy(self.space._float_model(self))


@register_space("prune")
class PruneSpace(SearchSpace):
    """The teacher with per-layer prune ratios, bits and rank ratios (see the module docstring).

    Options: ``teacher`` (spec string or ``nn.Module``), ``state_dict`` (path or ``None``), ``importance``
    (a registered criterion name, default ``"l1"``), ``num_classes`` / ``input_size`` / ``in_channels``
    (defaults 10 / 32 / 3), ``channel_multiple`` (kept channels per group are a multiple of it, default 4),
    ``seed`` (initialisation of a teacher without ``state_dict``).
    """

    def __init__(self, *, teacher: "str | torch.nn.Module" = "builtin", state_dict: str | None = None,
                 importance: str = "l1", num_classes: int = 10, input_size: int = 32, in_channels: int = 3,
                 channel_multiple: int = 4, seed: int = 0) -> None:
        import torch

        super().__init__(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                         channel_multiple=channel_multiple)
        if importance not in list_importances():
            raise ValueError(f"importance={importance!r} is not registered; allowed: {', '.join(list_importances())}")
        if not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} must be an integer")
        self.importance, self.state_dict_path, self.seed = importance, state_dict, seed
        if isinstance(teacher, torch.nn.Module):
            if state_dict is not None:
                raise ValueError("state_dict= is for teacher spec strings; load it into the module yourself")
            self.teacher_spec = f"memory:{_fingerprint(teacher)}"
            model = copy.deepcopy(teacher)
        elif isinstance(teacher, str):
            self.teacher_spec = teacher
            model = self._from_spec(teacher)
        else:
            raise ValueError(f"teacher={teacher!r} must be a spec string or a torch.nn.Module")
        if state_dict is not None:
            try:
                model.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError) as exc:
                raise ValueError(f"state_dict={state_dict!r} cannot be loaded into the teacher: {exc}") from None
        self._teacher = model.eval()
        self._example = torch.zeros((1, *self.input_shape))
        self._check_teacher()
        #: the teacher's Conv2d / Linear layers in module order: what prune ratios and bits index
        self.layer_table = [n for n, m in self._teacher.named_modules()
                            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        self._prunable = {members[0] for members, free in prune_groups(self._teacher, self._example) if free}
        self._lowrank = lowrank_eligible(self._teacher)
        self._layer_pos = {name: j for j, name in enumerate(self.layer_table)}
        self._built: collections.OrderedDict[str, torch.nn.Module] = collections.OrderedDict()
        self._kernels: collections.OrderedDict[str, list[Kernel]] = collections.OrderedDict()

    # ----------------------------------------------------------------- teacher
    def _from_spec(self, spec: str) -> "torch.nn.Module":
        import torch

        if spec == "builtin":
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                return builtin_teacher(in_channels=self.in_channels, num_classes=self.num_classes)
        if spec.startswith("torchvision:"):
            import torchvision

            builder = getattr(torchvision.models, spec.split(":", 1)[1], None)
            if builder is None or not callable(builder):
                raise ValueError(f"teacher={spec!r}: torchvision.models has no builder {spec.split(':', 1)[1]!r}")
            if self.in_channels != 3:
                raise ValueError(f"teacher={spec!r} takes 3 input channels, not in_channels={self.in_channels}")
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                return builder(weights=None, num_classes=self.num_classes)
        if spec.startswith("memory:"):
            raise ValueError(
                f"teacher={spec!r} was an in-memory module of another space instance; decode its candidates "
                "with that instance, or save its weights and use teacher=<spec>, state_dict=<path>"
            )
        raise ValueError(
            f"teacher={spec!r} is not supported; allowed: 'builtin', 'torchvision:<builder>' (e.g. "
            "'torchvision:resnet18'), or a torch.nn.Module"
        )

    def _check_teacher(self) -> None:
        import torch

        with torch.no_grad():
            try:
                out = self._teacher(self._example)
            except RuntimeError as exc:
                raise ValueError(f"teacher={self.teacher_spec!r} does not accept inputs of shape "
                                 f"{tuple(self._example.shape)}: {exc}") from None
        if tuple(out.shape) != (1, self.num_classes):
            raise ValueError(f"teacher={self.teacher_spec!r} outputs {tuple(out.shape)}, not (1, {self.num_classes}); "
                             "set num_classes")

    @property
    def teacher(self) -> "torch.nn.Module":
        """A copy of the teacher (eval mode)."""
        return copy.deepcopy(self._teacher)

    @property
    def lowrank_layers(self) -> list[str]:
        """The layers that ``rank_ratios`` index, in order."""
        return list(self._lowrank)

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "teacher": self.teacher_spec, "state_dict": self.state_dict_path,
                "importance": self.importance, "seed": self.seed}

    @property
    def latency_options(self) -> dict[str, Any]:
        """The teacher's kernels instead of its weights: weights (the spec's seed, a state dict, an in-memory
        module's values) decide which channels a ratio keeps, never how many, so the same teacher
        architecture trained again keeps its latency profile. Its kernels (the uncompressed candidate's:
        every layer's operator, shapes, stride, padding, groups) say what is timed."""
        kernels = [k.to_dict() for k in self.kernels(self.candidate())]
        digest = hashlib.sha1(json.dumps(kernels, sort_keys=True).encode()).hexdigest()[:16]
        opts = {k: v for k, v in self.options.items() if k not in ("teacher", "state_dict", "seed")}
        return {**opts, "teacher_kernels": digest}

    # ----------------------------------------------------------------- genes
    def _architecture(self, genes: Mapping[str, Any]) -> Architecture:
        check_unknown(genes, ("rank_ratios",))
        n = len(self._lowrank)
        ranks = genes.get("rank_ratios", [1.0] * n)
        if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Sequence) or len(ranks) != n:
            raise ValueError(f"rank_ratios={ranks!r} is not allowed; allowed: a list of {n} numbers in (0, 1], "
                             f"one per layer of lowrank_layers")
        for i, r in enumerate(ranks):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r <= 1.0:
                raise ValueError(f"rank_ratios[{i}] (layer {self._lowrank[i]!r})={r!r} is not allowed; "
                                 "allowed: a number in (0, 1]")
        layers = tuple(Layer(name, prunable=name in self._prunable) for name in self.layer_table)
        return Architecture({"rank_ratios": [round(float(r), 6) for r in ranks]}, layers)

    def _sample_architecture(self, suggest: Suggest) -> dict[str, Any]:
        return {"rank_ratios": [suggest.categorical(f"rank_{name}", RANK_CHOICES) for name in self._lowrank]}

    def _architecture_params(self, genes: Mapping[str, Any], opt_in: frozenset[str]) -> dict[str, Any]:
        return {f"rank_{name}": r for name, r in zip(self._lowrank, genes["rank_ratios"])}

    def _plan(self, genes: Mapping[str, Any], prune_ratios: Sequence[float], bits: Sequence[int]) -> CompressedTeacher:
        return CompressedTeacher("", self, tuple(genes["rank_ratios"]), tuple(prune_ratios), tuple(bits))

    # ----------------------------------------------------------------- compiled latency (spaces._compiled)
    def _latency_segments(self, genes: Mapping[str, Any], ratios: Sequence[float], bits: Sequence[int]) -> list[Any]:
        """One segment per conv / linear kernel of the compressed teacher (with the kernels after it; the
        first also with those before it). The first is keyed by the rank and prune ratios, which decide every
        kernel's shape (the state after it), each by its bits (a factorised layer's two kernels share them) and
        whether the next layer quantises (a max pool between them runs at 8 bits then: ``with_pool_bits``)."""
        ranks = tuple(genes["rank_ratios"])
        expanded: Sequence[int] = bits
        if any(r < 1.0 for r in ranks):
            factorised = {self._layer_pos[name] for name, r in zip(self._lowrank, ranks) if r < 1.0}
            expanded = [b for j, b in enumerate(bits) for _ in range(2 if j in factorised else 1)]
        nxt = [8 if b in QDQ_BITS else 32 for b in expanded[1:]] + [32]
        return [("teacher", ranks, tuple(ratios), expanded[0], len(expanded), nxt[0]),
                *zip(range(1, len(expanded)), expanded[1:], nxt[1:])]

    def _segment_kernels(self, key: tuple[Any, ...], state: Any) -> tuple[Any, list[Kernel]]:
        if key[0] == "teacher":
            _, ranks, ratios, b, n_bits, b_next = key
            state, j = (ranks, ratios), 0
        else:
            j, b, b_next = key
        kernels = self._float_kernels(CompressedTeacher("", self, state[0], state[1], ()))
        weighted = [i for i, k in enumerate(kernels) if k.op in ("conv", "linear")]
        if j == 0 and len(weighted) != n_bits:
            raise RuntimeError(f"prune space: {len(weighted)} conv/linear kernels for {n_bits} layers")
        start = 0 if j == 0 else weighted[j]
        stop = weighted[j + 1] if j + 1 < len(weighted) else len(kernels)
        out = list(kernels[start:stop])
        out[weighted[j] - start] = dataclasses.replace(out[weighted[j] - start], bits=b)
        if stop < len(kernels):  # the next layer decides the bits of a max pool just before it
            out = with_pool_bits([*out, dataclasses.replace(kernels[stop], bits=b_next)])[:-1]
        else:
            out = with_pool_bits(out)
        return state, out

    # ----------------------------------------------------------------- models (cached per instance)
    @staticmethod
    def _key(node: CompressedTeacher) -> str:
        return repr((node.rank_ratios, node.prune_ratios))

    def _float_model(self, node: CompressedTeacher) -> "torch.nn.Module":
        """The teacher pruned (channels removed by importance) and factorised; weights inherited."""
        key = self._key(node)
        if key not in self._built:
            named = {name: r for name, r in zip(self.layer_table, node.prune_ratios) if r > 0}
            model = self._teacher
            if named:
                model = prune_structured(model, named, importance=self.importance, example_input=self._example,
                                         round_to=self.channel_multiple)
            ranks = {name: r for name, r in zip(self._lowrank, node.rank_ratios) if r < 1.0}
            model = factorize_lowrank(model, ranks) if ranks else copy.deepcopy(model)
            self._built[key] = model.eval()
            while len(self._built) > _CACHE_SIZE:
                self._built.popitem(last=False)
        return self._built[key]

    def _float_kernels(self, node: CompressedTeacher) -> list[Kernel]:
        key = self._key(node)
        if key not in self._kernels:
            kernels, unknown = kernels_from_onnx(export_onnx(self._float_model(node), self.input_shape))
            if unknown:
                logger.warning("prune space: the latency kernels do not cover the operators %s", sorted(set(unknown)))
            self._kernels[key] = kernels
            while len(self._kernels) > _CACHE_SIZE:
                self._kernels.popitem(last=False)
        return self._kernels[key]
