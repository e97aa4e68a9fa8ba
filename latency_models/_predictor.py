"""`LatencyPredictor`: milliseconds of a candidate, an ONNX model or a list of kernels on one device.

How it predicts. A model's latency is the sum of one *contribution* per kernel plus a constant:

    latency_ms = b + sum_k [ phi(k) . (theta_0 + theta_family(k)) + offset(k) + lut[key(k)] ]

- With kernel rows (a profiled device): ``offset(k)`` is the kernel's latency timed alone, predicted by
  :class:`~latency_models._kernel_model.KernelModel` (exact when measured, else a per-family physical fit
  corrected by nearest neighbours), and ``phi(k) = (offset(k), 1)``: the model rows learn, per family, how
  much of a kernel's stand-alone time survives in a whole graph (fusion, caches) and the per-graph
  overhead counted once per kernel in the micro-benchmarks.
- From model rows alone (end-to-end latencies only, e.g. a published benchmark): ``offset = 0`` and
  ``phi(k) = (MMACs, MB of activations, MB of weights, 1)``, a physical model with a few shared parameters
  and penalised per-family deviations; ``lut`` then learns each distinct kernel's own relative deviation.

On a device whose ONNX Runtime runs float convolutions in its channel-blocked layout (``device["nchwc"]``, see
:mod:`latency_models._layout`), ``phi(k)`` also holds the megabytes ``k``'s stand-alone graph reorders (paid
alone, not inside a model), and the changes of layout between consecutive kernels (blocked 32, plain NCHW 33)
are priced like the bit-width changes: per change and per million elements crossing, with one shared cost per
element in the physical stage.

A one-kernel graph's session run also passes its input and output through ONNX Runtime, which a layer inside a
model does not: ``phi(k)`` holds the megabytes ``k``'s stand-alone graph takes in and gives out, priced by one shared
cost per megabyte in the physical stage (``fit(io_term=True)``, the default; measured by ``experiments/io_term.py``).

Models of another make. When the table timed at least eight whole models outside the spaces (``profile_models``),
a four-parameter physical model fitted on those alone is blended in, weighted by a logistic gate that tells such
models from the spaces' candidates, if cross-validation on the table's rows says it helps
(:mod:`latency_models._outside`).

Everything is fitted by ridge regression in relative error; the strengths of the two penalties (per-family
deviations, per-kernel lookup table) are chosen by exact leave-one-out cross-validation on the given rows,
so the physical prior dominates with few rows and the lookup table takes over as rows accumulate. No family's
multiplier is negative: a family the fit would make negative is held at 0 and the rest fitted again.

A kernel's contribution is cached by kernel, so ``predict_many`` costs one dictionary look-up per kernel.

The machine's state. Rows timed under the protocol carry the reference workload's latency of their
measurement. Before fitting, every row is put on the table's reference scale with an exponent (how strongly
whole models follow the reference), chosen by the same leave-one-out error; the predictor then predicts at the
table's state, and :meth:`LatencyPredictor.on_scale` brings a later measurement onto it.

Few-sample transfer (``fit(table, prior=[...])``). Predictors of other devices (fitted on their own tables)
can carry a new device that has only a few end-to-end measurements: the new device's latency is fitted as
a non-negative blend of each prior predictor's prediction and this table's own predictor (its
cross-validated predictions, so that it earns its weight on rows it did not see), plus an intercept, in
relative error. Related devices (two server CPUs, two GPUs) rank 20 models of a new one better than those 20
models alone; an unrelated prior gets a weight near zero (HELP, Lee et al., NeurIPS 2021, meta-learns the
same idea).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from latency_models._features import family, kernel_key, physical
from latency_models._kernel import Kernel
from latency_models._kernel_model import CHANNEL_ALIGNMENT, KernelModel
from latency_models._layout import BLOCKED, PLAIN, layout_state, standalone_reorder_mbytes
from latency_models._microgen import standalone_io_mbytes
from latency_models._outside import OutsideModel, fit_outside, kernel_features
from latency_models._table import LatencyTable, read_json

__all__ = ["CalibrationRangeWarning", "LatencyPredictor", "UnknownOperatorWarning"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Predictions never fall below this fraction of the fastest whole model in the table's model rows.
MIN_MODEL_FRACTION = 0.5
_LAMBDA_FAMILY = tuple(10.0 ** e for e in range(-3, 4))
_LAMBDA_LUT = (1e-8, 1e-6) + tuple(10.0 ** e for e in range(-4, 3)) + (1e6,)
_TINY = 1e-6
#: Folds of the cross-validated predictions of a table's own predictor, when it is blended with a prior.
TRANSFER_FOLDS = 5
#: Fewest model rows a transfer from a prior is fitted on (the blend has one weight per prior predictor).
MIN_TRANSFER_ROWS = 5
#: Exponents of the machine-state correction tried by ``fit(table, reference_exponent="auto")`` (coarse grid,
#: then the best one +- :data:`_EXPONENT_STEP`); 0 is "as measured".
REFERENCE_EXPONENTS = (0.0, 1.0, 2.0, 3.0, 4.0)
_EXPONENT_STEP = 0.5
#: ``fit(weight_term="auto")`` adds the cost per megabyte of weights when it lowers the leave-one-out RMSPE of the
#: model rows by at least this fraction of it. On sixteen committed tables of two CPUs (``experiments/
#: weight_term_auto.py``) the term lowered it by 6.6-33 % where it helped the held-out models and by 0.1-4.2 % where it
#: hurt them or changed nothing (any margin from 4.3 to 6.5 % separates them; 5 % chosen on those tables).
WEIGHT_TERM_MARGIN = 0.05
#: Fewest distinct reference timings among the model rows for the exponent to be chosen from the data.
MIN_STATE_REFERENCES = 8
#: A model given as ONNX is flagged (:class:`CalibrationRangeWarning`) when fewer than this many distinct whole
#: models the predictor was fitted on have as many megabytes of weights.
MIN_COVERING_ROWS = 5
#: Fewest distinct whole models whose kernels include a family for the predictor to keep that family's multiplier and
#: per-kernel cost (stage 2, groups 1 and 4); a rarer family's terms are fitted with the rest, then dropped, so other
#: models of that family get its kernels' stand-alone estimates (a multiplier of 1). Fitted from one or two models,
#: the terms were those models' residual: on ``predictor_local_32_memory`` the 7x7 stem that ResNet-34 and
#: ResNeXt-50 share got a multiplier of 50, and ResNet-18, whose stem is the same kernel, was predicted at 3.3 times
#: its measured time. (Leaving the terms out of the fit instead moved those models' residual into the shared terms:
#: the spaces' held-out models were predicted a little worse on the committed tables.)
MIN_FAMILY_MODELS = 3
#: Most input channels of a dense convolution that reads an image (gray, RGB, RGBA): a stem.
STEM_CHANNELS = 4


def _family(k: Kernel, stems: bool) -> str:
    """The kernel's family for the per-family terms: :func:`~latency_models._features.family`, and with ``stems`` a
    dense convolution that reads at most :data:`STEM_CHANNELS` channels on a map larger than 1x1 (a stem reading the
    image) in a family of its own, ``conv_stem_k3/b32``: a different code path (ONNX Runtime's blocked layout reads
    it unblocked) and a different regime (few channels, large maps) from the deep dense convolutions of a ResNet."""
    f = family(k)
    if stems and k.op == "conv" and k.groups == 1 and k.input_shape[0] <= STEM_CHANNELS \
            and math.prod(k.input_shape[1:]) > 1:
        return "conv_stem" + f[len("conv_dense"):]
    return f


class UnknownOperatorWarning(UserWarning):
    """An ONNX model contains operators the predictor has no kernel for (they are predicted as 0 ms)."""


class CalibrationRangeWarning(UserWarning):
    """A model given as ONNX has more megabytes of weights than (nearly) every whole model the predictor was
    fitted on: its prediction extrapolates. On a CPU, a model whose weights outgrow the cache reads them from
    memory on every run, which kernels timed alone never do (``experiments/weight_cache.py``)."""


def _ridge_loo(xt: np.ndarray, yt: np.ndarray, pen: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge solution of xt @ c ~ yt with positive diagonal penalty ``pen``, and its exact leave-one-out MSE.

    Solved in the primal (p x p) or the dual (n x n) form, whichever is smaller.
    """
    coef, loo = _ridge_loo_residuals(xt, yt, pen)
    return coef, float(np.mean(loo**2))


def _ridge_loo_residuals(xt: np.ndarray, yt: np.ndarray, pen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_ridge_loo`'s solution and its exact leave-one-out residual of every row."""
    n, p = xt.shape
    if p <= n:
        a = xt.T @ xt + np.diag(pen)
        try:
            inv = np.linalg.inv(a)
        except np.linalg.LinAlgError:
            inv = np.linalg.pinv(a)
        coef = inv @ (xt.T @ yt)
        h = ((xt @ inv) * xt).sum(1)
    else:
        xd = xt / pen  # X D^-1
        k = xd @ xt.T
        try:
            m = np.linalg.inv(np.eye(n) + k)
        except np.linalg.LinAlgError:
            m = np.linalg.pinv(np.eye(n) + k)
        coef = xd.T @ (m @ yt)
        h = np.diag(k @ m)
    resid = yt - xt @ coef
    return coef, resid / np.maximum(1.0 - h, 1e-9)


def _kernel_counts(rows: Sequence[Any]) -> tuple[list[Kernel], np.ndarray]:
    """The distinct kernels of model ``rows`` and how many times each row runs each (rows x kernels)."""
    uniq: dict[Kernel, int] = {}
    for r in rows:
        for k in r.kernels:
            uniq.setdefault(k, len(uniq))
    counts = np.zeros((len(rows), len(uniq)))
    for i, r in enumerate(rows):
        for k in r.kernels:
            counts[i, uniq[k]] += 1
    return list(uniq), counts


def _phi(kernel_model: KernelModel | None, kernels: Sequence[Kernel], nchwc: tuple[int, int] | None,
         weight_term: bool = False, io_term: bool = False) -> np.ndarray:
    """The physical features of ``kernels``: (stand-alone latency, 1) with a kernel model, the megabytes its
    stand-alone graph reorders when the device has a blocked layout (``nchwc``), the megabytes its stand-alone graph
    takes in and gives out when ``io_term`` and, last, its megabytes of stored weights when ``weight_term``; else
    (MMACs, MB of activations, MB of weights, 1)."""
    if kernel_model is not None:
        cols = [kernel_model.predict(list(kernels)), np.ones(len(kernels))]
        if nchwc:
            cols.append(np.array([standalone_reorder_mbytes(k, nchwc) for k in kernels]))
        if io_term:
            cols.append(np.array([standalone_io_mbytes(k) for k in kernels]))
        if weight_term:
            cols.append(physical(list(kernels))[:, 2])
        return np.stack(cols, axis=1)
    return physical(list(kernels))


def _stage1(features: np.ndarray, y: np.ndarray, mode: str) -> tuple[float, float, np.ndarray]:
    """The global physical model ``y ~ c0 + features @ c`` in relative error, its penalty chosen by exact
    leave-one-out (non-negative ``c`` in model mode): (leave-one-out mean squared relative error, penalty,
    coefficients with the intercept first)."""
    n = len(y)
    x1 = np.concatenate([np.ones((n, 1)), features], axis=1) / y[:, None]
    scale1 = np.sqrt((x1**2).mean(0))
    scale1 = np.where(scale1 > 1e-12, scale1, 1.0)
    ones = np.ones(n)
    best1: tuple[float, float, np.ndarray] = (np.inf, _TINY, np.zeros(x1.shape[1]))
    for lam in (_TINY,) + _LAMBDA_FAMILY[:4]:
        active = np.ones(x1.shape[1], dtype=bool)
        for _ in range(x1.shape[1]):  # non-negative physical coefficients (intercept free) in model mode
            pen = np.full(int(active.sum()), lam * n / 20.0)
            pen[0] = _TINY
            coef, err = _ridge_loo(x1[:, active] / scale1[active], ones, pen)
            full = np.zeros(x1.shape[1])
            full[active] = coef / scale1[active]
            neg = (full[1:] < 0) & (mode == "models")
            if not neg.any():
                break
            active[1:] &= ~neg
        if err < best1[0]:
            best1 = (err, lam, full)
    return best1


def _stage2(xb: np.ndarray, yt: np.ndarray, groups: np.ndarray, held: np.ndarray,
            start: dict[int, float] | None = None) -> tuple[float, dict[int, float], np.ndarray]:
    """The penalised deviations ``yt ~ xb @ coef``, one penalty per group of columns chosen by exact leave-one-out
    (each strength from :data:`_LAMBDA_LUT`; two passes over the groups, or one from the penalties ``start``), with
    the ``held`` columns fixed at -1 (a family multiplier of 0): (leave-one-out mean squared relative error, the
    penalties, coefficients of every column)."""
    n = len(yt)
    x, y, grp_of = xb[:, ~held], yt + xb[:, held].sum(1), groups[~held]
    lams = {1: 1e6, 2: 1e6, 3: 1e6, 4: 1e6, 5: 1e6, 6: 1e6, **(start or {})}
    best_err = np.inf
    coef = np.zeros(x.shape[1])
    for _pass in range(1 if start else 2):
        for grp in (1, 6, 4, 5, 2, 3):
            if not (grp_of == grp).any():
                continue
            for lam in _LAMBDA_LUT:
                trial = {**lams, grp: lam}
                pen = np.array([_TINY if g == 0 else trial[g] for g in grp_of]) * n / 20.0
                c, err = _ridge_loo(x, y, pen)
                if err < best_err - 1e-15:
                    best_err, lams, coef = err, trial, c
    if not np.isfinite(best_err):
        pen = np.array([_TINY if g == 0 else 1e6 for g in grp_of]) * n / 20.0
        coef, best_err = _ridge_loo(x, y, pen)
    full = np.full(xb.shape[1], -1.0)
    full[~held] = coef
    return float(best_err), lams, full


#: The transitions between ONNX Runtime's blocked layout and plain NCHW (float kernels).
_TO_PLAIN, _TO_BLOCKED = f"{BLOCKED}>{PLAIN}", f"{PLAIN}>{BLOCKED}"


def _gene_features(genes: Any) -> list[str]:
    """Categorical gene values of a candidate as ``name[i]=value`` strings (float genes are left out)."""
    out: list[str] = []
    if not isinstance(genes, Mapping):
        return out
    for name, value in genes.items():
        if isinstance(value, (list, tuple)):
            out.extend(f"{name}[{i}]={v}" for i, v in enumerate(value) if isinstance(v, (str, int, bool)))
        elif isinstance(value, (str, int, bool)):
            out.append(f"{name}={value}")
    return out


def _transitions(kernels: Sequence[Kernel], nchwc: tuple[int, int] | None, *,
                 int8_pool: bool = True, float16_layout: bool = False) -> dict[str, float]:
    """Bit-width and layout changes between consecutive kernels that have a state, in graph order.

    A kernel's state (:func:`~latency_models._layout.layout_state`) is its bit width for weight layers (conv /
    linear); on a device with a blocked layout (``nchwc``) float kernels have the state ``32`` (blocked) or
    ``33`` (plain NCHW) instead, and the other kernels too, except the layout-transparent ones (add, act); an
    8-bit max pool has the state ``9`` (``int8_pool``: which of ONNX Runtime's two uint8 pools runs depends on
    what feeds it, see :data:`~latency_models._layout.INT8_POOL`). ``"a>b"`` counts the changes from state a to
    state b, ``"a>b:mel"`` the millions of activation elements crossing them: the quantise / dequantise / cast
    nodes a mixed-precision graph adds, the layout reorders ONNX Runtime inserts, and which pool runs.
    """
    out: dict[str, float] = {}
    prev = 32  # the model input is float32 (a first convolution reads it in NCHW directly)
    for k in kernels:
        state = layout_state(k, nchwc, int8_pool=int8_pool, float16_layout=float16_layout)
        if not state:
            continue
        if state != prev:
            name = f"{prev}>{state}"
            out[name] = out.get(name, 0.0) + 1.0
            out[name + ":mel"] = out.get(name + ":mel", 0.0) + math.prod(k.input_shape) / 1e6
        prev = state
    if prev != 32:
        out[f"{prev}>32"] = out.get(f"{prev}>32", 0.0) + 1.0
    return out


def _nchwc(device: Mapping[str, Any]) -> tuple[int, int] | None:
    """The device's blocked layout (block, alignment) as its table recorded it, or None."""
    v = device.get("nchwc")
    return (int(v[0]), int(v[1])) if v else None


def _kernel_list(model: Any, where: str) -> list[Kernel]:
    if isinstance(model, (list, tuple)) and all(isinstance(k, Kernel) for k in model):
        return list(model)
    raise ValueError(
        f"cannot predict {type(model).__name__} ({where}); allowed: a list of latency_models.Kernel (e.g. "
        "space.kernels(candidate)), an ONNX file path or an onnx.ModelProto"
    )


def _measured_models(rows: Sequence[Any]) -> dict[tuple[Kernel, ...], float]:
    """The median latency of each distinct whole model among ``rows`` that is not a space's candidate (timed
    into the table by ``profile_models``: a teacher, other models)."""
    by: dict[tuple[Kernel, ...], list[float]] = {}
    for r in rows:
        if not r.candidate:
            by.setdefault(tuple(r.kernels), []).append(float(r.latency_ms))
    return {ks: float(np.median(v)) for ks, v in by.items()}


def _heaviest(rows: Sequence[Any], weight_mb: np.ndarray) -> list[float]:
    """The megabytes of weights of the :data:`MIN_COVERING_ROWS` heaviest distinct models among ``rows``."""
    by_model = {tuple(r.kernels): float(w) for r, w in zip(rows, weight_mb)}
    return sorted(by_model.values())[-MIN_COVERING_ROWS:]


def _nnls(a: np.ndarray, b: np.ndarray, *, max_iter: int = 200) -> np.ndarray:
    """Non-negative least squares, min ||a x - b|| with x >= 0 (Lawson and Hanson's active-set method)."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        w = a.T @ (b - a @ x)
        if passive.all() or (w[~passive] <= 1e-12 * max(1.0, float(np.abs(w).max()))).all():
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        for _inner in range(n + 1):  # each pass drops at least one variable; the cap guards rounding
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = float(np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300)))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
        else:
            break
    return x


class LatencyPredictor:
    """Predicts end-to-end latency (milliseconds) on the device its table was measured on.

    Build it with :meth:`fit` (or :meth:`load`); the constructor takes the fitted parameters.
    """

    def __init__(self, *, device: Mapping[str, Any], protocol: Mapping[str, Any], mode: str,
                 intercept_ms: float, theta0: Sequence[float], family_mult: Mapping[str, float] | None = None,
                 lut_ms: Mapping[str, float] | None = None, gene_ms: Mapping[str, float] | None = None,
                 gene_mean_ms: float = 0.0, t_floor_ms: float = 0.0, family_count_ms: Mapping[str, float] | None = None,
                 transition_ms: Mapping[str, float] | None = None, kernel_model: KernelModel | None = None,
                 min_model_ms: float = 0.0, fit_info: Mapping[str, Any] | None = None,
                 prior: Sequence["LatencyPredictor"] = (), prior_weights: Sequence[float] = (),
                 own_weight: float = 1.0, blend_intercept_ms: float = 0.0, reference_ms: float | None = None,
                 reference_exponent: float = 0.0,
                 measured_models: Mapping[tuple[Kernel, ...], float] | None = None,
                 heaviest_weight_mb: Sequence[float] | None = None, outside: OutsideModel | None = None,
                 int8_pool_state: bool = True, weight_term: bool = False, io_term: bool = False,
                 stem_families: bool = False, float16_layout: bool = False) -> None:
        if mode not in ("kernels", "models"):
            raise ValueError(f"mode={mode!r} must be 'kernels' or 'models'")
        if mode == "kernels" and kernel_model is None:
            raise ValueError("mode='kernels' needs a kernel_model")
        self.device = dict(device)
        self._nchwc = _nchwc(self.device)
        self.protocol = dict(protocol)
        self.mode = mode
        self.intercept_ms = float(intercept_ms)
        self.theta0 = np.asarray(theta0, dtype=np.float64)
        self.family_mult = {f: float(v) for f, v in (family_mult or {}).items()}
        self.lut_ms = {k: float(v) for k, v in (lut_ms or {}).items()}
        self.gene_ms = {k: float(v) for k, v in (gene_ms or {}).items()}
        self.gene_mean_ms = float(gene_mean_ms)
        self.t_floor_ms = float(t_floor_ms)
        self.family_count_ms = {k: float(v) for k, v in (family_count_ms or {}).items()}
        self.transition_ms = {k: float(v) for k, v in (transition_ms or {}).items()}
        self.kernel_model = kernel_model
        self.min_model_ms = float(min_model_ms)
        self.fit_info = dict(fit_info or {})
        if len(prior) != len(prior_weights):
            raise ValueError(f"{len(prior_weights)} prior_weights for {len(prior)} prior predictors; allowed: one each")
        #: other devices' predictors this one is blended with (see :meth:`fit`), their weights, the weight of
        #: this table's own prediction and the blend's intercept
        self.prior: list[LatencyPredictor] = list(prior)
        self.prior_weights = [float(w) for w in prior_weights]
        self.own_weight = float(own_weight)
        self.blend_intercept_ms = float(blend_intercept_ms)
        #: the machine's state the predictions are for: the reference workload's latency (ms) of the table
        #: the predictor was fitted on (None: its rows had none), and how strongly latencies follow it
        #: (0: the rows were taken as measured); see :meth:`on_scale`
        self.reference_ms = None if reference_ms is None else float(reference_ms)
        self.reference_exponent = float(reference_exponent)
        #: whole models outside the spaces that the table timed (``profile_models``: a teacher, other
        #: models), by their kernel list: the same model given as ONNX is predicted at its measured latency
        #: (the median of its rows, on the predictor's scale)
        self.measured_models = {tuple(ks): float(v) for ks, v in (measured_models or {}).items()}
        self._measured_lengths = {len(ks) for ks in self.measured_models}
        #: the megabytes of weights of the :data:`MIN_COVERING_ROWS` heaviest whole models the predictor was
        #: fitted on, ascending (None: not recorded, a predictor saved before they were): an ONNX model heavier
        #: than the lightest of them is flagged with a :class:`CalibrationRangeWarning`
        self.heaviest_weight_mb = None if heaviest_weight_mb is None else sorted(float(w) for w in heaviest_weight_mb)
        if outside is not None and mode != "kernels":
            raise ValueError("an outside model needs mode='kernels' (a kernel_model from kernel rows)")
        #: the few-parameter model of whole models outside the spaces and its gate (see ``fit(outside_models=...)``),
        #: or None
        self.outside = outside
        #: whether an 8-bit max pool is a state of the transitions (:data:`~latency_models._layout.INT8_POOL`);
        #: False for predictors saved before it was, which read such pools as layout-transparent
        self.int8_pool_state = bool(int8_pool_state)
        #: whether a float16 layer takes a float32 layer's layout state on a device with a blocked layout
        #: (``fit(float16_layout=True)``, the default since 2026-12-08; False for predictors saved before
        #: 2026-12-07, night, and for those fitted with it off)
        self.float16_layout = bool(float16_layout)
        #: whether a kernel's stand-alone time is joined by a shared cost per megabyte of its stored weights
        #: (``fit(weight_term=True)``; kernels mode only)
        self.weight_term = bool(weight_term) and mode == "kernels"
        #: whether a kernel's stand-alone time is joined by a shared cost per megabyte its stand-alone graph takes in
        #: and gives out (``fit(io_term=True)``; kernels mode only; False for predictors saved before 2026-12-06)
        self.io_term = bool(io_term) and mode == "kernels"
        #: whether the stems (dense convolutions reading an image) have families of their own (``fit(stem_families=
        #: True)``; False for predictors saved before 2026-12-07)
        self.stem_families = bool(stem_families)
        self._cache: dict[Kernel, tuple[float, int, float]] = {}
        self._outside_cache: dict[Kernel, np.ndarray] = {}
        self._token = object()  # tags the records this predictor leaves on kernel instances

    # ----------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, table: LatencyTable, *, prior: Sequence["LatencyPredictor"] = (),
            reference_exponent: float | str = "auto", outside_models: bool = True,
            channel_alignment: int | None = CHANNEL_ALIGNMENT, int8_pool_state: bool = True,
            weight_term: bool | str = "auto", gene_terms: bool | None = None,
            block_padding: bool = True, depthwise_channels_once: bool = False, transition_penalty: bool = True,
            io_term: bool = True, nonnegative_families: bool = True,
            nested_families: bool = False, stem_families: bool = False,
            float16_layout: bool = True) -> "LatencyPredictor":
        """Fit on a table's kernel rows and model rows (either may be empty, not both).

        ``reference_exponent``: the machine-state correction. Rows timed under the protocol carry the
        reference workload's latency of their measurement; a row is put on the table's scale as
        ``latency_ms * (table.reference_ms / row.reference_ms) ** exponent`` before fitting, and the predictor
        then predicts at the table's state (:attr:`reference_ms`; :meth:`on_scale` brings a later
        measurement onto it). ``"auto"`` (default) chooses the exponent by the fit's leave-one-out error on the
        model rows among :data:`REFERENCE_EXPONENTS` (then the best +- 0.5) when the model rows carry at least
        :data:`MIN_STATE_REFERENCES` distinct references, else 0 (as measured). In the 32-px profiles of a
        shared 2-core VM the fit chose 3 and 3.5 (whole models moved that many times as much as the reference,
        in log), at 96 px 1: it depends on the models and on what else the machine runs. The predictor keeps the
        5th and 95th percentile of the model rows' references (``fit_info["model_reference_ms"]``), the states the
        exponent was tested in: :func:`~latency_models.state_gap` says when a later measurement lies outside them.

        ``outside_models``: when the table timed at least :data:`~latency_models._outside.MIN_OUTSIDE_MODELS`
        whole models outside the spaces (``profile_models``), also fit a few-parameter model on those alone and
        blend it in for the models that resemble them more than the spaces' candidates, if cross-validation on
        the table's rows says it helps (:mod:`latency_models._outside`; :attr:`outside` is None otherwise, and
        ``fit_info["outside_models"]`` says why). ``False``: never.

        ``channel_alignment``: the kernel model's (:class:`~latency_models.KernelModel`): convolutions whose
        channels are not a multiple of it take neighbours of their own kind (None: any neighbour, as before
        2026-12-04).

        ``block_padding``: the kernel model's (:class:`~latency_models.KernelModel`): on a device with a blocked
        layout, blocked float convolutions count their channels padded to whole blocks (False: as given, as before
        2026-12-06).

        ``depthwise_channels_once``: the kernel model's (:class:`~latency_models.KernelModel`): a depthwise
        convolution's channels count once in the distance between neighbours, not as its input, output and group
        counts, so that the map size weighs as much as for other kernels. Off by default: out of sample it predicts
        the kernels of held-out MobileNet models better (``experiments/untimed_kernels.py``), but on the committed
        tables (``experiments/depthwise_channels.py``) the whole held-out models did not gain (the random widths 65.0 /
        87.8 -> 64.8 / 87.6 % within ±5 / ±10 %, the exports 61.7 -> 60.0 % within ±10 %); see
        ``experiments/latency_record.md``, *The kernels a profile never timed alone*.

        ``transition_penalty``: the costs of the bit-width and layout transitions (quantise / dequantise / cast
        nodes, reorders) get a penalty of their own, chosen by leave-one-out like the others (False: they share the
        per-kernel costs' penalty, as before 2026-12-06). The two are different things: a per-kernel cost per
        family corrects the stand-alone timings of the family's kernels, a transition is a node the model adds
        between them. Measured on the sixteen committed tables (``experiments/transition_penalty.py``): see
        ``experiments/latency_record.md``, *The transitions' own penalty*.

        ``io_term``: with kernel rows, the physical stage also prices the megabytes each kernel's stand-alone graph
        takes in and gives out (one shared cost per MB, fitted on the model rows, negative where it is what a
        layer inside a whole model does not pay: :func:`~latency_models._microgen.standalone_io_mbytes`). Without
        it a one-kernel graph's input and output pass through the per-family multipliers as if the layer paid
        them in a model. False: as before 2026-12-06 (evening). Measured on the sixteen committed tables
        (``experiments/io_term.py``): see ``experiments/latency_record.md``.

        ``int8_pool_state``: an 8-bit max pool is a state of the bit-width and layout transitions, so that what
        feeds it prices which of ONNX Runtime's two uint8 pools runs (:data:`~latency_models._layout.INT8_POOL`);
        False: it is layout-transparent, as before 2026-12-04 (evening).

        ``weight_term``: with kernel rows, the physical stage also prices each kernel's megabytes of stored
        weights (one shared cost per MB, fitted on the model rows): a kernel timed alone finds its weights in
        the cache, inside a whole model they are read again on every run. It helps some tables and hurts others
        (``experiments/weight_term.py``, ``weight_term_auto.py``), so ``"auto"`` (default) fits both ways, each
        at its best machine-state exponent, and adds the term when it lowers the leave-one-out RMSPE on the model
        rows by at least :data:`WEIGHT_TERM_MARGIN` of it (``fit_info["weight_term"]`` says both errors); True or
        False: that way only.

        ``gene_terms``: a cost per categorical gene value of the candidates (``candidate["genes"]``, per-layer
        choices), learned from the model rows. None (default): only from model rows alone (a published
        benchmark, where the genes are all there is to tell models apart); with kernel rows the kernels already
        price each layer's choice, and a model given as kernels or ONNX has no genes, so it would be predicted
        with their training mean (over every space of the table). True: always (as before 2026-12-05); False:
        never. Measured (``experiments/gene_terms.py``): on a 32-px table of a second CPU the terms' mean was
        -0.061 ms, added to every model of 0.1-1.7 ms predicted from its kernels.

        ``nonnegative_families``: a family whose multiplier the fit makes negative (its kernels taking less than no
        time in a model) is held at a multiplier of 0 and the rest fitted again, until none is negative
        (``fit_info["families_at_zero"]`` lists those kept, not rarer than :data:`MIN_FAMILY_MODELS`). Free, the cheap
        operators' families came out negative on the committed tables (``add/b32`` -1.6, ``split/b32`` -4.3 on
        ``predictor_local_32_memory``), and two families that always run together traded against each other
        (MobileNetV3's hardswish convolutions at -1.1 beside a squeeze-and-excitation ``scale/b32`` at 5.5, which then
        priced EfficientNet-B0's scale layers). False: free, as before 2026-12-07. Measured on the sixteen committed
        tables (``experiments/nonnegative_families.py``): see ``experiments/latency_record.md``, *Family multipliers
        held at zero*.

        ``nested_families``: a family with a costly activation (``conv_dense_k1/b32+hardswish``) is fitted as its
        parent's multiplier (``conv_dense_k1/b32``, whose column then holds the child's kernels too) plus a deviation
        of its own, penalised on its own (chosen by leave-one-out like the others: ``fit_info["lambda_nested"]``); a
        child too rare for terms of its own takes its parent's multiplier. Off by default: measured on the committed
        tables (``experiments/nested_families.py``) the exports lost two points within ±10 % (the squeeze-and-excitation
        scale took what MobileNetV3's models leave unexplained); see ``experiments/latency_record.md``, *Families with
        an activation nested in their parent's*.

        ``stem_families``: a dense convolution that reads at most :data:`STEM_CHANNELS` channels on a map larger than
        1x1 (a stem reading the image) is a family of its own, ``conv_stem_k3/b32``, apart from the deep dense
        convolutions of a ResNet (another code path of ONNX Runtime's blocked layout, another regime); the predictor
        keeps the choice (:attr:`stem_families`). Off by default: measured on the committed tables
        (``experiments/stem_families.py``) ResNet-18 gained and the exports as a whole lost three points within ±10 %;
        see ``experiments/latency_record.md``, *Stems in families of their own*.

        ``float16_layout``: on a device with a blocked layout, a float16 layer's state in the bit-width and layout
        transitions is the layout a float32 layer of its shape takes (:func:`~latency_models.layout_state`), not 16:
        ONNX Runtime has no float16 convolution on x86 and runs such a layer as float32, its casts removed, so the
        changes the transitions price are the layout's reorders, not casts. On by default since 2026-12-08: on the
        thirty committed tables (``experiments/latency_status.py``) the held-out random widths within ±5 % rose from
        64.8 to 66.4 % (mean), ±10 % held, eight tables met target 1 instead of five, the 224-px ones lost a few
        models; see ``experiments/latency_record.md``, *Float16 layers in the float32 layout*. No effect without a
        blocked layout (``nchwc`` None, e.g. ARM).

        Per-family multipliers and per-kernel costs are kept only for families whose kernels run in at least
        :data:`MIN_FAMILY_MODELS` distinct models of the table (``fit_info["families_without_terms"]`` lists the
        others, whose kernels keep their stand-alone estimates in other models).

        ``prior``: predictors of other devices, for a device with few measurements (at least
        :data:`MIN_TRANSFER_ROWS` model rows): the result predicts a non-negative blend of their predictions
        and this table's own, weighted to fit the table's model rows (see the module's docstring). The prior
        predictors must accept the same models (kernel lists of the same space, and the candidates' genes
        when they were fitted on genes); they are saved inside this predictor.
        """
        options = {"outside_models": outside_models, "channel_alignment": channel_alignment,
                   "int8_pool_state": bool(int8_pool_state), "weight_term": weight_term,
                   "gene_terms": gene_terms, "block_padding": bool(block_padding),
                   "depthwise_channels_once": bool(depthwise_channels_once),
                   "transition_penalty": bool(transition_penalty), "io_term": bool(io_term),
                   "nonnegative_families": bool(nonnegative_families),
                   "nested_families": bool(nested_families), "stem_families": bool(stem_families),
                   "float16_layout": bool(float16_layout)}
        own, table = cls._fit_on_scale(table, reference_exponent, **options)
        options["weight_term"] = own.weight_term  # what "auto" chose, for the cross-validated fits below
        if table.extra.get("noise_floor"):  # the profile's own re-timing of its first models (latency_models._floor)
            own.fit_info["noise_floor"] = table.extra["noise_floor"]
        prior = list(prior)
        if not prior:
            return own
        for i, p in enumerate(prior):
            if not isinstance(p, LatencyPredictor):
                raise ValueError(f"prior[{i}] is a {type(p).__name__}; allowed: LatencyPredictor")
        rows = table.model_rows
        if len(rows) < MIN_TRANSFER_ROWS:
            raise ValueError(f"a transfer from prior predictors needs at least {MIN_TRANSFER_ROWS} model rows (whole "
                             f"models timed on the device); the table has {len(rows)}")
        n = len(rows)
        y = np.array([r.latency_ms for r in rows])
        lists = [list(r.kernels) for r in rows]
        genes = [(r.candidate or {}).get("genes") for r in rows]
        # the table's own predictor, cross-validated: each row predicted by a fit that did not see it
        own_cv = np.empty(n)
        perm = np.random.default_rng(0).permutation(n)
        for fold in np.array_split(perm, min(TRANSFER_FOLDS, n)):
            held = set(fold.tolist())
            keep = [rows[i] for i in perm if i not in held]
            sub = LatencyTable(device=table.device, protocol=table.protocol, kernel_rows=table.kernel_rows,
                               model_rows=keep)
            own_cv[fold] = cls._fit(sub, **options).predict_many([lists[i] for i in fold],
                                                                 genes=[genes[i] for i in fold])
        cols = [own_cv] + [p.predict_many(lists, genes=genes) for p in prior]
        a = np.column_stack(cols + [np.ones(n), -np.ones(n)]) / y[:, None]  # relative error, intercept free
        w = _nnls(a, np.ones(n))
        rmspe = float(np.sqrt(np.mean((a @ w - 1.0) ** 2)))
        own.prior, own.own_weight = prior, float(w[0])
        own.prior_weights = [float(v) for v in w[1:len(cols)]]
        own.blend_intercept_ms = float(w[-2] - w[-1])
        own.fit_info["transfer"] = {
            "prior_devices": [str(p.device.get("name", "")) for p in prior],
            "prior_weights": own.prior_weights, "own_weight": own.own_weight,
            "intercept_ms": own.blend_intercept_ms,
            "cv_rmspe_own": float(np.sqrt(np.mean((own_cv / y - 1.0) ** 2))), "rmspe_blend": rmspe,
        }
        logger.info("blended with %d prior predictor(s): %s", len(prior), own.fit_info["transfer"])
        return own

    @classmethod
    def _fit_on_scale(cls, table: LatencyTable, reference_exponent: float | str, outside_models: bool = True,
                      channel_alignment: int | None = CHANNEL_ALIGNMENT,
                      int8_pool_state: bool = True, weight_term: bool | str = "auto",
                      gene_terms: bool | None = None,
                      block_padding: bool = True, depthwise_channels_once: bool = False,
                      transition_penalty: bool = True, io_term: bool = True, nonnegative_families: bool = True,
                      nested_families: bool = False, stem_families: bool = False,
                      float16_layout: bool = False) -> tuple["LatencyPredictor", LatencyTable]:
        """The predictor fitted on ``table`` put on its reference scale with the chosen exponent, and that table."""
        if not isinstance(table, LatencyTable):
            raise ValueError(f"table must be a LatencyTable, got {type(table).__name__}")
        rows = (*table.kernel_rows, *table.model_rows)
        ref0 = table.reference_ms
        usable = ref0 is not None and all(r.reference_ms is not None for r in rows)
        if reference_exponent == "auto":
            states = len({r.reference_ms for r in table.model_rows}) if usable else 0
            grid: Sequence[float] = REFERENCE_EXPONENTS if states >= MIN_STATE_REFERENCES else (0.0,)
        elif (isinstance(reference_exponent, (int, float)) and not isinstance(reference_exponent, bool)
              and math.isfinite(reference_exponent) and reference_exponent >= 0):
            if reference_exponent and not usable:
                raise ValueError(f"reference_exponent={reference_exponent!r} needs every row of the table to carry "
                                 "its reference_ms (rows timed under the protocol); allowed here: 0 or 'auto'")
            grid = (float(reference_exponent),)
        else:
            raise ValueError(f"reference_exponent={reference_exponent!r}; allowed: 'auto' or a number >= 0")

        if weight_term == "auto":  # both ways where there is something to choose: kernel rows and model rows
            terms: tuple[bool, ...] = (False, True) if table.kernel_rows and table.model_rows else (False,)
        elif isinstance(weight_term, bool):
            terms = (weight_term,)
        else:
            raise ValueError(f"weight_term={weight_term!r}; allowed: 'auto', True or False")

        fits: dict[tuple[float, bool], tuple[LatencyPredictor, LatencyTable]] = {}
        scaled_tables: dict[float, LatencyTable] = {}

        def attempt(b: float, term: bool) -> float:
            if (b, term) not in fits:
                if b not in scaled_tables:
                    scaled_tables[b] = table if b == 0 else table.on_reference_scale(ref0, exponent=b)
                fits[b, term] = (cls._fit(scaled_tables[b], outside_models, channel_alignment, int8_pool_state, term,
                                          gene_terms, block_padding, depthwise_channels_once, transition_penalty,
                                          io_term, nonnegative_families, nested_families, stem_families,
                                          float16_layout),
                                scaled_tables[b])
            err = fits[b, term][0].fit_info.get("loo_rmspe")
            return float(err) if err is not None and math.isfinite(err) else math.inf

        # each way at its best exponent of the coarse grid; the weight term must earn its parameter
        coarse = {t: min(grid, key=lambda b: attempt(b, t)) for t in terms}
        term = (terms[0] if len(terms) == 1
                else attempt(coarse[True], True) < (1.0 - WEIGHT_TERM_MARGIN) * attempt(coarse[False], False))
        best = coarse[term]
        if len(grid) > 1:  # refine around the best of the coarse grid
            steps = (b for b in (best - _EXPONENT_STEP, best + _EXPONENT_STEP) if b >= 0)
            best = min((best, *steps), key=lambda b: attempt(b, term))
        own, scaled = fits[best, term]
        own.reference_ms = ref0 if usable else None
        own.reference_exponent = best
        own.fit_info["reference_exponent"] = best
        model_refs = [r.reference_ms for r in table.model_rows] if usable else []
        if len(model_refs) >= MIN_STATE_REFERENCES:  # the states the exponent was fitted in (evaluate checks against)
            own.fit_info["model_reference_ms"] = [float(q) for q in np.quantile(model_refs, (0.05, 0.95))]
        if len(grid) > 1:
            own.fit_info["loo_rmspe_by_exponent"] = {f"{b:g}": attempt(b, term) for b, t in sorted(fits) if t == term}
            logger.info("machine-state exponent %g (leave-one-out RMSPE by exponent: %s)", best,
                        own.fit_info["loo_rmspe_by_exponent"])
        if len(terms) > 1:
            without, with_ = attempt(coarse[False], False), attempt(coarse[True], True)
            own.fit_info["weight_term"] = {"chosen": term, "loo_rmspe_without": without, "loo_rmspe_with": with_,
                                           "margin": WEIGHT_TERM_MARGIN}
            logger.info("cost per megabyte of weights %s (leave-one-out RMSPE without %.4f, with %.4f)",
                        "on" if term else "off", without, with_)
        return own, scaled

    @classmethod
    def _fit(cls, table: LatencyTable, outside_models: bool = True,
             channel_alignment: int | None = CHANNEL_ALIGNMENT, int8_pool_state: bool = True,
             weight_term: bool = False, gene_terms: bool | None = None,
             block_padding: bool = True, depthwise_channels_once: bool = False, transition_penalty: bool = True,
             io_term: bool = True, nonnegative_families: bool = True,
             nested_families: bool = False, stem_families: bool = False,
             float16_layout: bool = False) -> "LatencyPredictor":
        if gene_terms is not None and not isinstance(gene_terms, bool):
            raise ValueError(f"gene_terms={gene_terms!r}; allowed: None (only without kernel rows), True or False")
        if not table.kernel_rows and not table.model_rows:
            raise ValueError("table has no rows: nothing to fit")
        kernel_model = None
        if table.kernel_rows:
            kernel_model = KernelModel([r.kernel for r in table.kernel_rows], [r.latency_ms for r in table.kernel_rows],
                                       nchwc=_nchwc(table.device), channel_alignment=channel_alignment,
                                       block_padding=block_padding,
                                       depthwise_channels_once=depthwise_channels_once)
        mode = "kernels" if kernel_model is not None else "models"
        if not table.model_rows:  # stand-alone kernel times, summed (one coefficient per column of _phi)
            theta0 = np.zeros(2 + bool(kernel_model is not None and _nchwc(table.device))
                              + bool(kernel_model is not None and io_term)
                              + bool(kernel_model is not None and weight_term))
            theta0[0] = 1.0
            return cls(device=table.device, protocol=table.protocol, mode=mode, intercept_ms=0.0,
                       theta0=theta0, kernel_model=kernel_model, weight_term=weight_term, io_term=io_term,
                       fit_info={"model_rows": 0, "kernel_rows": len(table.kernel_rows)})

        rows = table.model_rows
        y = np.array([r.latency_ms for r in rows])
        n = len(rows)
        ukernels, counts = _kernel_counts(rows)
        fam = [_family(k, stem_families) for k in ukernels]
        fam_names = sorted(set(fam))
        fam_idx = np.array([fam_names.index(f) for f in fam])
        nchwc = _nchwc(table.device)
        phi_u = _phi(kernel_model, ukernels, nchwc, weight_term, io_term)

        trans = [_transitions(r.kernels, nchwc, int8_pool=int8_pool_state, float16_layout=float16_layout)
                 for r in rows]
        # stage 1: a global physical model, few parameters, relative error (rows divided by y). With a blocked
        # layout, the reorders at its boundaries are physical too: one shared cost per million elements
        # crossing (either way), so that per-family terms do not carry them to models of other proportions.
        feats1 = counts @ phi_u
        if nchwc:
            crossing = np.array([[tr.get(_TO_PLAIN + ":mel", 0.0) + tr.get(_TO_BLOCKED + ":mel", 0.0)] for tr in trans])
            feats1 = np.concatenate([feats1, crossing], axis=1)
        err1, lam_phys, c1 = _stage1(feats1, y, mode)
        crossing_ms = 0.0
        if nchwc:
            crossing_ms, c1 = float(c1[-1]), c1[:-1]
        intercept0, theta0 = float(c1[0]), c1[1:]
        t_hat = phi_u @ theta0
        floor = 1e-3 * max(float(np.median(np.abs(t_hat))), 1e-9)
        t_hat = np.where(np.abs(t_hat) < floor, floor, t_hat)
        base = intercept0 + counts @ t_hat
        if nchwc:
            base = base + crossing[:, 0] * crossing_ms
        # stage 2: penalised relative deviations. Group 1: a multiplier per family; group 4: a per-kernel
        # cost per family; group 5: the cost of bit-width and layout transitions between consecutive layers (the
        # quantise / dequantise / cast nodes and reorders between them; group 4 with transition_penalty=False);
        # group 2: each distinct kernel seen in two or more models; group 3: each categorical gene value seen in
        # two or more models (per-layer choices).
        use_genes = (kernel_model is None) if gene_terms is None else gene_terms
        genes = [_gene_features((r.candidate or {}).get("genes")) if use_genes else [] for r in rows]
        gene_rows: dict[str, int] = {}
        for gs in genes:
            for g in set(gs):
                gene_rows[g] = gene_rows.get(g, 0) + 1
        gene_names = sorted(g for g, c in gene_rows.items() if 2 <= c < n)
        g_scale = float(np.median(y)) / max(np.mean([len(gs) for gs in genes]), 1.0)
        xg = np.zeros((n, len(gene_names)))
        gpos = {g: j for j, g in enumerate(gene_names)}
        for i, gs in enumerate(genes):
            for g in gs:
                if g in gpos:
                    xg[i, gpos[g]] = g_scale
        rows_per_key = (counts > 0).sum(0)
        key_sel = np.flatnonzero((rows_per_key >= 2) & (rows_per_key < n))
        xf = np.stack([counts[:, fam_idx == j] @ t_hat[fam_idx == j] for j in range(len(fam_names))], axis=1)
        t_typ = float(np.median(np.abs(t_hat)))
        # kernels of each family in each row (rows x families): the per-kernel costs' columns, and the family rule below
        fam_counts = np.stack([counts[:, fam_idx == j].sum(1) for j in range(len(fam_names))], axis=1)
        xc = fam_counts * t_typ
        trans_names = sorted({t for tr in trans for t in tr})
        xt_raw = np.array([[tr.get(t, 0.0) for t in trans_names] for tr in trans]).reshape(n, len(trans_names))
        t_scale = np.sqrt((xt_raw**2).mean(0)) if len(trans_names) else np.zeros(0)
        t_scale = np.where(t_scale > 0, t_typ / np.maximum(t_scale, 1e-12), 1.0)
        xtr = xt_raw * t_scale
        xb = np.concatenate([np.ones((n, 1)), xf, xc, xtr, counts[:, key_sel] * t_hat[None, key_sel], xg],
                            axis=1) / y[:, None]
        yt = (y - base) / y
        nf, nt, nk, ng = len(fam_names), len(trans_names), len(key_sel), len(gene_names)
        groups = np.concatenate([[0], np.full(nf, 1), np.full(nf, 4), np.full(nt, 5 if transition_penalty else 4),
                                 np.full(nk, 2), np.full(ng, 3)])
        # columns held at a multiplier of 0 (their deviation at -1): families whose free fit says they take
        # negative time in a model (nonnegative_families), moved to the target and out of the ridge
        held = np.zeros(xb.shape[1], dtype=bool)
        # nested families: a family with an activation (conv_dense_k1/b32+hardswish) deviates from its parent
        # (conv_dense_k1/b32), whose column then holds the child's kernels too; the child's own column, the
        # deviation, has a penalty of its own (group 6), so a child few models run stays near its parent
        parent = np.full(nf, -1)
        if nested_families:
            for j, f in enumerate(fam_names):
                p = f.split("+", 1)[0]
                if p != f and p in fam_names:
                    parent[j] = fam_names.index(p)

        def link_families(held_fam: np.ndarray) -> np.ndarray:
            """Put each child's kernels in its parent's column where neither is held; the children linked."""
            if not (parent >= 0).any():  # no child (the default fit): the columns stay as built
                return np.zeros(nf, dtype=bool)
            link = (parent >= 0) & ~held_fam & ~held_fam[np.maximum(parent, 0)]
            xfam = xf.copy()
            for j in np.flatnonzero(link):
                xfam[:, parent[j]] += xf[:, j]
            xb[:, 1:1 + nf] = xfam / y[:, None]
            groups[1:1 + nf] = np.where(link, 6, 1)
            return link

        def multipliers(coef: np.ndarray, link: np.ndarray) -> np.ndarray:
            d = coef[1:1 + nf]
            return 1.0 + d + np.where(link, d[np.maximum(parent, 0)], 0.0)

        link = link_families(held[1:1 + nf])
        best_err, lams, coef = _stage2(xb, yt, groups, held)
        for _ in range(nf if nonnegative_families else 0):
            negative = np.zeros(xb.shape[1], dtype=bool)
            negative[1:1 + nf] = (multipliers(coef, link) < 0) & ~held[1:1 + nf]
            if not negative.any():
                break
            held |= negative
            link = link_families(held[1:1 + nf])
            best_err, lams, coef = _stage2(xb, yt, groups, held, start=lams)
        o = 1
        d_fam = multipliers(coef, link) - 1.0; o += nf
        d_cnt = coef[o:o + nf] * t_typ; o += nf
        d_tr = coef[o:o + nt] * t_scale; o += nt
        d_key = coef[o:o + nk]; o += nk
        d_gene = coef[o:o + ng]
        lut_ms = {}
        for j, dk in zip(key_sel, d_key):
            if lams[2] < 1e6 and abs(dk) > 1e-12:
                lut_ms[ukernels[j].key()] = float(dk * t_hat[j])
        # the per-family terms apply to kernels of that family never seen as well, so only those of a family whose
        # kernels run in MIN_FAMILY_MODELS distinct models or more are kept: a rarer family's terms were fitted
        # alongside the rest (they carry those few models' residual, which would otherwise reach the shared terms)
        # and are then dropped, so another model of that family gets its kernels' stand-alone estimates
        model_of: dict[tuple[Kernel, ...], int] = {}
        model_ids = np.array([model_of.setdefault(tuple(r.kernels), len(model_of)) for r in rows])
        rare = {f for j, f in enumerate(fam_names)
                if len(np.unique(model_ids[fam_counts[:, j] > 0])) < MIN_FAMILY_MODELS}
        fam_mult = {f: float(1.0 + d_fam[j]) for j, f in enumerate(fam_names) if f not in rare}
        for j in np.flatnonzero(link):  # a rare child takes its parent's multiplier, not a stand-alone 1
            if fam_names[j] in rare and fam_names[parent[j]] not in rare:
                fam_mult[fam_names[j]] = fam_mult[fam_names[parent[j]]]
        fam_count_ms = {f: float(d_cnt[j]) for j, f in enumerate(fam_names) if f not in rare and abs(d_cnt[j]) > 1e-12}
        trans_ms = {t: float(d) for t, d in zip(trans_names, d_tr) if abs(d) > 1e-12}
        if crossing_ms:  # the shared reorder cost, plus each direction's own deviation
            for t in (_TO_PLAIN + ":mel", _TO_BLOCKED + ":mel"):
                trans_ms[t] = trans_ms.get(t, 0.0) + crossing_ms
        gene_ms = {g: float(d * g_scale) for g, d in zip(gene_names, d_gene) if lams[3] < 1e6 and abs(d) > 1e-12}
        gene_mean = float(np.mean([sum(gene_ms.get(g, 0.0) for g in gs) for gs in genes])) if gene_ms else 0.0
        outside, outside_info = None, None
        if outside_models and kernel_model is not None:
            # the main fit's exact leave-one-out prediction of every row, for the outside model's cross-validation
            pen = np.array([_TINY if g == 0 else lams[g] for g in groups[~held]]) * n / 20.0
            _, loo = _ridge_loo_residuals(xb[:, ~held], yt + xb[:, held].sum(1), pen)
            feats = counts @ kernel_features(ukernels, phi_u[:, :2 + bool(nchwc)])
            outside, outside_info = fit_outside(feats, y, np.array([not r.candidate for r in rows]), model_ids, 1.0 - loo)
        info = {
            "model_rows": n, "kernel_rows": len(table.kernel_rows), "distinct_kernels": len(ukernels),
            "lambda_physical": lam_phys, "lambda_family": lams[1], "lambda_kernel": lams[2], "lambda_gene": lams[3],
            "lambda_overhead": lams[4],
            "lambda_transition": lams[5] if transition_penalty else lams[4],
            "lambda_nested": lams[6] if link.any() else None,
            "loo_rmspe_physical": float(np.sqrt(err1)), "loo_rmspe": float(np.sqrt(best_err)),
            "families_without_terms": sorted(rare),
            "families_at_zero": sorted(f for j, f in enumerate(fam_names) if held[1 + j] and f not in rare),
        }
        if outside_info is not None:
            info["outside_models"] = outside_info
        logger.info("fitted latency predictor (%s mode): %s", mode, info)
        return cls(device=table.device, protocol=table.protocol, mode=mode,
                   intercept_ms=intercept0 + float(coef[0]) * 1.0, theta0=theta0, family_mult=fam_mult,
                   lut_ms=lut_ms, gene_ms=gene_ms, gene_mean_ms=gene_mean, t_floor_ms=floor,
                   family_count_ms=fam_count_ms, transition_ms=trans_ms,
                   kernel_model=kernel_model, min_model_ms=MIN_MODEL_FRACTION * float(y.min()), fit_info=info,
                   measured_models=_measured_models(rows), outside=outside,
                   heaviest_weight_mb=_heaviest(rows, counts @ physical(ukernels)[:, 2]),
                   int8_pool_state=int8_pool_state, weight_term=weight_term, io_term=io_term,
                   stem_families=stem_families, float16_layout=float16_layout)

    # ----------------------------------------------------------------- predicting
    def _records(self, kernels: Sequence[Kernel]) -> list[tuple[float, int, float]]:
        """Per kernel: (contribution ms, its state for the transitions or 0, M activation elements in), cached
        (the state is the bit width of a weight layer, or its layout: see :func:`_transitions`)."""
        # Two levels: a kernel instance seen before carries its record (tagged with this predictor's token,
        # one attribute look-up); a new instance equal to a known kernel finds it in the cache by value.
        token = self._token
        recs: list[Any] = []
        todo: dict[Kernel, list[int]] = {}  # new kernels and where they occur
        cache = self._cache
        for i, k in enumerate(kernels):
            tagged = k.__dict__.get("_lm_rec")
            if tagged is not None and tagged[0] is token:
                recs.append(tagged[1])
                continue
            rec = cache.get(k)
            if rec is None:
                todo.setdefault(k, []).append(i)
            else:
                k.__dict__["_lm_rec"] = (token, rec)  # not a dataclass field: equality and hash unchanged
            recs.append(rec)
        if todo:
            new = list(todo)
            phi = _phi(self.kernel_model if self.mode == "kernels" else None, new, self._nchwc, self.weight_term,
                       self.io_term)
            if self.outside is not None:  # the outside model's features come from the same stand-alone times
                self._outside_cache.update(zip(new, kernel_features(new, phi[:, :2 + bool(self._nchwc)])))
            t_hat = phi @ self.theta0
            t_hat = np.where(np.abs(t_hat) < self.t_floor_ms, self.t_floor_ms, t_hat)
            lut = self.lut_ms
            for k, t, where in zip(new, t_hat, todo.values()):
                key = kernel_key(k)
                f = _family(k, self.stem_families)
                c = float(t * self.family_mult.get(f, 1.0) + self.family_count_ms.get(f, 0.0)
                          + (lut.get(key, 0.0) if lut else 0.0))
                state = layout_state(k, self._nchwc, int8_pool=self.int8_pool_state,
                                     float16_layout=self.float16_layout)
                cache[k] = rec = (c, state, math.prod(k.input_shape) / 1e6 if state else 0.0)
                for i in where:
                    recs[i] = rec
                    kernels[i].__dict__["_lm_rec"] = (token, rec)
        return recs

    def _sum(self, recs: list[tuple[float, int, float]]) -> float:
        """Intercept + contributions + bit-width transition costs of one model."""
        total = self.intercept_ms
        tr = self._tr
        if not tr:
            for r in recs:
                total += r[0]
            return total
        prev = 32
        for c, bits, mel in recs:
            total += c
            if bits and bits != prev:
                cost = tr.get((prev, bits))
                if cost is not None:
                    total += cost[0] + cost[1] * mel
                prev = bits
        if prev != 32:
            cost = tr.get((prev, 32))
            if cost is not None:
                total += cost[0]
        return total

    @property
    def _tr(self) -> dict[tuple[int, int], tuple[float, float]]:
        tr = self.__dict__.get("_tr_table")
        if tr is None:
            tr = {}
            for name, v in self.transition_ms.items():
                pair, _, unit = name.partition(":")
                a, b = (int(x) for x in pair.split(">"))
                c0, c1 = tr.get((a, b), (0.0, 0.0))
                tr[(a, b)] = (c0, c1 + v) if unit == "mel" else (c0 + v, c1)
            self.__dict__["_tr_table"] = tr
        return tr

    def _gene_ms(self, genes: Mapping[str, Any] | None) -> float:
        """The gene terms of a model-rows predictor (their training mean when the genes are not given)."""
        if not self.gene_ms:
            return 0.0
        if genes is None:
            return self.gene_mean_ms
        table = self.gene_ms
        return sum(table.get(g, 0.0) for g in _gene_features(genes))

    def on_scale(self, latency_ms: "float | np.ndarray", reference_ms: "float | np.ndarray | None") -> "float | np.ndarray":
        """A latency measured beside a reference timing of ``reference_ms`` (``Timing.reference_ms``; the
        protocol records it with every measurement), put on the state this predictor predicts for:
        ``latency_ms * (self.reference_ms / reference_ms) ** self.reference_exponent``. Unchanged when the
        predictor has no state correction or ``reference_ms`` is None."""
        if reference_ms is None or self.reference_ms is None or not self.reference_exponent:
            return latency_ms
        scale = (self.reference_ms / np.asarray(reference_ms, dtype=np.float64)) ** self.reference_exponent
        return latency_ms * (scale if np.ndim(scale) else float(scale))

    @property
    def io_ms_per_mb(self) -> float | None:
        """The fitted cost per megabyte a kernel's stand-alone graph takes in and gives out (``fit(io_term=True)``;
        negative where a layer inside a model does not pay what its graph alone does), or None without the term."""
        return float(self.theta0[2 + bool(self._nchwc)]) if self.io_term else None

    def state_note(self) -> str:
        """``"; machine-state exponent B (predicts at the table's reference R ms)"``, or ``""`` without one."""
        if not self.reference_exponent or self.reference_ms is None:
            return ""
        return (f"; machine-state exponent {self.reference_exponent:g} (predicts at the table's reference "
                f"{self.reference_ms:.4f} ms)")

    def predict(self, model: "Sequence[Kernel] | str | os.PathLike[str] | Any", *,
                genes: Mapping[str, Any] | None = None) -> float:
        """End-to-end latency in milliseconds of one model: its kernels (``space.kernels(candidate)``), an ONNX
        file path or an ``onnx.ModelProto``.

        ``genes`` (``candidate.genes``) refine a predictor fitted on model rows that recorded their
        candidates' genes (a per-gene-value lookup table, e.g. from a published benchmark); other predictors
        ignore them. ONNX operators without a kernel raise an :class:`UnknownOperatorWarning` naming them and
        count as 0 ms: the prediction then covers the known kernels only. An ONNX model that the table timed
        whole outside the spaces (``profile_models``: a teacher, other models) is predicted at its measured
        latency on the predictor's scale, not by the fit; any other ONNX model with more weights than the
        fitted whole models (:meth:`beyond_range`) raises a :class:`CalibrationRangeWarning`: its prediction
        extrapolates.
        """
        return float(self.predict_many([model], genes=None if genes is None else [genes])[0])

    def predict_many(self, models: Iterable[Any], *,
                     genes: Sequence[Mapping[str, Any] | None] | None = None) -> np.ndarray:
        """Milliseconds for each model (kernel lists, ONNX paths or ``ModelProto``, as :meth:`predict`).

        ``genes``: one mapping (or None) per model. Predictions are floored at :attr:`min_model_ms`,
        :data:`MIN_MODEL_FRACTION` of the fastest whole model in the fitted table, so that a model smaller
        than every measured one is never predicted at or below 0 ms by an extrapolating intercept.
        """
        lists = []
        files = []  # whole models given as ONNX
        labels: dict[int, str] = {}
        for i, model in enumerate(models):
            if isinstance(model, (str, os.PathLike)) or type(model).__name__ == "ModelProto":
                lists.append(self._onnx_kernels(model))
                files.append(i)
                labels[i] = str(model) if isinstance(model, (str, os.PathLike)) else f"models[{i}]"
            else:
                lists.append(_kernel_list(model, f"models[{i}]"))
        if genes is not None and len(genes) != len(lists):
            raise ValueError(f"genes has {len(genes)} entries for {len(lists)} models; allowed: one per model")
        extra = [self._gene_ms(None if genes is None else genes[i]) for i in range(len(lists))]
        flat = [k for ks in lists for k in ks]
        recs = self._records(flat)
        out = np.empty(len(lists))
        pos = 0
        total = self._sum
        for i, (ks, e) in enumerate(zip(lists, extra)):
            out[i] = total(recs[pos:pos + len(ks)]) + e
            pos += len(ks)
        if self.outside is not None:  # models that resemble the table's other models more than its candidates
            out = self.outside.blend(out, self._outside_sums(lists))
        # The intercept fitted from a few whole models can be negative; a model smaller than any of them
        # must still cost a positive time: never below a fraction of the fastest model measured.
        out = np.maximum(out, self.min_model_ms)
        if self.prior:
            gs = list(genes) if genes is not None else [None] * len(lists)
            out = self.own_weight * out + self.blend_intercept_ms
            for p, w in zip(self.prior, self.prior_weights):
                if w > 0:
                    out += w * p.predict_many(lists, genes=gs)
            out = np.maximum(out, self.min_model_ms)
        # An ONNX model the table timed whole is its own best prediction. (Kernel lists, the spaces'
        # candidates, keep the fitted value, which the compiled path of the spaces reproduces.)
        beyond = []
        for i in files:
            if len(lists[i]) in self._measured_lengths:
                v = self.measured_models.get(tuple(lists[i]))
                if v is not None:
                    out[i] = v
                    continue
            note = self._beyond(lists[i])
            if note:
                beyond.append(f"{labels[i]}: {note}")
        if beyond:
            warnings.warn("; ".join(beyond) + ": the prediction extrapolates beyond the models it was fitted on "
                          "(weights beyond the cache cost time that kernels timed alone do not show)",
                          CalibrationRangeWarning, stacklevel=3)
        return out

    def contributions(self, model: "Sequence[Kernel] | str | os.PathLike[str] | Any") -> tuple[list[Kernel], np.ndarray, float]:
        """Where the fitted prediction of one model (kernels, an ONNX path or ``ModelProto``) goes:
        ``(kernels, ms, rest_ms)``, the model's kernels in order, the milliseconds the fit gives each (its
        stand-alone time through the physical stage, family multiplier, per-kernel cost and lookup table) and the
        rest (the constant, bit-width and layout transitions, gene terms at their mean), which add up to the
        fitted prediction. That is :meth:`predict` before its floor (:attr:`min_model_ms`) and before a model the
        table timed whole is answered with its measurement. A contribution can be negative: the fitted terms are
        deviations, not times. With an :attr:`outside` model, each kernel's share of it is blended in with the
        model's gate weight (its constant goes to the rest).

        Raises:
            ValueError: for a predictor blended with other devices' (``fit(table, prior=[...])``): its prediction
                is a blend of whole-model predictions, with no per-kernel split.
        """
        if self.prior:
            raise ValueError("this predictor is blended with other devices' predictors (fit with prior=...): its "
                             "prediction has no per-kernel split; allowed: a predictor fitted without prior")
        if isinstance(model, (str, os.PathLike)) or type(model).__name__ == "ModelProto":
            kernels = self._onnx_kernels(model)
        else:
            kernels = _kernel_list(model, "model")
        recs = self._records(kernels)
        ms = np.array([r[0] for r in recs], dtype=np.float64)
        rest = float(self._sum(recs) + self._gene_ms(None) - ms.sum())
        if self.outside is not None:  # the blend, split the same way: the outside model's intercept goes to the rest
            feats = self._outside_features(kernels)
            share = float(self.outside.share(feats.sum(0, keepdims=True))[0])
            c = self.outside.coef
            ms = (1.0 - share) * ms + share * (feats[:, :3] @ c[:3])
            rest = (1.0 - share) * rest + share * float(c[3])
        return kernels, ms, rest

    def outside_weight(self, models: Iterable[Any]) -> np.ndarray:
        """The weight the :attr:`outside` model gets in each model's prediction (kernel lists, ONNX paths or
        ``ModelProto``, as :meth:`predict_many`): the gate's probability that the model is of the kind of the table's
        whole models outside the spaces; 0 for every model without an outside model."""
        lists = [self._onnx_kernels(m) if isinstance(m, (str, os.PathLike)) or type(m).__name__ == "ModelProto"
                 else _kernel_list(m, f"models[{i}]") for i, m in enumerate(models)]
        if self.outside is None:
            return np.zeros(len(lists))
        return self.outside.share(self._outside_sums(lists))

    def _outside_features(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """The outside model's additive features of each kernel (kernels x 4), cached by kernel (:meth:`_records`
        fills the cache as it predicts a kernel)."""
        cache = self._outside_cache
        if any(k not in cache for k in kernels):
            self._records(list(kernels))
        return np.array([cache[k] for k in kernels]).reshape(len(kernels), 4)

    def _outside_sums(self, lists: Sequence[Sequence[Kernel]]) -> np.ndarray:
        """The outside model's features of whole models (models x 4): their kernels' features summed."""
        flat = [k for ks in lists for k in ks]
        feats = self._outside_features(flat)
        row = np.repeat(np.arange(len(lists)), [len(ks) for ks in lists])
        return np.stack([np.bincount(row, weights=feats[:, j], minlength=len(lists)) for j in range(4)], axis=1)

    def beyond_range(self, model: "Sequence[Kernel] | str | os.PathLike[str] | Any") -> str | None:
        """Why ``model`` (kernels, an ONNX path or ``ModelProto``) lies beyond the whole models the predictor was
        fitted on, or None: more megabytes of weights than the :data:`MIN_COVERING_ROWS` heaviest of them
        (:attr:`heaviest_weight_mb`). :meth:`predict` warns with this text for models given as ONNX."""
        if isinstance(model, (str, os.PathLike)) or type(model).__name__ == "ModelProto":
            return self._beyond(self._onnx_kernels(model))
        return self._beyond(_kernel_list(model, "model"))

    def _beyond(self, kernels: Sequence[Kernel]) -> str | None:
        heaviest = self.heaviest_weight_mb
        if not heaviest or not kernels:
            return None
        mb = float(physical(list(kernels))[:, 2].sum())
        heavier = sum(1 for w in heaviest if w >= mb)
        if heavier == len(heaviest):
            return None
        return (f"{mb:.1f} MB of weights, more than all but {heavier} of the whole models the predictor was fitted "
                f"on (the {len(heaviest)} heaviest: {', '.join(f'{w:.1f}' for w in heaviest)} MB)")

    @staticmethod
    def _onnx_kernels(model: Any) -> list[Kernel]:
        import onnx

        from latency_models._onnx_graph import kernels_from_onnx

        if isinstance(model, (str, os.PathLike)):
            path = pathlib.Path(model)
            if not path.is_file():
                raise ValueError(f"ONNX path={str(path)!r} does not exist")
            model = onnx.load(str(path))
        kernels, unknown = kernels_from_onnx(model)
        if unknown:
            warnings.warn(
                f"ONNX operator(s) {', '.join(sorted(set(unknown)))} have no latency kernel; counted as 0 ms "
                "(the prediction covers the known kernels only)", UnknownOperatorWarning, stacklevel=3,
            )
        return list(kernels)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "karumi.LatencyPredictor",
            "device": self.device,
            "protocol": self.protocol,
            "mode": self.mode,
            "intercept_ms": self.intercept_ms,
            "theta0": self.theta0.tolist(),
            "t_floor_ms": self.t_floor_ms,
            "family_mult": self.family_mult,
            "lut_ms": self.lut_ms,
            "gene_ms": self.gene_ms,
            "gene_mean_ms": self.gene_mean_ms,
            "family_count_ms": self.family_count_ms,
            "transition_ms": self.transition_ms,
            "kernel_model": self.kernel_model.to_dict() if self.kernel_model is not None else None,
            "min_model_ms": self.min_model_ms,
            "reference_ms": self.reference_ms,
            "reference_exponent": self.reference_exponent,
            "fit_info": self.fit_info,
            "heaviest_weight_mb": self.heaviest_weight_mb,
            "outside": self.outside.to_dict() if self.outside is not None else None,
            "int8_pool_state": self.int8_pool_state,
            "weight_term": self.weight_term,
            "io_term": self.io_term,
            "stem_families": self.stem_families,
            "float16_layout": self.float16_layout,
            "measured_models": [{"kernels": [k.to_dict() for k in ks], "latency_ms": v}
                                for ks, v in self.measured_models.items()],
            "transfer": {"own_weight": self.own_weight, "intercept_ms": self.blend_intercept_ms,
                         "prior_weights": self.prior_weights, "prior": [p.to_dict() for p in self.prior]}
            if self.prior else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LatencyPredictor":
        if not isinstance(data, Mapping) or data.get("kind") != "karumi.LatencyPredictor":
            raise ValueError("not a karumi LatencyPredictor JSON (field 'kind' missing or wrong)")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"predictor field 'format_version'={data.get('format_version')!r} is not supported; "
                             f"allowed: {FORMAT_VERSION}")
        try:
            km = data.get("kernel_model")
            tr = data.get("transfer") or {}
            blend = {"prior": [cls.from_dict(p) for p in tr["prior"]], "prior_weights": tr["prior_weights"],
                     "own_weight": tr["own_weight"], "blend_intercept_ms": tr["intercept_ms"]} if tr else {}
            return cls(**blend, device=data["device"], protocol=data["protocol"], mode=data["mode"],
                       intercept_ms=data["intercept_ms"], theta0=data["theta0"], family_mult=data["family_mult"],
                       lut_ms=data["lut_ms"], gene_ms=data["gene_ms"], gene_mean_ms=data["gene_mean_ms"],
                       t_floor_ms=data["t_floor_ms"], family_count_ms=data["family_count_ms"],
                       transition_ms=data["transition_ms"], kernel_model=KernelModel.from_dict(km, nchwc=_nchwc(data["device"])) if km else None,
                       min_model_ms=data.get("min_model_ms", 0.0), fit_info=data.get("fit_info"),
                       reference_ms=data.get("reference_ms"), reference_exponent=data.get("reference_exponent", 0.0),
                       measured_models={tuple(Kernel.from_dict(k) for k in m["kernels"]): m["latency_ms"]
                                        for m in data.get("measured_models") or []},
                       heaviest_weight_mb=data.get("heaviest_weight_mb"),
                       outside=OutsideModel.from_dict(data["outside"]) if data.get("outside") else None,
                       int8_pool_state=data.get("int8_pool_state", False),
                       weight_term=data.get("weight_term", False), io_term=data.get("io_term", False),
                       stem_families=data.get("stem_families", False),
                       float16_layout=data.get("float16_layout", False))
        except KeyError as exc:
            raise ValueError(f"predictor JSON is missing the field {exc.args[0]!r}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the predictor as JSON (never pickle)."""
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "LatencyPredictor":
        """Read a predictor written by :meth:`save`."""
        return cls.from_dict(read_json(path, what="predictor"))

    def __repr__(self) -> str:
        return f"LatencyPredictor(device={self.device.get('name')!r}, mode={self.mode!r}, {self.fit_info})"
