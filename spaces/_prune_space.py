"""`prune`: compress my own model. The teacher itself, with per-layer prune ratios, bits and rank ratios.

The AMC / HAQ setting on any CNN that ``torch.fx`` can trace: the per-layer table (``layer_names``) is the
teacher's ``Conv2d``/``Linear`` layers in module order. Coupled layers (one residual stream, a depthwise
convolution and its expansion) form a group pruned together; the group's first layer carries its prune
ratio (``prunable``), the other members' ratios are reset to 0. Layers whose channels cannot be removed
consistently (the classifier, grouped convolutions, channels split or shuffled) are not prunable. Every
layer carries its bits. The architecture genes are ``rank_ratios``: one per 1x1 convolution / linear
layer (``lowrank_layers``), 1.0 meaning not factorised. ``build`` inherits the teacher's weights: channels
are kept by importance (:func:`spaces.prune_structured`), factorised layers by truncated SVD
(:func:`spaces.factorize_lowrank`); the distillation fine-tune then recovers the accuracy.

Teacher specs (the ``teacher`` option, always a JSON string in ``options``):

- ``"builtin"`` (default): a small residual CNN (residual add, depthwise inverted residual, 1x1 head),
  seeded initialisation, so ``get_space("prune")`` works with no arguments;
- ``"torchvision:<builder>"``: e.g. ``"torchvision:resnet18"``, ``"torchvision:mobilenet_v2"``,
  ``"torchvision:shufflenet_v2_x0_5"``, built with ``weights=None`` and ``num_classes`` (no download);
- an in-memory ``nn.Module`` passed as ``teacher=``: recorded as ``"memory:<fingerprint>"``; candidates of
  such a space are decoded by that space instance (or ``get_space("prune", teacher="memory:...")`` in the
  same process while the instance lives). Save the weights and use ``state_dict=`` to share across
  processes.

``state_dict`` (a path, loaded with ``weights_only=True``) loads trained weights into the teacher.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import weakref
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from latency_models import Kernel
from spaces._base import Layer
from spaces._blocks import PlannedSpace, Suggest, check_unknown
from spaces._candidate import Candidate
from spaces._registry import register_space

if TYPE_CHECKING:
    import torch

__all__ = ["PruneSpace", "builtin_teacher"]

logger = logging.getLogger(__name__)

#: Rank ratios the search draws from (1.0: layer not factorised).
RANK_CHOICES = (0.25, 0.5, 0.75, 1.0)
_MEMORY: "weakref.WeakValueDictionary[str, torch.nn.Module]" = weakref.WeakValueDictionary()
_CACHE_SIZE = 64
_SHARED: dict[str, dict[str, Any]] = {}


def builtin_teacher(*, in_channels: int = 3, num_classes: int = 10, width: int = 16) -> "torch.nn.Module":
    """The default teacher: stem, residual block, strided conv, inverted residual, 1x1 head, classifier."""
    from torch import nn

    class _Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            y = self.bn2(self.conv2(nn.functional.relu(self.bn1(self.conv1(x)))))
            return nn.functional.relu(x + y)

    class _Inverted(nn.Module):
        def __init__(self, c: int, e: int) -> None:
            super().__init__()
            h = c * e
            self.expand = nn.Conv2d(c, h, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(h)
            self.dw = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False)
            self.bn2 = nn.BatchNorm2d(h)
            self.project = nn.Conv2d(h, c, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(c)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            y = nn.functional.relu6(self.bn1(self.expand(x)))
            y = nn.functional.relu6(self.bn2(self.dw(y)))
            return x + self.bn3(self.project(y))

    class BuiltinTeacher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(w)
            self.block1 = _Residual(w)
            self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False)
            self.down_bn = nn.BatchNorm2d(2 * w)
            self.block2 = _Inverted(2 * w, 2)
            self.head = nn.Conv2d(2 * w, 4 * w, 1, bias=False)
            self.head_bn = nn.BatchNorm2d(4 * w)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(4 * w, num_classes)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            x = nn.functional.relu(self.stem_bn(self.stem(x)))
            x = self.block1(x)
            x = self.block2(nn.functional.relu(self.down_bn(self.down(x))))
            x = nn.functional.relu(self.head_bn(self.head(x)))
            return self.classifier(self.pool(x).flatten(1))

    return BuiltinTeacher()


def _fingerprint(model: "torch.nn.Module") -> str:
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@register_space("prune")
class PruneSpace(PlannedSpace):
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

        from spaces._prune import get_importance

        super().__init__(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                         channel_multiple=channel_multiple)
        get_importance(importance)  # validates the name
        if not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} must be an integer")
        self.importance, self.state_dict_path, self.seed = importance, state_dict, seed
        if isinstance(teacher, torch.nn.Module):
            if state_dict is not None:
                raise ValueError("state_dict= is for teacher spec strings; load it into the module yourself")
            self.teacher_spec = f"memory:{_fingerprint(teacher)}"
            _MEMORY[self.teacher_spec] = teacher
        elif isinstance(teacher, str):
            self.teacher_spec = teacher
        else:
            raise ValueError(f"teacher={teacher!r} must be a spec string or a torch.nn.Module")
        # Spaces with equal options share the analysed teacher and the caches (Candidate.kernels() makes a
        # new space instance per call).
        shared_key = repr(sorted(self.options.items()))
        shared = _SHARED.get(shared_key)
        if shared is None:
            model = copy.deepcopy(teacher) if isinstance(teacher, torch.nn.Module) else self._from_spec(teacher)
            if state_dict is not None:
                try:
                    model.load_state_dict(torch.load(state_dict, map_location="cpu", weights_only=True))
                except (OSError, RuntimeError) as exc:
                    raise ValueError(f"state_dict={state_dict!r} cannot be loaded into the teacher: {exc}") from None
            self._teacher = model.eval()
            self._check_teacher()
            self._example = torch.zeros((1, *self.input_shape))
            self._analyse_teacher()
            shared = {"teacher": self._teacher, "names": self._module_names, "prunable": self._prunable,
                      "lowrank": self._lowrank, "built": {}, "kernels": {}}
            if len(_SHARED) >= 8:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[shared_key] = shared
        self._teacher, self._module_names = shared["teacher"], shared["names"]
        self._prunable, self._lowrank = shared["prunable"], shared["lowrank"]
        self._built, self._kernels = shared["built"], shared["kernels"]
        self._example = torch.zeros((1, *self.input_shape))

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
            model = _MEMORY.get(spec)
            if model is None:
                raise ValueError(
                    f"teacher={spec!r} was an in-memory module of another space instance or process; decode its "
                    "candidates with that instance, or save its weights and use teacher=<spec>, state_dict=<path>"
                )
            return copy.deepcopy(model)
        raise ValueError(
            f"teacher={spec!r} is not supported; allowed: 'builtin', 'torchvision:<builder>' (e.g. "
            "'torchvision:resnet18'), or a torch.nn.Module"
        )

    def _check_teacher(self) -> None:
        import torch

        with torch.no_grad():
            try:
                out = self._teacher(torch.zeros((1, *self.input_shape)))
            except RuntimeError as exc:
                raise ValueError(f"teacher={self.teacher_spec!r} does not accept inputs of shape "
                                 f"{(1, *self.input_shape)}: {exc}") from None
        if tuple(out.shape) != (1, self.num_classes):
            raise ValueError(f"teacher={self.teacher_spec!r} outputs {tuple(out.shape)}, not (1, {self.num_classes}); "
                             "set num_classes")

    def _analyse_teacher(self) -> None:
        import torch

        from spaces._lowrank import lowrank_eligible
        from spaces._prune import prune_groups

        self._module_names = [n for n, m in self._teacher.named_modules()
                              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        self._prunable: set[str] = set()
        for members, free in prune_groups(self._teacher, self._example):
            if free:
                self._prunable.add(members[0])
        self._lowrank = lowrank_eligible(self._teacher)

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

    # ----------------------------------------------------------------- genes
    def _arch(self, genes: Mapping[str, Any]) -> dict[str, Any]:
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
        return {"rank_ratios": [round(float(r), 6) for r in ranks]}

    def _sample_arch(self, suggest: Suggest) -> dict[str, Any]:
        return {"rank_ratios": [suggest.categorical(f"rank_{name}", RANK_CHOICES) for name in self._lowrank]}

    def _layers(self, arch: Mapping[str, Any]) -> list[Layer]:
        return [Layer(name, prunable=name in self._prunable) for name in self._module_names]

    # ----------------------------------------------------------------- models
    def _key(self, candidate: Candidate) -> tuple[str, dict[str, Any], list[float], list[int]]:
        arch, ratios, bits = self._decode(candidate)
        key = repr((arch["rank_ratios"], ratios))
        return key, arch, ratios, bits

    def _build_float(self, key: str, arch: Mapping[str, Any], ratios: Sequence[float]) -> "torch.nn.Module":
        from spaces._lowrank import factorize_lowrank
        from spaces._prune import prune_structured

        if key not in self._built:
            if len(self._built) >= _CACHE_SIZE:
                self._built.pop(next(iter(self._built)))
            named = {name: r for name, r in zip(self._module_names, ratios) if r > 0}
            model = self._teacher
            if named:
                model = prune_structured(model, named, importance=self.importance, example_input=self._example,
                                         round_to=self.channel_multiple)
            ranks = {name: r for name, r in zip(self._lowrank, arch["rank_ratios"]) if r < 1.0}
            model = factorize_lowrank(model, ranks) if ranks else copy.deepcopy(model)
            self._built[key] = model.eval()
        return self._built[key]

    def build(self, candidate: Candidate) -> "torch.nn.Module":
        """The teacher pruned (channels removed by importance) and factorised; weights inherited."""
        key, arch, ratios, _ = self._key(candidate)
        return copy.deepcopy(self._build_float(key, arch, ratios)).eval()

    def module_bits(self, candidate: Candidate) -> dict[str, int]:
        arch, _, bits = self._decode(candidate)
        factorised = {name for name, r in zip(self._lowrank, arch["rank_ratios"]) if r < 1.0}
        out: dict[str, int] = {}
        for name, b in zip(self._module_names, bits):
            if name in factorised:
                out[f"{name}.0"] = b
                out[f"{name}.1"] = b
            else:
                out[name] = b
        return out

    def kernels(self, candidate: Candidate) -> list[Kernel]:
        """Read from the float32 ONNX export of ``build(candidate)`` (cached), with the candidate's bits."""
        import dataclasses

        from latency_models import kernels_from_onnx
        from spaces._onnx import export_onnx

        key, arch, ratios, _ = self._key(candidate)
        if key not in self._kernels:
            if len(self._kernels) >= _CACHE_SIZE:
                self._kernels.pop(next(iter(self._kernels)))
            kernels, unknown = kernels_from_onnx(export_onnx(self._build_float(key, arch, ratios), self.input_shape))
            if unknown:
                logger.warning("prune space: the latency kernels do not cover the operators %s", sorted(set(unknown)))
            self._kernels[key] = kernels
        kernels = self._kernels[key]
        bits = list(self.module_bits(candidate).values())
        weighted = [i for i, k in enumerate(kernels) if k.op in ("conv", "linear")]
        if len(weighted) != len(bits):
            raise RuntimeError(f"prune space: {len(weighted)} conv/linear kernels for {len(bits)} layers")
        out = list(kernels)
        for i, b in zip(weighted, bits):
            out[i] = dataclasses.replace(out[i], bits=b)
        return out
