"""``report.md`` and the one-screen summary printed at the end of a run."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

from search._final import FinalModel
from search._options import command_line
from search._pareto import ParetoEntry, ParetoFront

__all__ = ["SearchResult", "summary", "verdict", "write_report"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchResult:
    """What :func:`search.run` hands back (and the report shows).

    Attributes:
        out_dir: the run folder.
        pareto: the Pareto front (also in ``out_dir/pareto.json``); ``pareto.selection_reason`` says why the
            selected entry was chosen, or why none was.
        selected: the front entry that was fine-tuned and shipped (None when nothing qualified).
        final: the fine-tuned, exported selected model (None when interrupted or nothing was selected).
        teacher: the teacher's entry (validation accuracy, predicted and measured latency, size).
        teacher_test_accuracy: the teacher's accuracy on the test split (PyTorch).
        teacher_onnx_test_accuracy: the same for ``teacher.onnx`` in ONNX Runtime, fed [0, 1] images.
        interrupted: the study was stopped by Ctrl-C (results so far were written).
        trials_finished: completed trials of this run (all sessions, with ``--resume``).
        seconds: wall time of this call.
        config: the options of the run (``SearchOptions.to_dict()``).
        device: one line naming the device and where its latencies come from.
        measurement: one line saying how latencies were measured here (None: nothing measured here).
        preprocess: the deployable model's input contract (``best/preprocess.json``).
    """

    out_dir: pathlib.Path
    pareto: ParetoFront
    selected: ParetoEntry | None
    final: FinalModel | None
    teacher: ParetoEntry
    teacher_test_accuracy: float
    teacher_onnx_test_accuracy: float | None
    interrupted: bool
    trials_finished: int
    seconds: float
    config: dict[str, Any]
    device: str = ""
    measurement: str | None = None
    preprocess: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def _teacher_ms(result: SearchResult) -> float | None:
    """The teacher's measured latency, side by side with the shipped model when there is one."""
    f, t = result.final, result.teacher
    if f is not None and f.measured_teacher_latency_ms is not None:
        return f.measured_teacher_latency_ms
    return t.measured_latency_ms


def _comparison(result: SearchResult) -> list[tuple[str, str, str]]:
    t, f, s = result.teacher, result.final, result.selected
    teacher_ms = _teacher_ms(result)
    rows = [
        ("test accuracy (PyTorch)", _pct(result.teacher_test_accuracy), _pct(f.test_accuracy if f else None)),
        ("test accuracy of the ONNX file (ONNX Runtime, [0, 1] images)", _pct(result.teacher_onnx_test_accuracy),
         _pct(f.onnx_test_accuracy if f else None)),
        ("validation accuracy, after training", _pct(t.accuracy), _pct(f.val_accuracy if f else None)),
        ("validation accuracy of the search's proxy", "", _pct(s.accuracy if s else None)),
        ("predicted latency", _ms(t.latency_ms), _ms(f.latency_ms if f else s.latency_ms if s else None)),
        ("measured latency (teacher.onnx, best/model.onnx)", _ms(teacher_ms), _ms(f.measured_latency_ms if f else None)),
        ("size (stored weights)", _bytes(t.size_bytes), _bytes(f.size_bytes if f else s.size_bytes if s else None)),
        ("speed-up, predicted", "1.00x", _ratio(t.latency_ms, f.latency_ms if f else s.latency_ms if s else None)),
        ("speed-up, measured side by side", "1.00x" if teacher_ms else "n/a",
         _ratio(teacher_ms, f.measured_latency_ms if f else None)),
        ("size reduction", "1.00x", _ratio(t.size_bytes, f.size_bytes if f else s.size_bytes if s else None)),
        ("Deep Compression storage (shared values, Huffman)", "", _bytes(f.compressed_size_bytes if f else None)),
    ]
    return rows


#: A shipped model this many test-accuracy points below the teacher gets a hint on what to try next.
LARGE_LOSS_POINTS = 5.0


def accuracy_hint(space: str, points: float) -> str | None:
    """What to try when the shipped model lost ``points`` (negative) of test accuracy against the teacher:
    None for a small loss. A student space trains its candidates from random weights, which a short proxy
    and fine-tune cannot do on harder data (``experiments/results/student_learning_curve.md``); the ``prune``
    space starts every candidate from the teacher's trained weights."""
    if points > -LARGE_LOSS_POINTS:
        return None
    if space == "prune":
        return (f"The model lost {-points:.1f} points: give the pruned candidates a longer fine-tune "
                "(--final-epochs, --proxy-epochs) or a looser --budget-ms.")
    return (f"The model lost {-points:.1f} points: the {space} students start from random weights, and the "
            "proxy's and the final fine-tune's epochs did not teach them this data. --space prune compresses the "
            "teacher itself and inherits its trained weights; or train the students longer (--proxy-epochs, "
            "--final-epochs, --supernet-epochs).")


def verdict(result: SearchResult) -> list[str]:
    """The lines a user reads first: does the teacher already meet the budget, what compression buys."""
    cfg, t, f = result.config, result.teacher, result.final
    budget = float(cfg["budget_ms"])
    teacher_ms = _teacher_ms(result)
    basis, t_lat = ("measured", teacher_ms) if teacher_ms is not None else ("predicted", t.latency_ms)
    lines = []
    if not result.pareto.beat_teacher:
        lines.append(f"The teacher's latency on this device is not in its latency table (extrapolated to "
                     f"{t.latency_ms:.3f} ms): the comparisons with it are indicative, and it bounded nothing.")
    elif t_lat <= budget:
        lines.append(f"The teacher already meets the {budget:g} ms budget on this device ({basis} {t_lat:.3f} ms).")
    else:
        lines.append(f"The teacher does not meet the {budget:g} ms budget on this device ({basis} {t_lat:.3f} ms).")
    if f is not None:
        speed = _ratio(teacher_ms, f.measured_latency_ms) if f.measured_latency_ms is not None and teacher_ms \
            else _ratio(t.latency_ms, f.latency_ms)
        points = 100 * (f.onnx_test_accuracy - (result.teacher_onnx_test_accuracy
                                                if result.teacher_onnx_test_accuracy is not None
                                                else result.teacher_test_accuracy))
        lines.append(f"Compression buys {speed} speed ({'measured side by side' if f.measured_latency_ms is not None else 'predicted'}) "
                     f"and {_ratio(t.size_bytes, f.size_bytes)} size, at {points:+.2f} points of test accuracy "
                     f"(best/model.onnx, the {f.shipped} export).")
        hint = accuracy_hint(str(cfg["space"]), points)
        if hint:
            lines.append(hint)
    elif not result.interrupted:
        lines.append(f"Nothing was shipped: {result.pareto.selection_reason}.")
    return lines


def summary(result: SearchResult) -> str:
    """The one-screen summary the command line prints."""
    cfg = result.config
    lines = [
        "",
        f"karumi search: {result.trials_finished} trials ({result.pareto.n_feasible} feasible and trained) in "
        f"{result.seconds / 60:.1f} min, budget {cfg['budget_ms']:g} ms, space {cfg['space']}, data {cfg['data']}"
        + (" - INTERRUPTED, results so far" if result.interrupted else ""),
        "",
        *(f"  {line}" for line in verdict(result)),
        "",
        f"  {'':<60}{'teacher':>14}{'selected':>14}",
    ]
    for name, a, b in _comparison(result):
        lines.append(f"  {name:<60}{a:>14}{b:>14}")
    lines.append("")
    if result.selected is None:
        lines.append(f"  nothing selected: {result.pareto.selection_reason} (see pareto.json)")
    else:
        bits = result.selected.candidate.get("bits") or []
        counts = {b: bits.count(b) for b in sorted(set(bits))}
        prunes = result.selected.candidate.get("prune_ratios") or []
        lines.append(f"  selected trial {result.selected.trial}: bits per layer {counts or 'n/a'}, mean prune ratio "
                     f"{(sum(prunes) / len(prunes)) if prunes else 0.0:.2f}; Pareto front: {len(result.pareto.entries)} trials")
    out = result.out_dir
    lines.append(f"  results in {out}/: report.md, pareto.json/.csv/.png"
                 + (", best/ (model.onnx, preprocess.json, predict.py)" if result.final is not None else ""))
    if result.measurement:
        lines.append(f"  latencies: {result.measurement}")
    if result.interrupted:
        lines.append(f"  continue with: python -m search --resume {out}")
    return "\n".join(lines)


def write_report(result: SearchResult) -> pathlib.Path:
    """Write ``report.md`` in the run folder; returns its path."""
    cfg = result.config
    lines = [
        "# karumi search report",
        "",
        *verdict(result),
        "",
        f"Budget **{cfg['budget_ms']:g} ms** on {result.device}; space `{cfg['space']}`, data `{cfg['data']}`, "
        f"teacher `{cfg['teacher']}`, sampler `{cfg['sampler']}`, seed {cfg['seed']}.",
        f"{result.trials_finished} trials finished, {result.pareto.n_feasible} of them within the budget and trained "
        f"by the proxy ({cfg['proxy_epochs']} distillation epoch(s) on {cfg['proxy_samples']} training images); "
        f"wall time of this session {result.seconds / 60:.1f} min.",
    ]
    if result.interrupted:
        lines += ["", "**The search was interrupted (Ctrl-C): these are the results so far; continue with "
                  f"`python -m search --resume {result.out_dir}`.**"]
    lines += ["", "## Teacher against the shipped model", "", "| | teacher | selected |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in _comparison(result)]
    f = result.final
    lines += ["", f"Selection: {result.pareto.selection_reason}."]
    if f is not None:
        lines += [
            "",
            f"The selected model was fine-tuned by distillation for {cfg['final_epochs']} epoch(s) on the whole "
            f"training split. `best/model.onnx` ({f.onnx_bytes} bytes) is its **{f.shipped}** export: "
            f"{f.shipped_reason}. Beside it: `best/model_fp32.onnx` (test accuracy {_pct(f.fp32_onnx_test_accuracy)}"
            + (f", measured {_ms(f.measured_fp32_latency_ms)}" if f.measured_fp32_latency_ms else "") + ")"
            + (f" and `best/model_quantized.onnx` (test accuracy {_pct(f.quantized_onnx_test_accuracy)}"
               + (f", measured {_ms(f.measured_quantized_latency_ms)}" if f.measured_quantized_latency_ms else "")
               + ")" if f.quantized_onnx_test_accuracy is not None else "") + ".",
            "On x86 CPUs ONNX Runtime runs int8 layers as fused integer kernels; 16-bit layers run as float32 "
            "with casts around them and 4-bit weights are dequantised to float32: those save size, not time; "
            "binary and ternary (1- and 2-bit) layers run as int8.",
        ]
        sp = f.activation_sparsity
        lines += ["", f"Activation sparsity of the fine-tuned model on {sp['images']} validation images: "
                  f"{100 * sp['zero_fraction']:.1f} % of the values after its ReLUs are exactly zero, and a "
                  f"runtime that skipped zero inputs could skip {100 * sp['skippable_fraction']:.1f} % of its "
                  f"MACs. {sp['note'].rstrip('.')}."]
    lines += ["", "## How this was measured", ""]
    if result.measurement:
        lines.append(f"- Latencies: {result.measurement}")
    else:
        lines.append("- Latencies: predicted for the target device from its latency table (nothing measured here).")
    lines.append(f"- Device: {result.device}.")
    if result.preprocess:
        pp = result.preprocess
        h, w = pp["input_size"]
        lines.append(f"- Input of every ONNX file (`best/preprocess.json`): float32 {pp['color']} images in [0, 1] "
                     f"({pp['scale']} of 8-bit pixels), {pp['layout']}, {h}x{w} ({pp['resize']} resize), dynamic batch; "
                     "the per-channel standardisation of the training split is inside the graph. Classify image "
                     "files with `python best/predict.py IMAGE...` (ONNX Runtime, numpy and Pillow only).")
    lines += ["", "## Pareto front", "",
              "Accuracy is the proxy's validation accuracy (none for candidates over budget, which are never "
              "trained); the teacher's is its accuracy after full training, not comparable with a proxy's. "
              "Latency is predicted for the device, and measured here side by side when the device is local. "
              "Size is the dense storage at the layers' bits; Deep Compression is the same weights stored with "
              "shared values and Huffman coding (`spaces.compress.save_compressed`), of the proxy's trained "
              f"weights{' (the size objective: the inherited weights, before training)' if cfg.get('size') == 'compressed' else ''}.", "",
              "| trial | accuracy | predicted latency | measured latency | size | Deep Compression | within budget | selected |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: |"]
    sel = result.selected.trial if result.selected is not None else None
    t = result.teacher
    lines.append(f"| teacher | {_pct(t.accuracy)} (trained) | {_ms(t.latency_ms)} | {_ms(t.measured_latency_ms)} | "
                 f"{_bytes(t.size_bytes)} | {_bytes(t.compressed_size_bytes)} | {'yes' if t.feasible else 'no'} | |")
    for e in result.pareto.entries:
        lines.append(f"| {e.trial} | {_pct(e.accuracy)} | {_ms(e.latency_ms)} | {_ms(e.measured_latency_ms)} | "
                     f"{_bytes(e.size_bytes)} | {_bytes(e.compressed_size_bytes)} | {'yes' if e.feasible else 'no'} | "
                     f"{'**yes**' if e.trial == sel else ''} |")
    lines += ["", "![accuracy against latency](pareto.png)", "", "## Reproduce", "", "```bash",
              command_line(cfg), "```", ""]
    path = pathlib.Path(result.out_dir) / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path
