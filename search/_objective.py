"""What one trial does, independent of Optuna (so Ray Tune workers run exactly the same thing).

A candidate's latency is predicted first; a candidate predicted over the budget is returned with that
latency and its size, and is never trained (``trained=False``, accuracy 0): the proxy's time goes to
feasible candidates only. A feasible candidate is built (with random weights, or with the weights it inherits
from the space's supernet), and the proxy evaluator (a short distillation training at the candidate's bit
widths, or BatchNorm recalibration of the inherited weights) gives its validation accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from latency_models import UnknownOperatorWarning

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import torch

    from latency_models import LatencyPredictor
    from spaces import Candidate, SearchSpace

__all__ = [
    "OBJECTIVES",
    "SIZES",
    "BudgetConstraint",
    "SearchContext",
    "TrialResult",
    "evaluate_candidate",
    "predict_latency",
    "rewarded_bits",
]

logger = logging.getLogger(__name__)

#: The study's objectives, in order, with their directions: the one definition the study, the Ray
#: sweep and the Pareto front read.
OBJECTIVES = (("accuracy", "maximize"), ("latency_ms", "minimize"), ("size_bytes", "minimize"))

#: What the size objective counts: ``dense`` (the weights at their bit widths) or ``compressed`` (stored the
#: Deep Compression way, :func:`spaces.compress.compressed_size_bytes`, from weights that exist before any
#: training: the ``prune`` space's, inherited from the teacher).
SIZES = ("dense", "compressed")


def predict_latency(predictor: "LatencyPredictor", space: "SearchSpace",
                    candidates: Sequence["Candidate"]) -> "np.ndarray":
    """Predicted milliseconds of ``candidates`` of ``space``: their kernels (and genes) through the predictor.

    Through the space's compiled evaluator (``space.latency_evaluator``, kept per predictor): the same
    numbers as ``predictor.predict_many([space.kernels(c) ...], genes=...)`` to float rounding, without
    listing every candidate's kernels (a predictor or space it cannot compile takes that slow path).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownOperatorWarning)
        return space.latency_evaluator(predictor).predict_many(candidates, genes=True)


def rewarded_bits(predictor: "LatencyPredictor", space: "SearchSpace", *, n: int = 8, seed: int = 0,
                  gain: float = 0.98) -> tuple[int, ...]:
    """32 and the bit widths the device runs faster than float32, as its latency profile says.

    For ``n`` random architectures of ``space``, every layer that has weights is put at each width of
    ``spaces.SEARCH_BITS`` in turn; a width is rewarded when the median of its predicted latency over the
    float32 one is below ``gain`` (the predictor counts the quantise/dequantise/cast steps between layers).
    On x86 ONNX Runtime this is int8; int4 and float16 layers there are dequantised or cast back to float32:
    size, not time. Binary and ternary layers (1, 2 bits) run as int8 and are searched only when asked for.
    """
    import numpy as np

    from spaces import SEARCH_BITS

    rng = np.random.default_rng(seed)
    archs = [space.sample(rng, search=("arch",)) for _ in range(n)]
    ratios: dict[int, list[float]] = {b: [] for b in SEARCH_BITS if b != 32}
    for cand in archs:
        layers = space.layers(cand)
        variants = [space.candidate(**dict(cand.genes), bits=[b if layer.quantisable else 32 for layer in layers])
                    for b in (32, *ratios)]
        lat = predict_latency(predictor, space, variants)
        for b, ms in zip(ratios, lat[1:]):
            ratios[b].append(float(ms) / float(lat[0]))
    return tuple(sorted({32} | {b for b, r in ratios.items() if r and float(np.median(r)) < gain}))


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """The outcome of one candidate.

    Attributes:
        accuracy: validation accuracy of the proxy, a fraction in [0, 1]; 0 when not trained.
        latency_ms: predicted latency on the target device, milliseconds.
        size_bytes: bytes of the stored weights at the candidate's bit widths (dense storage).
        feasible: ``latency_ms <= budget_ms``.
        trained: whether the proxy trained it (only feasible candidates are trained).
        seconds: wall time of this evaluation.
        compressed_size_bytes: the weights stored the Deep Compression way at the candidate's bits (shared
            values, Huffman-coded), bytes: of the inherited weights with ``size="compressed"``, else of the
            proxy's trained model; None when neither exists (an over-budget student).
        size: which size is the objective, one of :data:`SIZES`.
    """

    accuracy: float
    latency_ms: float
    size_bytes: int
    feasible: bool
    trained: bool
    seconds: float
    compressed_size_bytes: int | None = None
    size: str = "dense"

    @property
    def values(self) -> tuple[float, float, float]:
        """The objective values, in :data:`OBJECTIVES` order (the size is the one ``size`` names)."""
        size = self.compressed_size_bytes if self.size == "compressed" else self.size_bytes
        return (self.accuracy, self.latency_ms, float(size if size is not None else self.size_bytes))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SearchContext:
    """Everything a trial needs, passed in by whoever drives the search.

    Attributes:
        space: the search space the candidates come from.
        predictor: the device's ``latency_models.LatencyPredictor``.
        budget_ms: the latency budget, milliseconds.
        evaluator: ``evaluator(model, module_bits) -> accuracy``, the distillation proxy (teacher logits
            computed once, inside it). When it keeps the model it trained as ``last_model`` (as
            :class:`search.ProxyEvaluator` does), the trial records that model's Deep Compression size.
        size: what the size objective counts, one of :data:`SIZES`; ``compressed`` needs weights before
            training, i.e. a space whose ``build`` inherits trained weights (``prune``).
        build: ``build(candidate) -> model``, the model the evaluator scores: ``space.build`` (random
            weights; the ``prune`` space's inherit the teacher's) when None, or the weights a candidate
            inherits from a supernet (``search.SupernetProxy.build``).
    """

    space: "SearchSpace"
    predictor: "LatencyPredictor"
    budget_ms: float
    evaluator: Callable[["torch.nn.Module", Mapping[str, int]], float]
    size: str = "dense"
    build: Callable[["Candidate"], "torch.nn.Module"] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.budget_ms, (int, float)) and math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ValueError(f"budget_ms={self.budget_ms!r} must be a positive number of milliseconds")
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not allowed; allowed: {', '.join(SIZES)}")


def evaluate_candidate(candidate: "Candidate", *, context: SearchContext) -> TrialResult:
    """Predict the latency of ``candidate``; train and score it with the proxy only if it meets the budget."""
    start = time.perf_counter()
    space = context.space
    latency_ms = float(predict_latency(context.predictor, space, [candidate])[0])
    size_bytes = int(space.stats(candidate).size_bytes)
    # the objective's compressed size comes from the weights the candidate has before training
    compressed = int(space.compressed_size_bytes(candidate)) if context.size == "compressed" else None
    if latency_ms > context.budget_ms:
        logger.debug("candidate over budget (%.3f ms > %.3f ms): not trained", latency_ms, context.budget_ms)
        return TrialResult(0.0, latency_ms, size_bytes, False, False, time.perf_counter() - start, compressed,
                           context.size)
    model = space.build(candidate) if context.build is None else context.build(candidate)
    acc = float(context.evaluator(model, space.module_bits(candidate)))
    trained = getattr(context.evaluator, "last_model", None)
    if compressed is None and trained is not None:
        compressed = int(space.compressed_size_bytes(candidate, model=trained))
    return TrialResult(acc, latency_ms, size_bytes, True, True, time.perf_counter() - start, compressed, context.size)


@dataclasses.dataclass(frozen=True)
class BudgetConstraint:
    """``constraints_func`` of the samplers: predicted latency minus the budget (feasible when <= 0).

    Reads the trial's ``latency_ms`` user attribute, which the objective (or the Ray searcher) sets
    before the trial is told.
    """

    budget_ms: float

    def __call__(self, trial: "optuna.trial.FrozenTrial") -> list[float]:
        latency = trial.user_attrs.get("latency_ms")
        if latency is None:  # not a trial of this search: count it as far over budget
            return [1e12]
        return [float(latency) - self.budget_ms]
