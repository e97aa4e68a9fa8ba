"""`SearchSpace`: what can be searched, and how a candidate becomes a model."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from latency_models import Kernel

from spaces._candidate import Candidate

if TYPE_CHECKING:
    from typing import Iterable

    import numpy as np
    import onnx
    import optuna
    import torch

__all__ = ["Layer", "SearchSpace", "SpaceStats", "PRUNE_RATIO_MAX", "SEARCH_PARTS"]

#: Largest prune ratio a layer may have.
PRUNE_RATIO_MAX = 0.9
#: The parts of a candidate that ``sample`` can search; the parts not searched keep their defaults.
SEARCH_PARTS = ("arch", "prune", "bits")


@dataclasses.dataclass(frozen=True)
class SpaceStats:
    """Size and cost of a candidate's exported (BatchNorm-folded) model.

    Attributes:
        params: parameters (weights and biases, BatchNorm folded).
        macs: multiply-accumulates of one inference at batch 1.
        size_bytes: bytes of the stored weights at the candidate's bit widths.
    """

    params: int
    macs: int
    size_bytes: int


@dataclasses.dataclass(frozen=True)
class Layer:
    """One entry of a candidate's per-layer table (what ``prune_ratios`` and ``bits`` index).

    Attributes:
        name: layer name; also the module path prefix of its modules in the built model.
        prunable: whether a prune ratio removes channels here (spaces reset a ratio elsewhere to 0).
        quantisable: whether the layer has weights (spaces reset bits elsewhere to 32).
    """

    name: str
    prunable: bool = True
    quantisable: bool = True


class SearchSpace(abc.ABC):
    """A registered family of models.

    Contract for subclasses (register them with :func:`spaces.register_space`):

    - ``sample(trial_or_rng, *, search=SEARCH_PARTS)``: draw a :class:`Candidate` from an
      ``optuna.trial.Trial`` (stable parameter names, so a resumed study continues where it stopped; an
      ``optuna.trial.FixedTrial`` of a trial's params gives the same candidate again) or from a seeded
      ``numpy.random.Generator`` (reproducible). ``search`` names the parts drawn, a subset of
      :data:`SEARCH_PARTS`: the others keep their defaults (the default architecture of ``candidate()``,
      prune ratio 0, 32 bits), which is how arch-only, prune-only and bits-only searches are made.
    - ``candidate(**genes)``: make (and validate) a candidate from genes given by hand; per-layer
      ``prune_ratios`` and ``bits`` default to none pruned and 32 bits.
    - ``build(candidate)``: the ``torch.nn.Module`` with pruned channels physically absent.
    - ``kernels(candidate)``: the runtime kernels its exported ONNX model executes, in graph order.
    - ``layer_names(candidate)``: the layers that per-layer prune ratios and bits refer to, in order.
    - ``module_bits(candidate)``: qualified names of the ``Conv2d``/``Linear`` modules of ``build(candidate)``
      mapped to their bit width, which is what fake quantisation and int8 export consume.

    Invalid genes raise ``ValueError`` naming the gene, the value and what is allowed.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, num_classes: int, input_size: int, in_channels: int = 3) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
        if not isinstance(input_size, int) or input_size < 8:
            raise ValueError(f"input_size={input_size!r} must be an integer >= 8")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels={in_channels!r} must be a positive integer")
        self.num_classes = num_classes
        self.input_size = input_size
        self.in_channels = in_channels

    # ----------------------------------------------------------------- to implement
    @abc.abstractmethod
    def sample(
        self, trial_or_rng: "optuna.trial.Trial | np.random.Generator", *, search: Sequence[str] = SEARCH_PARTS
    ) -> Candidate:
        """Draw a candidate from an Optuna trial or a seeded numpy generator, searching only ``search``."""

    @abc.abstractmethod
    def candidate(self, **genes: Any) -> Candidate:
        """A validated candidate from the given genes (``prune_ratios=`` and ``bits=`` optional)."""

    @abc.abstractmethod
    def build(self, candidate: Candidate) -> "torch.nn.Module":
        """The model of ``candidate``, in eval mode, pruned channels absent."""

    @abc.abstractmethod
    def kernels(self, candidate: Candidate) -> list[Kernel]:
        """The kernels the exported ONNX model of ``candidate`` executes, in graph order."""

    @abc.abstractmethod
    def layer_names(self, candidate: Candidate) -> list[str]:
        """Names of the per-layer units that ``prune_ratios`` and ``bits`` index."""

    @abc.abstractmethod
    def module_bits(self, candidate: Candidate) -> dict[str, int]:
        """Qualified ``Conv2d``/``Linear`` module names of ``build(candidate)`` mapped to their bits."""

    # ----------------------------------------------------------------- shared behaviour
    @property
    def options(self) -> dict[str, Any]:
        """The options this space was made with; recorded in every candidate it makes."""
        return {"num_classes": self.num_classes, "input_size": self.input_size, "in_channels": self.in_channels}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        return (self.in_channels, self.input_size, self.input_size)

    def layers(self, candidate: Candidate) -> list[Layer]:
        """The per-layer table of ``candidate``; by default every layer is prunable and has weights."""
        return [Layer(name) for name in self.layer_names(candidate)]

    def stats(self, candidate: Candidate) -> SpaceStats:
        """Parameters, MACs and stored bytes at the chosen bits, from the candidate's kernels."""
        kernels = self.kernels(candidate)
        return SpaceStats(
            params=sum(k.params for k in kernels),
            macs=sum(k.macs for k in kernels),
            size_bytes=int(round(sum(k.weight_bytes for k in kernels))),
        )

    def onnx(self, candidate: Candidate, *, model: "torch.nn.Module | None" = None,
             calibration: "Iterable[torch.Tensor] | None" = None, path: str | None = None) -> "onnx.ModelProto":
        """The deployable ONNX model of ``candidate``: QDQ int8/int4 and float16 where its bits say so.

        ``model`` is a trained model of the candidate (e.g. from ``search.distill_train``, already
        fake-quantised, whose activation ranges are then used as they are); by default ``build(candidate)``.
        A float model with int bits is calibrated on ``calibration`` batches, or on random noise when none
        are given (right graph and speed, meaningless accuracy; silent for ``build(candidate)``, whose
        weights are untrained anyway, a logged warning for a given ``model``). All-32-bit candidates export
        plain float32 (see :func:`spaces.export_onnx`). Writes ``path`` when given.
        """
        from spaces._onnx import export_onnx
        from spaces._quant import act_quantizers, export_onnx_quantized

        bits = self.module_bits(candidate)
        net = self.build(candidate) if model is None else model
        if all(b == 32 for b in bits.values()) and not act_quantizers(net):
            return export_onnx(net, self.input_shape, path)
        if model is None and calibration is None:  # untrained weights: ranges from noise (for timing)
            import torch

            gen = torch.Generator().manual_seed(0)
            calibration = [torch.randn((8, *self.input_shape), generator=gen) for _ in range(4)]
        return export_onnx_quantized(net, bits, self.input_shape, path, calibration=calibration)
