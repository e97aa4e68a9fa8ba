"""`OutsideModel`: a few-parameter model for whole models unlike the spaces' candidates, and the gate that blends it in.

The predictor's model-rows fit (:mod:`latency_models._predictor`) is calibrated mostly on the spaces' random
candidates: hundreds of rows against the dozen whole models a profile times besides them (``profile_models``:
torchvision's and the user's). Its per-family terms then describe the candidates, and carry over badly to models
of another make (``experiments/outside_models.py`` measures how far). Fitted on those other models alone, four
physical parameters can do better on them:

    latency_ms ~ a * sum(time alone) + b * kernels + c * MB its stand-alone graphs reorder + d

(the reorder column only on a device with a blocked layout). How much of it a model gets is decided by where
the model lies among the table's whole models: a logistic regression (the *gate*) on three standardised features
(log of the summed stand-alone time, log of the number of kernels, log of the megabytes of weights), their squares
and products, fitted to tell the rows outside the spaces from the candidates, gives the probability that a model
is of the other kind; that is the outside model's weight in the blend. The gate's penalty is chosen by
cross-validation on the table's own rows: every row is predicted by both models without it (the outside model
refitted without the row's model, the main fit by its exact leave-one-out) and blended by its gate (refitted without
the row's model for the rows outside the spaces), and the penalty with the lowest error (the candidates' rows and
the other models' rows weighing half each) wins, or no blend when none beats the main fit alone. With fewer than
:data:`MIN_OUTSIDE_MODELS` distinct models outside the spaces there is no blend. A gate costs a few arithmetic
operations per model, so the compiled path of the spaces (:mod:`latency_models._segments`) keeps its speed.
No torch here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from latency_models._features import physical
from latency_models._kernel import Kernel

__all__ = ["OutsideModel", "MIN_OUTSIDE_MODELS", "GATE_PENALTIES"]

#: Fewest distinct whole models outside the spaces (rows without a candidate) for an outside model.
MIN_OUTSIDE_MODELS = 8
#: Penalties of the gate's logistic regression tried (on standardised features).
GATE_PENALTIES = (0.1, 1.0, 3.0, 10.0, 30.0, 100.0)
_RIDGE = 1e-6


def kernel_features(kernels: Sequence[Kernel], phi: np.ndarray) -> np.ndarray:
    """Per kernel, the additive features of a whole model: (time alone ms, 1, MB its stand-alone graph reorders,
    MB of weights), from the predictor's physical features ``phi`` of the same kernels (time alone, 1[, reorder
    MB on a device with a blocked layout])."""
    kernels = list(kernels)
    if not kernels:
        return np.zeros((0, 4))
    reorder = phi[:, 2] if phi.shape[1] > 2 else np.zeros(len(kernels))
    return np.stack([phi[:, 0], np.ones(len(kernels)), reorder, physical(kernels)[:, 2]], axis=1)


def _design(feats: np.ndarray) -> np.ndarray:
    """The regression's columns from a model's summed features: (sum alone, kernels, reorder MB, 1)."""
    return np.concatenate([feats[:, :3], np.ones((len(feats), 1))], axis=1)


def _gate_z(feats: np.ndarray) -> np.ndarray:
    """The gate's unstandardised features: log summed time alone, log kernels, log(MB of weights + 0.1)."""
    return np.stack([np.log(np.maximum(feats[:, 0], 1e-6)), np.log(np.maximum(feats[:, 1], 1.0)),
                     np.log(np.maximum(feats[:, 3], 0.0) + 0.1)], axis=1)


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of ``x @ c ~ y`` in relative error, with a tiny ridge on scaled columns."""
    a = x / y[:, None]
    scale = np.sqrt((a**2).mean(0))
    scale = np.where(scale > 1e-12, scale, 1.0)
    a = a / scale
    c = np.linalg.solve(a.T @ a + _RIDGE * len(y) * np.eye(a.shape[1]), a.T @ np.ones(len(y)))
    return c / scale


def _gate_x(z: np.ndarray) -> np.ndarray:
    """The gate's regressors from standardised features: 1, each feature, their squares and products."""
    cols = [np.ones(len(z))] + [z[:, i] for i in range(3)]
    cols += [z[:, i] * z[:, j] for i in range(3) for j in range(i, 3)]
    return np.stack(cols, axis=1)


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -eta))


def _logistic(x: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Ridge-penalised logistic regression of ``t`` (0/1) on ``x`` (intercept unpenalised), by Newton's method with
    step halving, so that the penalised loss never rises (well-separated classes cannot make it diverge)."""
    pen = np.full(x.shape[1], lam)
    pen[0] = 1e-9

    def loss(w: np.ndarray) -> float:
        eta = x @ w
        return float(np.sum(np.logaddexp(0.0, eta) - t * eta) + 0.5 * np.sum(pen * w * w))

    w = np.zeros(x.shape[1])
    current = loss(w)
    for _ in range(100):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - t) + pen * w
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(pen)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        for _half in range(30):
            trial = w - step
            value = loss(trial)
            if np.isfinite(value) and value <= current:
                break
            step = step / 2.0
        else:
            break
        w, current = trial, value
        if np.abs(step).max() < 1e-10:
            break
    return w


class OutsideModel:
    """The fitted outside model and gate (see the module); built by :func:`fit_outside` or :meth:`from_dict`."""

    def __init__(self, *, coef: Sequence[float], gate: Sequence[float], z_mean: Sequence[float],
                 z_scale: Sequence[float]) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.gate = np.asarray(gate, dtype=np.float64)
        self.z_mean = np.asarray(z_mean, dtype=np.float64)
        self.z_scale = np.asarray(z_scale, dtype=np.float64)
        if self.coef.shape != (4,) or self.gate.shape != (10,) or self.z_mean.shape != (3,) or self.z_scale.shape != (3,):
            raise ValueError("outside model: coef must have 4 values, gate 10, z_mean and z_scale 3 each")

    def share(self, feats: np.ndarray) -> np.ndarray:
        """The outside model's weight for models with summed features ``feats`` (models x 4)."""
        z = (_gate_z(np.asarray(feats, dtype=np.float64)) - self.z_mean) / self.z_scale
        return _sigmoid(_gate_x(z) @ self.gate)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Milliseconds of models with summed features ``feats`` (models x 4) by the outside model alone."""
        return _design(np.asarray(feats, dtype=np.float64)) @ self.coef

    def blend(self, own_ms: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """``own_ms`` (the main fit's milliseconds) blended with the outside model by the gate."""
        s = self.share(feats)
        return (1.0 - s) * own_ms + s * self.predict(feats)

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "gate": self.gate.tolist(), "z_mean": self.z_mean.tolist(),
                "z_scale": self.z_scale.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OutsideModel":
        try:
            return cls(coef=data["coef"], gate=data["gate"], z_mean=data["z_mean"], z_scale=data["z_scale"])
        except KeyError as exc:
            raise ValueError(f"predictor JSON: the outside model is missing the field {exc.args[0]!r}") from None


def fit_outside(feats: np.ndarray, y: np.ndarray, outside: np.ndarray, model_ids: np.ndarray,
                own_loo_ratio: np.ndarray) -> tuple[OutsideModel | None, dict[str, Any]]:
    """The outside model of a table's model rows, or None, and what was found (for ``fit_info``).

    ``feats``: each row's summed :func:`kernel_features`; ``y``: its latency (ms, on the fit's scale); ``outside``:
    rows that are not a space's candidate; ``model_ids``: equal for rows of the same model (left out together);
    ``own_loo_ratio``: the main fit's leave-one-out prediction of each row divided by its latency.
    """
    outside = np.asarray(outside, dtype=bool)
    models_out = np.unique(model_ids[outside])
    info: dict[str, Any] = {"models": int(len(models_out))}
    if len(models_out) < MIN_OUTSIDE_MODELS:
        info["chosen"] = f"no blend: fewer than {MIN_OUTSIDE_MODELS} models outside the spaces"
        return None, info
    if outside.all():
        info["chosen"] = "no blend: no candidates of the spaces among the rows"
        return None, info
    x = _design(feats)
    # the outside model's prediction of every row, fitted without that row's model
    ratio_out = np.empty(len(y))
    full = _solve(x[outside], y[outside])
    ratio_out[~outside] = x[~outside] @ full / y[~outside]
    for m in models_out:
        rows = model_ids == m
        keep = outside & ~rows
        ratio_out[rows] = x[rows] @ _solve(x[keep], y[keep]) / y[rows]
    z_raw = _gate_z(feats)
    z_mean, z_scale = z_raw.mean(0), z_raw.std(0)
    z_scale = np.where(z_scale > 1e-9, z_scale, 1.0)
    gx = _gate_x((z_raw - z_mean) / z_scale)
    t = outside.astype(np.float64)

    def error(ratio: np.ndarray) -> float:  # the candidates' rows and the other models' rows weigh half each
        e = (ratio - 1.0) ** 2
        return float(0.5 * e[outside].mean() + 0.5 * e[~outside].mean())

    own = error(own_loo_ratio)
    by_lam, gates = {}, {}
    for lam in GATE_PENALTIES:
        gates[lam] = _logistic(gx, t, lam)
        s = _sigmoid(gx @ gates[lam])
        for m in models_out:  # an outside model's rows are weighed by a gate fitted without them
            rows = model_ids == m
            s[rows] = _sigmoid(gx[rows] @ _logistic(gx[~rows], t[~rows], lam))
        by_lam[lam] = error((1.0 - s) * own_loo_ratio + s * ratio_out)
    best = min(by_lam, key=by_lam.get)
    info.update({"cv_rmspe_own": float(np.sqrt(own)), "cv_rmspe_by_gate_penalty": {f"{lam:g}": float(np.sqrt(v))
                                                                                  for lam, v in by_lam.items()}})
    if by_lam[best] >= own:
        info["chosen"] = "no blend: no gate beats the main fit in cross-validation"
        return None, info
    info.update({"chosen": "blend", "gate_penalty": best, "coef": full.tolist()})
    return OutsideModel(coef=full, gate=gates[best], z_mean=z_mean, z_scale=z_scale), info
