"""The Pareto front of a study over (accuracy, latency, size), and its files.

The front is taken over every completed trial, feasible or not (an over-budget candidate is recorded
with its predicted latency and accuracy 0, so it is on the front only when nothing else is as small).
``selected`` is the most accurate trained feasible trial (ties: lower latency, then smaller size); when the
front was measured on the device, :func:`select_measured` gives the most accurate entry measured within the
budget.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import pathlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from search._objective import OBJECTIVES

if TYPE_CHECKING:
    import optuna

__all__ = ["ParetoEntry", "ParetoFront", "pareto_front", "select_measured", "write_pareto"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CSV_FIELDS = ("trial", "accuracy", "latency_ms", "measured_latency_ms", "size_bytes", "feasible", "trained",
              "selected", "candidate")


@dataclasses.dataclass
class ParetoEntry:
    """One trial on the front (or the teacher, with ``trial`` None).

    Attributes:
        trial: Optuna trial number.
        candidate: the candidate as a JSON dict (for the teacher: a description of it).
        accuracy: validation accuracy of the proxy, a fraction (None when not trained).
        latency_ms: predicted latency, milliseconds.
        measured_latency_ms: latency of its exported ONNX model measured on this machine (local device).
        size_bytes: stored weights, bytes.
        feasible: within the budget.
        trained: trained by the proxy.
    """

    trial: int | None
    candidate: dict[str, Any]
    accuracy: float | None
    latency_ms: float
    size_bytes: int
    feasible: bool
    trained: bool = True
    measured_latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "candidate": self.candidate,
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "measured_latency_ms": self.measured_latency_ms,
            "size_bytes": self.size_bytes,
            "feasible": self.feasible,
            "trained": self.trained,
        }


@dataclasses.dataclass
class ParetoFront:
    """The front, the selected entry, the teacher and the counts behind them."""

    entries: list[ParetoEntry]
    selected: ParetoEntry | None
    teacher: ParetoEntry | None
    budget_ms: float
    n_trials: int
    n_feasible: int
    all_points: list[tuple[float, float, int, bool]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "budget_ms": self.budget_ms,
            "objectives": dict(OBJECTIVES),
            "n_trials": self.n_trials,
            "n_feasible": self.n_feasible,
            "pareto": [e.to_dict() for e in self.entries],
            "selected": None if self.selected is None else self.selected.to_dict(),
            "teacher": None if self.teacher is None else self.teacher.to_dict(),
        }


def _entry(trial: "optuna.trial.FrozenTrial") -> ParetoEntry:
    ua = trial.user_attrs
    trained = bool(ua.get("trained", True))
    return ParetoEntry(
        trial=trial.number,
        candidate=dict(ua.get("candidate", {})),
        accuracy=float(trial.values[0]) if trained else None,
        latency_ms=float(trial.values[1]),
        size_bytes=int(trial.values[2]),
        feasible=bool(ua.get("feasible", False)),
        trained=trained,
    )


#: +1 for an objective to maximise, -1 for one to minimise, in :data:`OBJECTIVES` order.
_SIGNS = tuple(1.0 if direction == "maximize" else -1.0 for _, direction in OBJECTIVES)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` under :data:`OBJECTIVES`: no worse in every objective, better in one."""
    diffs = [s * (x - y) for s, x, y in zip(_SIGNS, a, b)]
    return all(d >= 0 for d in diffs) and any(d > 0 for d in diffs)


def pareto_front(trials: Sequence["optuna.trial.FrozenTrial"], *, budget_ms: float,
                 teacher: ParetoEntry | None = None) -> ParetoFront:
    """The non-dominated completed trials (sorted by latency) and the most accurate feasible one."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == 3]
    points = [(t, (float(t.values[0]), float(t.values[1]), float(t.values[2]))) for t in done]
    front = [t for t, p in points if not any(_dominates(q, p) for _, q in points if q is not p)]
    entries = sorted((_entry(t) for t in front), key=lambda e: (e.latency_ms, e.size_bytes))
    feasible = [e for e in (_entry(t) for t in done) if e.feasible and e.trained]
    selected = None
    if feasible:
        best = max(feasible, key=lambda e: (e.accuracy or 0.0, -e.latency_ms, -e.size_bytes))
        # the most accurate feasible trial is never dominated by a feasible one, but it may be dominated by
        # an infeasible trial; keep the front's copy when it is there so measured latencies are shared
        selected = next((e for e in entries if e.trial == best.trial), best)
    all_points = [(e.accuracy or 0.0, e.latency_ms, e.size_bytes, e.feasible) for e in (_entry(t) for t in done)]
    return ParetoFront(entries=entries, selected=selected, teacher=teacher, budget_ms=budget_ms,
                       n_trials=len(done), n_feasible=len(feasible), all_points=all_points)


def select_measured(front: ParetoFront) -> ParetoEntry | None:
    """The most accurate trained, feasible front entry whose *measured* latency is within the budget.

    For a local device, where the front is exported and timed: a candidate predicted within the budget
    but measured over it is not the one to ship. Ties: lower measured latency, then smaller size. None when
    no entry was measured within the budget.
    """
    ok = [e for e in front.entries if e.trained and e.feasible and e.accuracy is not None
          and e.measured_latency_ms is not None and e.measured_latency_ms <= front.budget_ms]
    return max(ok, key=lambda e: (e.accuracy or 0.0, -(e.measured_latency_ms or 0.0), -e.size_bytes), default=None)


def write_pareto(front: ParetoFront, out_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """Write ``pareto.json``, ``pareto.csv`` and ``pareto.png`` into ``out_dir``; returns their paths."""
    out = pathlib.Path(out_dir)
    paths = {"json": out / "pareto.json", "csv": out / "pareto.csv", "png": out / "pareto.png"}
    _write_atomic(paths["json"], json.dumps(front.to_dict(), indent=2) + "\n")
    with open(paths["csv"].with_suffix(".csv.tmp"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        rows = list(front.entries) + ([front.teacher] if front.teacher is not None else [])
        for e in rows:
            d = e.to_dict()
            d["selected"] = front.selected is not None and e.trial is not None and e.trial == front.selected.trial
            d["candidate"] = json.dumps(d["candidate"], sort_keys=True)
            if e.trial is None:
                d["trial"] = "teacher"
            writer.writerow({k: d.get(k) for k in CSV_FIELDS})
    paths["csv"].with_suffix(".csv.tmp").replace(paths["csv"])
    plot_pareto(front, paths["png"])
    return paths


def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def plot_pareto(front: ParetoFront, path: str | pathlib.Path) -> None:
    """Accuracy against predicted latency: every trial, the front, the budget line and the teacher."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    ax = fig.add_subplot()
    trained = [(a, lat) for a, lat, _, feas in front.all_points if feas]
    over = [(a, lat) for a, lat, _, feas in front.all_points if not feas]
    if trained:
        ax.scatter(*zip(*[(lat, a) for a, lat in trained]), s=14, c="0.6", label="feasible trials")
    if over:
        ax.scatter(*zip(*[(lat, a) for a, lat in over]), s=14, c="0.6", marker="x", label="over budget (not trained)")
    pts = [(e.latency_ms, e.accuracy or 0.0) for e in front.entries]
    if pts:
        ax.scatter(*zip(*pts), s=36, c="tab:blue", edgecolors="k", linewidths=0.5, zorder=3, label="Pareto front")
    if front.selected is not None:
        ax.scatter([front.selected.latency_ms], [front.selected.accuracy or 0.0], s=140, marker="*", c="tab:orange",
                   edgecolors="k", zorder=4, label="selected")
    if front.teacher is not None:
        ax.scatter([front.teacher.latency_ms], [front.teacher.accuracy or 0.0], s=90, marker="D", c="tab:red",
                   edgecolors="k", zorder=4, label="teacher")
    ax.axvline(front.budget_ms, color="tab:red", linestyle="--", linewidth=1, label=f"budget {front.budget_ms:g} ms")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{front.n_trials} trials, {front.n_feasible} feasible")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = pathlib.Path(str(path) + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def load_pareto(path: str | pathlib.Path) -> Mapping[str, Any]:
    """Read a ``pareto.json`` written by :func:`write_pareto`."""
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
