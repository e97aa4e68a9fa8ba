"""A profiling workload on disk: what the host writes, what a device without torch times.

The host (which can import the search spaces, hence torch) writes a folder::

    DIR/manifest.json      kind "karumi.workload": the kernel pool (each kernel as a JSON dict and its mean
                           count per model), the whole models (ONNX file, kernels, candidate, source), the
                           spaces and their options
    DIR/models/NNNN.onnx   the calibration models, exported by the host

The device, with only numpy, onnx and onnxruntime installed, runs
``python -m latency_models profile-workload DIR --out table.json``: the kernels' one-layer graphs are
built there with ``onnx.helper`` (:func:`latency_models.kernel_graph`) and everything is timed with the
protocol ``karumi-interleaved/3``, adaptive kernel sampling included, into a latency table that the
predictor (also torch-free) fits and predicts from.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

from latency_models._kernel import Kernel
from latency_models._profile import KERNEL_SHARE, OFFGRID_SHARE, OnProgress, WorkloadModel, profile
from latency_models._table import LatencyTable, read_json

__all__ = ["WORKLOAD_KIND", "profile_workload", "read_workload", "write_workload"]

logger = logging.getLogger(__name__)

WORKLOAD_KIND = "karumi.workload"
WORKLOAD_VERSION = 1


def write_workload(folder: str | os.PathLike[str], pool: Mapping[Kernel, float], models: Sequence[WorkloadModel], *,
                   spaces: Sequence[str] = (), space_options: Mapping[str, Any] | None = None,
                   on_progress: OnProgress | None = None) -> pathlib.Path:
    """Write a workload folder (see the module docstring); returns the manifest's path.

    Args:
        folder: created if missing; must not hold another workload's manifest.
        pool: kernels that may be timed alone, with their mean count per model.
        models: whole models (``onnx``: a path or ``ModelProto``, written as ``models/NNNN.onnx``).
        spaces / space_options: what the workload describes (recorded in the table's protocol).
    """
    import onnx

    if not pool:
        raise ValueError("pool is empty: a workload needs at least one kernel")
    folder = pathlib.Path(folder)
    manifest = folder / "manifest.json"
    if manifest.exists():
        raise ValueError(f"folder={str(folder)!r} already holds a workload (manifest.json); choose an empty folder")
    (folder / "models").mkdir(parents=True, exist_ok=True)
    rows = []
    for j, m in enumerate(models):
        name = f"models/{j:04d}.onnx"
        proto = onnx.load(str(m.onnx)) if isinstance(m.onnx, (str, os.PathLike)) else m.onnx
        onnx.save(proto, str(folder / name))
        row: dict[str, Any] = {"onnx": name, "kernels": [k.to_dict() for k in m.kernels], "source": m.source}
        if m.candidate is not None:
            row["candidate"] = dict(m.candidate)
        rows.append(row)
        if on_progress is not None:
            on_progress(j + 1, len(models), m.source)
    data = {
        "kind": WORKLOAD_KIND,
        "format_version": WORKLOAD_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "spaces": sorted(set(spaces)),
        "space_options": dict(space_options or {}),
        "pool": [{"kernel": k.to_dict(), "weight": float(w)} for k, w in pool.items()],
        "models": rows,
    }
    tmp = manifest.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, manifest)
    return manifest


def read_workload(folder: str | os.PathLike[str]) -> tuple[dict[Kernel, float], list[WorkloadModel], dict[str, Any]]:
    """``(pool, models, manifest)`` of a workload folder; a malformed manifest raises ``ValueError``."""
    folder = pathlib.Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise ValueError(f"workload folder={str(folder)!r} has no manifest.json (write it with "
                         "'python -m search profile --write-workload DIR')")
    data = read_json(path, what="workload manifest")
    if not isinstance(data, Mapping) or data.get("kind") != WORKLOAD_KIND:
        raise ValueError(f"{path}: field 'kind' must be {WORKLOAD_KIND!r}")
    if data.get("format_version") != WORKLOAD_VERSION:
        raise ValueError(f"{path}: field 'format_version'={data.get('format_version')!r} is not supported; "
                         f"allowed: {WORKLOAD_VERSION}")
    pool: dict[Kernel, float] = {}
    for i, row in enumerate(data.get("pool") or []):
        try:
            pool[Kernel.from_dict(row["kernel"])] = float(row["weight"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: pool[{i}] is not a kernel with a weight: {exc}") from None
    if not pool:
        raise ValueError(f"{path}: field 'pool' is missing or empty")
    models = []
    for j, row in enumerate(data.get("models") or []):
        try:
            onnx_path = folder / str(row["onnx"])
            kernels = tuple(Kernel.from_dict(k) for k in row["kernels"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: models[{j}] is malformed: {exc}") from None
        if not onnx_path.is_file():
            raise ValueError(f"{path}: models[{j}] names {row['onnx']!r}, which is not in the folder")
        models.append(WorkloadModel(onnx=str(onnx_path), kernels=kernels, candidate=row.get("candidate"),
                                    source=str(row.get("source", ""))))
    return pool, models, dict(data)


def profile_workload(folder: str | os.PathLike[str], *, device_name: str, out: str | os.PathLike[str],
                     threads: int = 1, budget_min: float = 10.0, description: str = "", seed: int = 0,
                     on_progress: OnProgress | None = None, offgrid_share: float = OFFGRID_SHARE,
                     kernel_share: float = KERNEL_SHARE) -> LatencyTable:
    """Time a workload folder on this machine into the table ``out`` (see :func:`latency_models.profile`, which
    also says what ``offgrid_share`` and ``kernel_share`` are; the whole models are the workload's, in order, until
    they or the budget run out)."""
    pool, models, data = read_workload(folder)

    def model(j: int) -> WorkloadModel | None:
        return models[j] if j < len(models) else None

    next_model: Callable[[int], WorkloadModel | None] | None = model if models else None
    table = profile(pool, next_model, device_name=device_name, out=out, threads=threads, budget_min=budget_min,
                    description=description, seed=seed, spaces=data.get("spaces") or (),
                    space_options=data.get("space_options") or None, on_progress=on_progress,
                    offgrid_share=offgrid_share, kernel_share=kernel_share)
    return table
