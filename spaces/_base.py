"""`SearchSpace`: what can be searched, and how a candidate becomes a plan, kernels and a model."""

from __future__ import annotations

import abc
import dataclasses
import json
import warnings
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from latency_models import BITS, Kernel
from spaces._candidate import Candidate
from spaces._compiled import CompiledLatency
from spaces._plan import Node, default_stem_stride
from spaces.compress import PRUNE_RATIO_MAX, act_quantizers, compressed_size_bytes, export_onnx, export_onnx_quantized

if TYPE_CHECKING:
    from typing import Iterable

    import onnx
    import optuna
    import torch

    from latency_models import LatencyPredictor

__all__ = [
    "PRUNE_RATIO_MAX",
    "PRUNE_RATIO_STEP",
    "SEARCH_BITS",
    "SEARCH_PARTS",
    "Architecture",
    "Layer",
    "SearchSpace",
    "SpaceStats",
    "StudentSpace",
    "Suggest",
    "check_choice",
    "check_depths",
    "check_unknown",
    "per_stage",
    "sample_stages",
]

#: The parts of a candidate that ``sample`` can search; the parts not searched keep their defaults.
SEARCH_PARTS = ("arch", "prune", "bits")
#: Step of the prune ratios that ``sample`` draws (from 0 to :data:`PRUNE_RATIO_MAX`).
PRUNE_RATIO_STEP = 0.05
#: Bit widths ``sample`` draws by default. Binary and ternary weights (1, 2 bits, also in
#: ``latency_models.BITS``) are opt-in: ``sample(..., bits=(1, 2, 8, 32))``; ONNX Runtime runs them as int8,
#: so they buy size, not speed.
SEARCH_BITS = (4, 8, 16, 32)
#: Latency evaluators (one per predictor) a space instance keeps.
_EVALUATORS_KEPT = 4


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


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Validated architecture genes (JSON values, defaults filled in) and the per-layer table they imply."""

    genes: dict[str, Any]
    layers: tuple[Layer, ...]


class Suggest:
    """One interface over an Optuna trial (or ``FixedTrial``) and a numpy generator.

    Parameter names are the Optuna parameter names, so a study resumed from storage, or a ``FixedTrial``
    of a finished trial's ``params``, gives the same candidate.
    """

    def __init__(self, trial_or_rng: Any) -> None:
        #: opt-in genes the caller of ``sample`` asked to draw (``SearchSpace.OPT_IN_GENES``)
        self.opt_in: frozenset[str] = frozenset()
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


class SearchSpace(abc.ABC):
    """A registered family of models, decoded from plain-data :class:`Candidate` values.

    A subclass (registered with :func:`spaces.register_space`) implements three methods:

    - ``_architecture(genes) -> Architecture``: validate architecture genes given by hand (a dict without
      ``prune_ratios`` / ``bits``), fill in defaults for the missing ones, and say which layers the
      per-layer prune ratios and bits index; an unknown or bad gene raises ``ValueError`` naming it, its
      value and what is allowed.
    - ``_sample_architecture(suggest) -> dict``: draw architecture genes through a :class:`Suggest` (an
      Optuna trial or a numpy generator), with stable parameter names.
    - ``_plan(genes, prune_ratios, bits) -> Node``: the network as a plan (see ``spaces._plan``): every node
      lists its kernels, its quantised modules and builds its ``torch.nn.Module``.

    Everything else follows: ``candidate``, ``sample``, ``layer_names``, ``layers``, ``plan``, ``kernels``,
    ``module_bits``, ``build``, ``stats``, ``onnx`` and ``latency_evaluator``. Optionally, a space makes
    ``latency_evaluator`` fast by cutting its candidates into memoisable segments (``_latency_segments``
    and ``_segment_kernels``, see :mod:`spaces._compiled`); the built-in spaces do. With
    ``_architecture_params(genes, opt_in) -> dict``, the inverse of ``_sample_architecture``, it gives
    ``trial_params`` for searches that start from known candidates (``search.uniform_starts``); without it,
    those starts are skipped when the architecture is searched.

    Options every space takes: ``num_classes``, ``input_size``, ``in_channels`` and ``channel_multiple``
    (pruned channel counts are multiples of it). A subclass with more options extends :attr:`options`, so
    that every candidate records what rebuilds its space (``get_space(c.space, **c.options)``).
    """

    name: ClassVar[str] = ""
    #: Architecture genes that ``sample`` draws only when asked (``sample(..., genes=...)``).
    OPT_IN_GENES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, num_classes: int, input_size: int, in_channels: int = 3, channel_multiple: int = 8) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
        if not isinstance(input_size, int) or input_size < 8:
            raise ValueError(f"input_size={input_size!r} must be an integer >= 8")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels={in_channels!r} must be a positive integer")
        if not isinstance(channel_multiple, int) or isinstance(channel_multiple, bool) or channel_multiple < 1:
            raise ValueError(f"channel_multiple={channel_multiple!r} must be a positive integer")
        self.num_classes = num_classes
        self.input_size = input_size
        self.in_channels = in_channels
        self.channel_multiple = channel_multiple

    # ----------------------------------------------------------------- to implement
    @abc.abstractmethod
    def _architecture(self, genes: Mapping[str, Any]) -> Architecture:
        """The validated architecture genes with defaults filled in, and their per-layer table."""

    @abc.abstractmethod
    def _sample_architecture(self, suggest: Suggest) -> dict[str, Any]:
        """Architecture genes drawn through ``suggest``."""

    @abc.abstractmethod
    def _plan(self, genes: Mapping[str, Any], prune_ratios: Sequence[float], bits: Sequence[int]) -> Node:
        """The root node of the network (its ``kernels``, ``module_bits`` and ``build`` define the model)."""

    # ----------------------------------------------------------------- options
    @property
    def options(self) -> dict[str, Any]:
        """The options this space was made with; recorded in every candidate it makes."""
        return {"num_classes": self.num_classes, "input_size": self.input_size, "in_channels": self.in_channels,
                "channel_multiple": self.channel_multiple}

    @property
    def latency_options(self) -> dict[str, Any]:
        """The options that decide this space's kernels, hence its latency profile on a device: all of
        :attr:`options` unless a space says otherwise (the ``prune`` space leaves out its teacher's weights)."""
        return self.options

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        return (self.in_channels, self.input_size, self.input_size)

    # ----------------------------------------------------------------- candidates
    def candidate(self, **genes: Any) -> Candidate:
        """A validated candidate; architecture genes default to the space's default architecture.

        ``prune_ratios`` and ``bits`` (one per entry of :meth:`layer_names`) default to 0 and 32. A ratio
        on a layer with nothing to prune is reset to 0, and bits on a layer without weights to 32, so that
        equal networks are equal candidates.
        """
        ratios_in = genes.pop("prune_ratios", None)
        bits_in = genes.pop("bits", None)
        arch = self._architecture(genes)
        layers = arch.layers
        n = len(layers)
        ratios = _check_list("prune_ratios", ratios_in, n, 0.0)
        bits = _check_list("bits", bits_in, n, 32)
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
        cand = Candidate(self.name, arch.genes, ratios, bits, self.options)
        # Remember who validated it (not a dataclass field: equality, hash and JSON are unchanged), so that
        # plan(), kernels() and build() of an equal space skip validating it again.
        object.__setattr__(cand, "_validated_by", self._validation_key())
        return cand

    def sample(
        self, trial_or_rng: "optuna.trial.Trial | np.random.Generator", *, search: Sequence[str] = SEARCH_PARTS,
        bits: Sequence[int] = SEARCH_BITS, genes: Sequence[str] = (),
    ) -> Candidate:
        """Draw a candidate from an Optuna trial or a seeded numpy generator, searching only ``search``.

        ``search`` names the parts drawn, a subset of :data:`SEARCH_PARTS`: the others keep their defaults
        (the default architecture of ``candidate()``, prune ratio 0, 32 bits), which is how arch-only,
        prune-only and bits-only searches are made. Parameter names are stable (``prune_<layer>``,
        ``bits_<layer>`` and the space's own), so a resumed study continues where it stopped and an
        ``optuna.trial.FixedTrial`` of a trial's params gives the same candidate again.

        ``bits`` are the widths drawn per layer (default :data:`SEARCH_BITS`; any non-empty subset of
        ``latency_models.BITS``, e.g. ``(1, 2, 8, 32)`` to search binary and ternary layers). ``genes`` names
        opt-in architecture genes of the space to draw as well (see :attr:`OPT_IN_GENES`, e.g. ``("crelu",)``
        for the students); without them those genes keep their default, so existing studies and seeds draw
        the same candidates.
        """
        if isinstance(search, str) or not set(search) <= set(SEARCH_PARTS):
            raise ValueError(f"search={search!r} is not allowed; allowed: a subset of {SEARCH_PARTS}")
        if isinstance(bits, (str, bytes)) or not bits or any(isinstance(b, bool) or b not in BITS for b in bits):
            raise ValueError(f"bits={bits!r} is not allowed; allowed: a non-empty subset of {BITS}")
        if isinstance(genes, (str, bytes)) or not set(genes) <= set(self.OPT_IN_GENES):
            raise ValueError(f"genes={genes!r} is not allowed; allowed: a subset of {tuple(self.OPT_IN_GENES)}")
        bits = tuple(sorted(set(int(b) for b in bits)))
        suggest = Suggest(trial_or_rng)
        suggest.opt_in = frozenset(genes)
        arch = self._architecture(self._sample_architecture(suggest) if "arch" in search else {})
        ratios = [
            suggest.real(f"prune_{layer.name}", 0.0, PRUNE_RATIO_MAX, PRUNE_RATIO_STEP)
            if "prune" in search and layer.prunable else 0.0
            for layer in arch.layers
        ]
        bits = [
            suggest.categorical(f"bits_{layer.name}", bits) if "bits" in search and layer.quantisable else 32
            for layer in arch.layers
        ]
        return self.candidate(**arch.genes, prune_ratios=ratios, bits=bits)

    def trial_params(self, candidate: Candidate, *, search: Sequence[str] = SEARCH_PARTS,
                     bits: Sequence[int] = SEARCH_BITS, genes: Sequence[str] = ()) -> dict[str, Any]:
        """The Optuna parameters with which :meth:`sample` (same ``search``, ``bits`` and ``genes``) draws
        ``candidate``: what ``study.enqueue_trial`` needs to start a search from a known candidate.

        Checked by drawing the candidate again from an ``optuna.trial.FixedTrial`` of them. Raises
        ``ValueError`` when no such sample draws it (a part outside ``search`` away from its default, a width
        outside ``bits``, a ratio off the grid) or the space does not say how its genes were drawn (a
        registered space without ``_architecture_params``, with ``"arch"`` in ``search``).
        """
        import optuna

        arch_genes, ratios, cbits = self._decode(candidate)
        params: dict[str, Any] = {}
        if "arch" in search:
            arch = self._architecture_params(arch_genes, frozenset(genes))
            if arch is None:
                raise ValueError(f"space {self.name!r} cannot give the trial parameters of its architecture genes; "
                                 "allowed: search without 'arch'")
            params.update(arch)
        for layer, ratio, b in zip(self.layers(candidate), ratios, cbits):
            if "prune" in search and layer.prunable:
                params[f"prune_{layer.name}"] = ratio
            if "bits" in search and layer.quantisable:
                params[f"bits_{layer.name}"] = b
        try:
            with warnings.catch_warnings():  # a value outside a distribution only warns; enqueued, it is redrawn
                warnings.simplefilter("error", UserWarning)
                again = self.sample(optuna.trial.FixedTrial(params), search=search, bits=bits, genes=genes)
        except (ValueError, KeyError, UserWarning) as exc:
            raise ValueError(f"candidate cannot be drawn by sample(search={tuple(search)}, bits={tuple(bits)}): "
                             f"{exc}") from None
        if _plain(again) != _plain(candidate):
            raise ValueError(f"candidate cannot be drawn by sample(search={tuple(search)}, bits={tuple(bits)}, "
                             f"genes={tuple(genes)}): it draws {again.to_json()} instead")
        return params

    def _architecture_params(self, genes: Mapping[str, Any], opt_in: frozenset[str]) -> dict[str, Any] | None:
        """The Optuna parameters :meth:`_sample_architecture` draws ``genes`` from (``opt_in``: the opt-in genes
        asked for); None where the space does not say (then :meth:`trial_params` needs ``"arch"`` unsearched)."""
        return None

    def _validation_key(self) -> tuple[str, str, str]:
        key = self.__dict__.get("_vkey")
        if key is None:
            options = json.dumps(self.options, sort_keys=True, default=repr)
            key = self.__dict__["_vkey"] = (type(self).__qualname__, self.name, options)
        return key

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

    # ----------------------------------------------------------------- decoding
    def layers(self, candidate: Candidate) -> list[Layer]:
        """The per-layer table of ``candidate``: name, whether prunable, whether it has weights."""
        genes, _, _ = self._decode(candidate)
        return list(self._architecture(genes).layers)

    def layer_names(self, candidate: Candidate) -> list[str]:
        """Names of the per-layer units that ``prune_ratios`` and ``bits`` index, in order."""
        return [layer.name for layer in self.layers(candidate)]

    def plan(self, candidate: Candidate) -> Node:
        """The resolved plan of ``candidate`` (channel counts, strides, bits of every layer)."""
        return self._plan(*self._decode(candidate))

    def kernels(self, candidate: Candidate) -> list[Kernel]:
        """The kernels the exported ONNX model of ``candidate`` executes, in graph order (no torch)."""
        out, kernels = self.plan(candidate).kernels(self.input_shape)
        if out != (self.num_classes,):
            raise RuntimeError(f"plan error: the model outputs {out}, not ({self.num_classes},)")
        return kernels

    def latency_evaluator(self, predictor: "LatencyPredictor") -> CompiledLatency:
        """A :class:`~spaces.CompiledLatency` of this space under ``predictor``: ``.predict_many(candidates)``
        gives the milliseconds of ``predictor.predict_many([self.kernels(c) for c in candidates], genes=...)``
        without listing kernels (for fresh candidates about 40x faster than listing them, once its memo has
        seen the space's common segments: ``experiments/results/predict_speed.json``). Kept for the most
        recent predictors, so repeated calls share one memo."""
        cache: list[CompiledLatency] = self.__dict__.setdefault("_latency_evaluators", [])
        for ev in cache:
            if ev.predictor is predictor:
                return ev
        ev = CompiledLatency(self, predictor)
        cache.insert(0, ev)
        del cache[_EVALUATORS_KEPT:]
        return ev

    def module_bits(self, candidate: Candidate) -> dict[str, int]:
        """Qualified ``Conv2d``/``Linear`` module names of ``build(candidate)`` mapped to their bits (what
        fake quantisation and the int8 export consume)."""
        return self.plan(candidate).module_bits("")

    def build(self, candidate: Candidate) -> "torch.nn.Module":
        """The ``torch.nn.Module`` of ``candidate``, in eval mode, pruned channels physically absent."""
        return self.plan(candidate).build(self.input_shape).eval()

    def stats(self, candidate: Candidate) -> SpaceStats:
        """Parameters, MACs and stored bytes at the chosen bits, from the candidate's kernels."""
        kernels = self.kernels(candidate)
        return SpaceStats(
            params=sum(k.params for k in kernels),
            macs=sum(k.macs for k in kernels),
            size_bytes=int(round(sum(k.weight_bytes for k in kernels))),
        )

    def compressed_size_bytes(self, candidate: Candidate, *, model: "torch.nn.Module | None" = None) -> int:
        """Bytes of ``candidate`` stored the Deep Compression way at its bits (:func:`spaces.compress.compressed_size_bytes`):
        per layer ``2**bits`` shared values (k-means) for bits <= 8, Huffman-coded; float16 at 16 bits.

        ``model`` is a trained model of the candidate (e.g. the proxy's); by default ``build(candidate)``,
        whose weights are meaningful for the ``prune`` space (inherited from the teacher) but random for the
        student spaces, so pass the trained model there. Needs torch; about 0.45 s a candidate for the built-in
        teacher on this machine (k-means and Huffman coding of 0.65 M weights).
        """
        net = self.build(candidate) if model is None else model
        return compressed_size_bytes(net, self.module_bits(candidate))

    def onnx(self, candidate: Candidate, *, model: "torch.nn.Module | None" = None,
             calibration: "Iterable[torch.Tensor] | None" = None, path: str | None = None,
             dynamic_batch: bool = False) -> "onnx.ModelProto":
        """The deployable ONNX model of ``candidate``: QDQ int8/int4 and float16 where its bits say so.

        ``model`` is a trained model of the candidate (e.g. from ``search.distill_train``, already
        fake-quantised, whose activation ranges are then used as they are); by default ``build(candidate)``.
        A float model with int bits is calibrated on ``calibration`` batches, or on random noise when none
        are given (right graph and speed, meaningless accuracy; silent for ``build(candidate)``, whose
        weights are untrained anyway, a logged warning for a given ``model``). All-32-bit candidates export
        plain float32 (see :func:`spaces.compress.export_onnx`). ``dynamic_batch``: a dynamic batch
        dimension, as a deployed model wants (fixed at 1 by default). Writes ``path`` when given.
        """
        bits = self.module_bits(candidate)
        net = _drawn_statistics(self.build(candidate)) if model is None else model
        if all(b == 32 for b in bits.values()) and not act_quantizers(net):
            return export_onnx(net, self.input_shape, path, dynamic_batch=dynamic_batch)
        if model is None and calibration is None:  # untrained weights: ranges from noise (for timing)
            import torch

            # one image: the graph and its speed do not depend on the ranges; with 4 batches of 8 a 224-px FBNet
            # candidate took 14.6 s to export, with one 0.9 s (``experiments/results/export_calibration.md``)
            gen = torch.Generator().manual_seed(0)
            calibration = [torch.randn((1, *self.input_shape), generator=gen)]
        return export_onnx_quantized(net, bits, self.input_shape, path, calibration=calibration,
                                     dynamic_batch=dynamic_batch)


def _drawn_statistics(net: "torch.nn.Module") -> "torch.nn.Module":
    """``net`` (untrained, exported for timing) with BatchNorm statistics and affine terms drawn from a seeded
    generator, as a trained model has them, so that the biases folded into its convolutions are distinct.

    With the initial statistics every folded bias is zero; ONNX Runtime then shares the identical bias
    constants of equal length, and a float16 layer reads its shared bias through a runtime ``Cast``, which keeps
    that convolution off the channel-blocked (NCHWc) path. Measured on 2026-12-04: float16 MobileNet candidates
    at 128 px ran 1.4-1.7x slower than the same graph with distinct biases (see ``experiments/latency_record.md``, *A float16
    layer and a shared bias*); a trained model never shows it, and the profile's calibration models must not either.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return net


class StudentSpace(SearchSpace):
    """A :class:`SearchSpace` with the options of the MobileNet / ShuffleNet students.

    Options: ``num_classes`` (100), ``input_size`` (32), ``in_channels`` (3), ``channel_multiple`` (8),
    ``stem_stride`` (1 or 2; ``None`` picks :func:`default_stem_stride` of the input size).
    """

    def __init__(self, *, num_classes: int = 100, input_size: int = 32, in_channels: int = 3,
                 channel_multiple: int = 8, stem_stride: int | None = None) -> None:
        super().__init__(num_classes=num_classes, input_size=input_size, in_channels=in_channels,
                         channel_multiple=channel_multiple)
        self.stem_stride = (
            default_stem_stride(input_size) if stem_stride is None else check_choice("stem_stride", stem_stride, (1, 2))
        )

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "stem_stride": self.stem_stride}


# --------------------------------------------------------------------------------------------- gene helpers
def _allowed(values: Sequence[Any]) -> str:
    return ", ".join(map(str, values))


def _check_list(gene: str, values: Any, n: int, default: Any) -> list[Any]:
    if values is None:
        return [default] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{gene}={values!r} is not allowed; allowed: a list of {n} values, one per layer")
    if len(values) != n:
        raise ValueError(f"{gene} has {len(values)} values; allowed: exactly {n}, one per layer")
    return list(values)


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


def _plain(candidate: Candidate) -> str:
    """A candidate's genes, prune ratios and bits as one comparable string (options and types aside)."""
    return json.dumps([dict(candidate.genes), [float(r) for r in candidate.prune_ratios],
                       [int(b) for b in candidate.bits]], sort_keys=True)


def stage_params(genes: Mapping[str, Any], depth_gene: str, depth_param: str, max_depths: Sequence[int],
                 per_block: Mapping[str, str]) -> dict[str, Any]:
    """The parameters :func:`sample_stages` draws ``genes`` from; ``per_block`` maps a gene name to its
    parameter prefix (a stage whose depth cannot vary draws no depth parameter)."""
    params: dict[str, Any] = {}
    for s, (d, top) in enumerate(zip(genes[depth_gene], max_depths)):
        if top > 1:
            params[f"{depth_param}_{s}"] = int(d)
        for gene, prefix in per_block.items():
            params.update({f"{prefix}_{s}_{j}": genes[gene][s][j] for j in range(int(d))})
    return params


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
    """``ValueError`` naming the first gene that is not one of ``known``."""
    unknown = sorted(set(genes) - set(known))
    if unknown:
        raise ValueError(
            f"gene {unknown[0]}={genes[unknown[0]]!r} is not known; allowed: {_allowed(sorted({*known, 'prune_ratios', 'bits'}))}"
        )
