"""The Pareto front of a study over (accuracy, latency, size), and its files.

The front is taken over every completed trial, feasible or not (an over-budget candidate is recorded
with its predicted latency and accuracy 0, so it is on the front only when nothing else is as small). The
teacher is a point of it too (its accuracy is that of the fully trained teacher, the trials' that of the
short proxy: the two are kept apart in the files and the plot).

What ships (:func:`select`): among the trained front entries that meet the budget *and* are faster than the
teacher (measured latencies where the front was measured on the device, the local device; predicted ones
otherwise), the most accurate one, or, by default (``selection="fastest-tied"``), the fastest of those whose
proxy accuracy the validation split cannot tell apart from the most accurate one's: a two-proportion z-test
at 5 % on ``n_val`` images (the margin is ``1.96 * sqrt(2 p (1 - p) / n_val)``, p their mean accuracy; about
4 points at 92 % on 359 images). The proxy cannot rank such candidates, so paying latency for a difference
it cannot see buys nothing; ``selection="most-accurate"`` ships the top proxy score regardless (ties: lower
latency, then smaller size). A compression that returns a slower model than the one the user brought has
failed: when no entry is faster than the teacher, nothing is selected and the reason says so.

The front is taken on predicted latencies, and a predictor floors what it predicts (its smallest model's time),
so at small inputs many candidates tie there and the most accurate of them dominates the rest, though they
measure apart. When no measured front entry is faster than the teacher, the search measures trained trials the
front left out (:func:`left_out`) and takes the front again on the measured latencies (:func:`widen`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import pathlib
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from search._objective import OBJECTIVES

if TYPE_CHECKING:
    import optuna

__all__ = ["SELECTIONS", "ParetoEntry", "ParetoFront", "accuracy_margin", "left_out", "pareto_front", "select", "widen",
           "write_pareto"]

#: How the shipped entry is chosen (:func:`select`).
SELECTIONS = ("fastest-tied", "most-accurate")

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CSV_FIELDS = ("trial", "accuracy", "latency_ms", "measured_latency_ms", "size_bytes", "compressed_size_bytes",
              "feasible", "trained", "selected", "candidate")


@dataclasses.dataclass
class ParetoEntry:
    """One trial on the front (or the teacher, with ``trial`` None).

    Attributes:
        trial: Optuna trial number.
        candidate: the candidate as a JSON dict (for the teacher: a description of it).
        accuracy: validation accuracy of the proxy, a fraction (None when not trained).
        latency_ms: predicted latency, milliseconds.
        measured_latency_ms: latency of its exported ONNX model measured on this machine (local device).
        size_bytes: stored weights at their bit widths (dense storage), bytes.
        feasible: within the budget.
        trained: trained by the proxy.
        compressed_size_bytes: the weights stored the Deep Compression way (shared values, Huffman-coded),
            bytes; None when unknown (an untrained student, a study from before it was recorded).
    """

    trial: int | None
    candidate: dict[str, Any]
    accuracy: float | None
    latency_ms: float
    size_bytes: int
    feasible: bool
    trained: bool = True
    measured_latency_ms: float | None = None
    compressed_size_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "candidate": self.candidate,
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "measured_latency_ms": self.measured_latency_ms,
            "size_bytes": self.size_bytes,
            "compressed_size_bytes": self.compressed_size_bytes,
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
    #: why ``selected`` is what it is (or why nothing is), one sentence
    selection_reason: str = ""
    #: what trials were held to: the budget, or near the teacher's predicted latency when lower (``feasible``)
    search_budget_ms: float | None = None
    #: whether what ships must be faster than the teacher (its latency on the device is known)
    beat_teacher: bool = True
    #: how the entry to ship is chosen, one of :data:`SELECTIONS`
    selection: str = "fastest-tied"
    #: validation images behind the proxy accuracies (the tie margin of ``fastest-tied``); None: no ties
    n_val: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "budget_ms": self.budget_ms,
            "search_budget_ms": self.search_budget_ms if self.search_budget_ms is not None else self.budget_ms,
            "beat_teacher": self.beat_teacher,
            "selection": self.selection,
            "n_val": self.n_val,
            "objectives": dict(OBJECTIVES),
            "n_trials": self.n_trials,
            "n_feasible": self.n_feasible,
            "pareto": [e.to_dict() for e in self.entries],
            "selected": None if self.selected is None else self.selected.to_dict(),
            "selection_reason": self.selection_reason,
            "teacher": None if self.teacher is None else self.teacher.to_dict(),
        }


def _completed(trials: Sequence["optuna.trial.FrozenTrial"]) -> list["optuna.trial.FrozenTrial"]:
    """The trials that finished with their three objective values."""
    from optuna.trial import TrialState

    return [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == 3]


def _entry(trial: "optuna.trial.FrozenTrial") -> ParetoEntry:
    ua = trial.user_attrs
    trained = bool(ua.get("trained", True))
    return ParetoEntry(
        trial=trial.number,
        candidate=dict(ua.get("candidate", {})),
        accuracy=float(trial.values[0]) if trained else None,
        latency_ms=float(trial.values[1]),
        size_bytes=int(ua.get("size_bytes", trial.values[2])),
        feasible=bool(ua.get("feasible", False)),
        trained=trained,
        compressed_size_bytes=None if ua.get("compressed_size_bytes") is None else int(ua["compressed_size_bytes"]),
    )


#: +1 for an objective to maximise, -1 for one to minimise, in :data:`OBJECTIVES` order.
_SIGNS = tuple(1.0 if direction == "maximize" else -1.0 for _, direction in OBJECTIVES)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` under :data:`OBJECTIVES`: no worse in every objective, better in one."""
    diffs = [s * (x - y) for s, x, y in zip(_SIGNS, a, b)]
    return all(d >= 0 for d in diffs) and any(d > 0 for d in diffs)


def pareto_front(trials: Sequence["optuna.trial.FrozenTrial"], *, budget_ms: float,
                 teacher: ParetoEntry | None = None, search_budget_ms: float | None = None,
                 beat_teacher: bool = True, selection: str = "fastest-tied", n_val: int | None = None) -> ParetoFront:
    """The non-dominated completed trials (sorted by latency), with :func:`select` applied on predictions."""
    done = _completed(trials)
    points = [(t, (float(t.values[0]), float(t.values[1]), float(t.values[2]))) for t in done]
    front = [t for t, p in points if not any(_dominates(q, p) for _, q in points if q is not p)]
    entries = sorted((_entry(t) for t in front), key=lambda e: (e.latency_ms, e.size_bytes))
    n_feasible = sum(1 for t in done if t.user_attrs.get("feasible") and t.user_attrs.get("trained", True))
    all_points = [(e.accuracy or 0.0, e.latency_ms, e.size_bytes, e.feasible) for e in (_entry(t) for t in done)]
    result = ParetoFront(entries=entries, selected=None, teacher=teacher, budget_ms=budget_ms,
                         n_trials=len(done), n_feasible=n_feasible, all_points=all_points,
                         search_budget_ms=search_budget_ms, beat_teacher=beat_teacher, selection=selection,
                         n_val=n_val)
    select(result)
    return result


def left_out(front: ParetoFront, trials: Sequence["optuna.trial.FrozenTrial"], *, limit: int = 8) -> list[ParetoEntry]:
    """Trained trials the front left out, to measure when no measured front entry beats the teacher: the ``limit``
    most accurate and the one predicted fastest (the lowest trial number among ties: a search's trial 0 is its
    fastest candidate, measured faster than the teacher before the search began)."""
    on = {e.trial for e in front.entries}
    rest = [_entry(t) for t in _completed(trials) if t.number not in on]
    rest = [e for e in rest if e.trained and e.accuracy is not None and e.feasible]
    picked = sorted(rest, key=lambda e: (-(e.accuracy or 0.0), e.latency_ms, e.trial))[:max(int(limit), 0)]
    fastest = min(rest, key=lambda e: (e.latency_ms, e.trial), default=None)
    if fastest is not None and fastest not in picked:
        picked.append(fastest)
    return picked


def widen(front: ParetoFront, extra: Sequence[ParetoEntry]) -> ParetoEntry | None:
    """Take the front again over its entries and ``extra`` on their measured latencies where measured
    (:func:`latency_of`), sorted by them, and :func:`select` from it; returns the selected entry."""
    pool = [*front.entries, *extra]
    points = [(e.accuracy or 0.0, latency_of(e), float(e.size_bytes)) for e in pool]
    kept = [e for e, p in zip(pool, points) if not any(_dominates(q, p) for q in points if q is not p)]
    front.entries = sorted(kept, key=lambda e: (latency_of(e), e.size_bytes))
    return select(front)


def latency_of(entry: ParetoEntry) -> float:
    """The entry's measured latency where it was measured, else its predicted one (milliseconds)."""
    return entry.measured_latency_ms if entry.measured_latency_ms is not None else entry.latency_ms


def accuracy_margin(a: float, b: float, n: int) -> float:
    """The smallest difference between accuracies ``a`` and ``b``, each measured on ``n`` images, that a
    two-proportion z-test finds at 5 %: ``1.96 * sqrt(2 p (1 - p) / n)``, ``p`` their mean."""
    p = min(max(0.5 * (a + b), 0.0), 1.0)
    return 1.96 * math.sqrt(2.0 * p * (1.0 - p) / n)


def select(front: ParetoFront) -> ParetoEntry | None:
    """Set and return ``front.selected`` (the trained front entry to ship, within the budget and faster than
    the teacher, chosen as ``front.selection`` says: see the module docstring) and ``front.selection_reason``."""
    if front.selection not in SELECTIONS:
        raise ValueError(f"selection={front.selection!r} is not allowed; allowed: {', '.join(SELECTIONS)}")
    basis = "measured" if any(e.measured_latency_ms is not None for e in front.entries) else "predicted"
    within = [e for e in front.entries if e.trained and e.accuracy is not None and latency_of(e) <= front.budget_ms]
    teacher_ms = latency_of(front.teacher) if front.teacher is not None and front.beat_teacher else None
    faster = [e for e in within if teacher_ms is None or latency_of(e) < teacher_ms]
    best = max(faster, key=lambda e: (e.accuracy or 0.0, -latency_of(e), -e.size_bytes), default=None)
    pick = best
    if best is not None and front.selection == "fastest-tied" and front.n_val:
        tied = [e for e in faster
                if (best.accuracy or 0.0) - (e.accuracy or 0.0) < accuracy_margin(best.accuracy or 0.0, e.accuracy or 0.0,
                                                                              int(front.n_val))]
        pick = min(tied, key=lambda e: (latency_of(e), e.size_bytes, -(e.accuracy or 0.0)))
    budget_text = (f"within the budget ({basis} {latency_of(pick):.3f} ms <= {front.budget_ms:g} ms)"
                   + (f" and faster than the teacher ({basis} {teacher_ms:.3f} ms)" if teacher_ms is not None else "")
                   if pick is not None else "")
    if pick is not None and pick is best:
        reason = f"the most accurate front entry {budget_text}"
        if front.selection == "fastest-tied" and front.n_val:
            reason += "; no faster entry's proxy accuracy is within the validation split's 5 % margin of it"
    elif pick is not None:
        assert best is not None
        reason = (f"the fastest front entry {budget_text} whose proxy accuracy ({pick.accuracy:.2%}) the {front.n_val} "
                  f"validation images cannot tell apart from the most accurate one's (trial {best.trial}, "
                  f"{best.accuracy:.2%}, {basis} {latency_of(best):.3f} ms; two-proportion test at 5 %, margin "
                  f"{accuracy_margin(best.accuracy or 0.0, pick.accuracy or 0.0, int(front.n_val)):.2%})")
    elif not any(e.trained for e in front.entries):
        held = front.search_budget_ms if front.search_budget_ms is not None else front.budget_ms
        reason = f"no trial was trained: every candidate was predicted over the {held:.3f} ms the trials were held to"
    elif not within:
        reason = f"no trained front entry is within the {front.budget_ms:g} ms budget ({basis})"
    else:
        reason = (f"every trained front entry within the budget is slower than the teacher ({basis} "
                  f"{teacher_ms:.3f} ms): nothing compressed is worth shipping")
    front.selected, front.selection_reason = pick, reason
    return pick


def write_pareto(front: ParetoFront, out_dir: str | pathlib.Path, *,
                 final: Mapping[str, Any] | None = None) -> dict[str, pathlib.Path]:
    """Write ``pareto.json``, ``pareto.csv`` and ``pareto.png`` into ``out_dir``; returns their paths.

    ``final``: the fine-tuned selected model (``latency_ms``, ``measured_latency_ms``, ``val_accuracy``),
    drawn in the plot when given."""
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
    plot_pareto(front, paths["png"], final=final)
    return paths


def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def plot_pareto(front: ParetoFront, path: str | pathlib.Path, *, final: Mapping[str, Any] | None = None) -> None:
    """Accuracy against latency, zoomed to the data (a log axis when it spans a decade or more).

    Grey: every trial at its predicted latency (proxy accuracy; crosses: over budget, not trained). Blue:
    the front, hollow at the predicted latency, filled at the measured one where measured, joined by a
    line. Red diamond: the teacher (its accuracy after full training). Orange star: the selected trial;
    green star: the selected model after its final fine-tune. The budget line is drawn when it lies in
    the zoomed range, else an arrow at the edge says where it is.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.8), dpi=110)
    ax = fig.add_subplot()
    xs: list[float] = []
    trained = [(lat, a) for a, lat, _, feas in front.all_points if feas]
    over = [(lat, a) for a, lat, _, feas in front.all_points if not feas]
    if trained:
        ax.scatter(*zip(*trained), s=12, c="0.65", label="trials: proxy accuracy, predicted latency")
    if over:
        ax.scatter(*zip(*over), s=12, c="0.65", marker="x", label="over budget (not trained)")
    xs += [lat for lat, _ in trained + over]
    for e in front.entries:
        acc = e.accuracy or 0.0
        xs.append(e.latency_ms)
        if e.measured_latency_ms is not None:
            ax.plot([e.latency_ms, e.measured_latency_ms], [acc, acc], c="tab:blue", lw=0.8, alpha=0.6, zorder=2)
            xs.append(e.measured_latency_ms)
    pts = [(e.latency_ms, e.accuracy or 0.0) for e in front.entries]
    if pts:
        ax.scatter(*zip(*pts), s=36, facecolors="none", edgecolors="tab:blue", zorder=3,
                   label="Pareto front, predicted latency")
    measured = [(e.measured_latency_ms, e.accuracy or 0.0) for e in front.entries if e.measured_latency_ms is not None]
    if measured:
        ax.scatter(*zip(*measured), s=36, c="tab:blue", edgecolors="k", linewidths=0.5, zorder=3,
                   label="Pareto front, measured latency")
    if front.selected is not None:
        sel = front.selected
        ax.scatter([latency_of(sel)], [sel.accuracy or 0.0], s=150, marker="*", c="tab:orange", edgecolors="k",
                   zorder=4, label=f"selected trial {sel.trial} (proxy accuracy)")
    if front.teacher is not None:
        t = front.teacher
        ax.scatter([latency_of(t)], [t.accuracy or 0.0], s=80, marker="D", c="tab:red", edgecolors="k", zorder=4,
                   label="teacher (fully trained accuracy)")
        xs.append(latency_of(t))
    if final is not None and final.get("val_accuracy") is not None:
        lat = final.get("measured_latency_ms") or final.get("latency_ms")
        ax.scatter([lat], [final["val_accuracy"]], s=150, marker="*", c="tab:green", edgecolors="k", zorder=5,
                   label="selected after the final fine-tune")
        xs.append(lat)
    xs = [x for x in xs if x and x > 0]
    if xs:
        lo, hi = min(xs), max(xs)
        log = hi / lo >= 10.0
        if log:
            ax.set_xscale("log")
            left, right = lo / 1.25, hi * 1.25
        else:
            pad = 0.08 * (hi - lo) if hi > lo else 0.1 * hi
            left, right = max(0.0, lo - pad), hi + pad
        budget = front.budget_ms
        off_scale = ""
        if left <= budget <= right * 1.0001:
            ax.axvline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"budget {budget:g} ms")
        else:
            off_scale = f"; budget {budget:g} ms, beyond the {'right' if budget > right else 'left'} edge"
        ax.set_xlim(left, right)
        ax.set_xlabel("latency on the device (ms" + (", log scale" if log else "") + ")" + off_scale,
                      color="tab:red" if off_scale else "black")
    else:
        ax.set_xlabel("latency on the device (ms)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{front.n_trials} trials, {front.n_feasible} within budget and trained (proxy accuracy)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
    fig.tight_layout()
    tmp = pathlib.Path(str(path) + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def load_pareto(path: str | pathlib.Path) -> Mapping[str, Any]:
    """Read a ``pareto.json`` written by :func:`write_pareto`."""
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
