"""Helpers shared by the experiment scripts: JSON output, summaries, the hypervolume of a front, and the
shared set-up of the search (data, teacher, space, device predictor) that every run of an experiment reuses.

The set-up goes through the same public loaders ``search.run`` uses (``search.load_data``,
``search.load_teacher``, ``search.resolve_device``): the experiments measure exactly what the search does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

__all__ = [
    "Setup",
    "choose_budget",
    "hypervolume_3d",
    "load_setup",
    "load_snapshot",
    "loadavg",
    "percentile_summary",
    "write_json",
]


def write_json(path: str | pathlib.Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (atomically: a temporary file, then a rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_default) + "\n", encoding="utf-8")
    tmp.replace(path)


def _default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pathlib.Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def loadavg() -> list[float]:
    """``os.getloadavg()`` as a list (1, 5, 15 minutes)."""
    return [round(v, 2) for v in os.getloadavg()]


def percentile_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, mean, std (population), median, p90, min and max of ``values`` (None entries when empty)."""
    a = np.asarray([float(v) for v in values], dtype=float)
    if a.size == 0:
        return {"n": 0, "mean": None, "std": None, "p50": None, "p90": None, "min": None, "max": None}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "min": float(a.min()), "max": float(a.max())}


def load_snapshot(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """The teacher, selected entry and final model of a ``search.run`` output folder (what exists)."""
    run_dir = pathlib.Path(run_dir)
    snap: dict[str, Any] = {}
    pareto = run_dir / "pareto.json"
    if pareto.is_file():
        p = json.loads(pareto.read_text(encoding="utf-8"))
        snap.update({k: p.get(k) for k in ("budget_ms", "n_trials", "n_feasible", "selected", "teacher")})
    final = run_dir / "best" / "final.json"
    if final.is_file():
        snap["final"] = json.loads(final.read_text(encoding="utf-8"))
    return snap


def hypervolume_3d(points: np.ndarray, ref: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` (all objectives minimised) up to the reference point ``ref``.

    Slices along the first objective: between consecutive distinct values of it, the dominated area in the
    other two objectives is the 2-D hypervolume of the points at or below the slice (a staircase sum).
    Points not strictly better than ``ref`` in every objective contribute nothing.
    """
    ref = np.asarray(ref, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    xs = np.append(np.unique(pts[:, 0]), ref[0])
    total = 0.0
    for i in range(len(xs) - 1):
        active = pts[pts[:, 0] <= xs[i]][:, 1:]
        total += (xs[i + 1] - xs[i]) * _hv2d(active, ref[1:])
    return float(total)


def _hv2d(pts: np.ndarray, ref: np.ndarray) -> float:
    xs = pts[np.argsort(pts[:, 0], kind="stable")]
    # sweep x, keeping the running minimum of y: a staircase of rectangles
    area = 0.0
    run_min = float(ref[1])
    for j in range(len(xs)):
        run_min = min(run_min, float(xs[j, 1]))
        x_next = float(xs[j + 1, 0]) if j + 1 < len(xs) else float(ref[0])
        area += (x_next - float(xs[j, 0])) * (float(ref[1]) - run_min)
    return area


@dataclasses.dataclass
class Setup:
    """What every run of an experiment shares: loaded once, so runs cost only their trials."""

    data: Any
    teacher: Any
    space: Any
    device: Any
    data_spec: str
    space_name: str


def load_setup(*, data: str = "digits", space: str = "mobilenet", seed: int = 0, teacher_epochs: int = 12,
               profile_min: float = 3.0) -> Setup:
    """Data, built-in teacher, space and local device predictor exactly as ``search.run`` makes them
    (same cache under ``$KARUMI_CACHE``: a teacher or profile made by an earlier run is reused)."""
    from search import load_data, load_teacher, resolve_device
    from spaces import get_space

    ds = load_data(data, seed=seed)
    c, h, _ = ds.input_shape
    teacher = load_teacher("builtin", ds, seed=seed, epochs=teacher_epochs)
    options: dict[str, Any] = dict(num_classes=ds.num_classes, input_size=h, in_channels=c)
    if space == "prune":  # as search.run: the space compresses the trained teacher, not random weights
        options["teacher"] = teacher.model
    sp = get_space(space, **options)
    device = resolve_device("local", sp, profile_min=profile_min)
    return Setup(data=ds, teacher=teacher, space=sp, device=device, data_spec=data, space_name=space)



def random_latencies(setup: Setup, *, n: int = 2000, seed: int = 1234,
                     search: Sequence[str] = ("arch", "prune", "bits"),
                     bits: Sequence[int] | None = None) -> np.ndarray:
    """Predicted milliseconds of ``n`` random candidates of the setup's space (searching ``search``, drawing
    ``bits``: default ``spaces.SEARCH_BITS``)."""
    from search import predict_latency

    rng = np.random.default_rng(seed)
    kwargs: dict[str, Any] = {} if bits is None else {"bits": tuple(bits)}
    cands = [setup.space.sample(rng, search=tuple(search), **kwargs) for _ in range(n)]
    return np.asarray(predict_latency(setup.device.predictor, setup.space, cands), dtype=float)


def choose_budget(setup: Setup, *, quantile: float, n: int = 2000, seed: int = 1234,
                  bits: Sequence[int] | None = None) -> tuple[float, np.ndarray]:
    """A budget that binds: the ``quantile`` of the predicted latency of ``n`` random candidates of the whole
    space, rounded to 2 significant digits; returns it and those latencies."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile!r} must be in (0, 1)")
    lat = random_latencies(setup, n=n, seed=seed, bits=bits)
    return float(f"{np.quantile(lat, quantile):.2g}"), lat
