"""``report.md`` and the one-screen summary printed at the end of a run."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

from search._final import FinalModel
from search._options import command_line
from search._pareto import ParetoEntry, ParetoFront

__all__ = ["SearchResult", "summary", "write_report"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchResult:
    """What :func:`search.run` hands back (and the report shows).

    Attributes:
        out_dir: the run folder.
        pareto: the Pareto front (also in ``out_dir/pareto.json``).
        selected: the most accurate feasible front entry (None when no trial met the budget).
        final: the fine-tuned, exported selected model (None when interrupted or nothing was feasible).
        teacher: the teacher's entry (validation accuracy, predicted and measured latency, size).
        teacher_test_accuracy: the teacher's accuracy on the test split.
        interrupted: the study was stopped by Ctrl-C (results so far were written).
        trials_finished: completed trials of this run (all sessions, with ``--resume``).
        seconds: wall time of this call.
        config: the options of the run (``SearchOptions.to_dict()``).
    """

    out_dir: pathlib.Path
    pareto: ParetoFront
    selected: ParetoEntry | None
    final: FinalModel | None
    teacher: ParetoEntry
    teacher_test_accuracy: float
    interrupted: bool
    trials_finished: int
    seconds: float
    config: dict[str, Any]

def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} ms"


def _bytes(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1e6:.3f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"


def _comparison(result: SearchResult) -> list[tuple[str, str, str]]:
    t, f, s = result.teacher, result.final, result.selected
    rows = [
        ("test accuracy", _pct(result.teacher_test_accuracy), _pct(f.test_accuracy if f else None)),
        ("test accuracy of the ONNX model (ONNX Runtime)", "", _pct(f.onnx_test_accuracy if f else None)),
        ("validation accuracy (proxy for the student)", _pct(t.accuracy), _pct(s.accuracy if s else None)),
        ("predicted latency", _ms(t.latency_ms), _ms(s.latency_ms if s else None)),
        ("measured latency (best/model.onnx)", _ms(t.measured_latency_ms), _ms(f.measured_latency_ms if f else None)),
        ("size (stored weights)", _bytes(t.size_bytes), _bytes(s.size_bytes if s else None)),
        ("speed-up, predicted", "1.00x", _ratio(t.latency_ms, s.latency_ms if s else None)),
        ("speed-up, measured", "1.00x" if t.measured_latency_ms else "n/a",
         _ratio(t.measured_latency_ms, f.measured_latency_ms if f else None)),
        ("size reduction", "1.00x", _ratio(t.size_bytes, s.size_bytes if s else None)),
    ]
    return rows


def summary(result: SearchResult) -> str:
    """The one-screen summary the command line prints."""
    cfg = result.config
    lines = [
        "",
        f"karumi search: {result.trials_finished} trials ({result.pareto.n_feasible} feasible and trained) in "
        f"{result.seconds / 60:.1f} min, budget {cfg['budget_ms']:g} ms, space {cfg['space']}, data {cfg['data']}"
        + (" - INTERRUPTED, results so far" if result.interrupted else ""),
        "",
        f"  {'':<48}{'teacher':>16}{'selected':>16}",
    ]
    for name, a, b in _comparison(result):
        lines.append(f"  {name:<48}{a:>16}{b:>16}")
    lines.append("")
    if result.selected is None:
        lines.append("  no trial met the budget: nothing selected (see pareto.json for the fastest ones)")
    else:
        bits = result.selected.candidate.get("bits") or []
        counts = {b: bits.count(b) for b in sorted(set(bits))}
        prunes = result.selected.candidate.get("prune_ratios") or []
        lines.append(f"  selected trial {result.selected.trial}: bits per layer {counts or 'n/a'}, mean prune ratio "
                     f"{(sum(prunes) / len(prunes)) if prunes else 0.0:.2f}; Pareto front: {len(result.pareto.entries)} trials")
    out = result.out_dir
    lines.append(f"  results in {out}/: report.md, pareto.json/.csv/.png"
                 + (", best/model.onnx" if result.final is not None else ""))
    if result.interrupted:
        lines.append(f"  continue with: python -m search --resume {out}")
    return "\n".join(lines)


def write_report(result: SearchResult, *, device: str) -> pathlib.Path:
    """Write ``report.md`` in the run folder; returns its path."""
    cfg = result.config
    lines = [
        "# karumi search report",
        "",
        f"Budget **{cfg['budget_ms']:g} ms** on {device}; space `{cfg['space']}`, data `{cfg['data']}`, teacher "
        f"`{cfg['teacher']}`, sampler `{cfg['sampler']}`, seed {cfg['seed']}.",
        f"{result.trials_finished} trials finished, {result.pareto.n_feasible} of them feasible and trained by the "
        f"proxy ({cfg['proxy_epochs']} distillation epoch(s) on {cfg['proxy_samples']} training images); "
        f"wall time of this session {result.seconds / 60:.1f} min.",
    ]
    if result.interrupted:
        lines += ["", "**The search was interrupted (Ctrl-C): these are the results so far; continue with "
                  f"`python -m search --resume {result.out_dir}`.**"]
    lines += ["", "## Teacher against the selected model", "", "| | teacher | selected |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in _comparison(result)]
    f = result.final
    if f is not None:
        lines += [
            "",
            f"The selected model was fine-tuned by distillation for {cfg['final_epochs']} epoch(s) on the whole "
            f"training split and exported to `best/model.onnx` ({f.onnx_bytes} bytes, quantised as its candidate "
            f"says) and `best/model_fp32.onnx` (float32, test accuracy {_pct(f.fp32_onnx_test_accuracy)}"
            + (f", measured {_ms(f.measured_fp32_latency_ms)}" if f.measured_fp32_latency_ms else "") + ").",
            "Measured latencies are medians of ONNX Runtime runs on this machine (1 thread, the latency table's "
            "protocol). On x86 CPUs ONNX Runtime runs int8 layers as fused integer kernels (faster); 16-bit layers "
            "run as float32 with casts around them and 4-bit weights are dequantised to float32: those two save "
            "size, not time.",
        ]
    elif result.selected is None:
        lines += ["", "No trial met the budget, so no model was selected or exported."]
    lines += ["", "## Pareto front", "",
              "Accuracy is the proxy's validation accuracy (none for candidates over budget, which are never "
              "trained); latency is predicted for the device (and measured here when the device is local).", "",
              "| trial | accuracy | predicted latency | measured latency | size | feasible | selected |",
              "| ---: | ---: | ---: | ---: | ---: | :---: | :---: |"]
    sel = result.selected.trial if result.selected is not None else None
    for e in result.pareto.entries:
        lines.append(f"| {e.trial} | {_pct(e.accuracy)} | {_ms(e.latency_ms)} | {_ms(e.measured_latency_ms)} | "
                     f"{_bytes(e.size_bytes)} | {'yes' if e.feasible else 'no'} | {'**yes**' if e.trial == sel else ''} |")
    lines += ["", "![accuracy against latency](pareto.png)", "", "## Reproduce", "", "```bash",
              command_line(cfg), "```", ""]
    path = pathlib.Path(result.out_dir) / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path
