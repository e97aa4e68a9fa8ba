"""What a profiling command does once its table is written: fit the predictor, write it beside the table, and say
what the table is worth (its rows, its recorded noise floor, a warning when the machine changed speed meanwhile).

``python -m latency_models profile-workload`` and ``python -m search profile`` (``python -m latency_models
profile``) end the same way; both print :func:`fit_beside`'s lines. Library code: it returns the lines, the
commands print them.
"""

from __future__ import annotations

import os
import pathlib

from latency_models._floor import floor_note
from latency_models._predictor import LatencyPredictor
from latency_models._table import LatencyTable

__all__ = ["fit_beside", "predictor_path"]


def predictor_path(table_path: str | os.PathLike[str]) -> pathlib.Path:
    """Where a table's predictor is written: ``table.json`` -> ``table.predictor.json``."""
    return pathlib.Path(table_path).with_suffix(".predictor.json")


def fit_beside(table: LatencyTable, table_path: str | os.PathLike[str]) -> tuple[LatencyPredictor, list[str]]:
    """Fit ``table``'s predictor (the default fit), write it to :func:`predictor_path` of ``table_path``, and
    return it with the lines a command prints: the table's rows and minutes, its protocol and reference, where the
    predictor went and its state note; the table's noise floor (when the profile recorded one); and its state
    warning, prefixed ``warning:`` (when its rows' references spread too far)."""
    pred = LatencyPredictor.fit(table)
    path = predictor_path(table_path)
    pred.save(path)
    ref = table.reference_ms
    lines = [f"{table_path}: {len(table.kernel_rows)} kernel rows, {len(table.model_rows)} model rows in "
             f"{table.extra.get('spent_s', 0.0) / 60:.1f} min (protocol {table.protocol.get('name')}"
             f"{'' if ref is None else f', reference {ref:.4f} ms'}); predictor written to {path}{pred.state_note()}"]
    if table.extra.get("noise_floor"):
        lines.append(floor_note(table.extra["noise_floor"]))
    warning = table.state_warning()
    if warning:
        lines.append(f"warning: {warning}")
    return pred, lines
