"""Measure a device once, predict the latency of any candidate on it.

Needs only numpy, onnx and onnxruntime: importing this package never imports torch, so it runs on the
edge device itself. The numeric parts load on first use, so ``python -m latency_models`` can pin the
BLAS thread count before numpy starts (timings on a busy machine depend on it).
"""

from __future__ import annotations

import importlib
from typing import Any

from latency_models._kernel import ACTIVATIONS, BITS, KERNEL_OPS, QLINEAR_BITS, Kernel
from latency_models._progress import Progress
from latency_models._table import REFERENCE_SPREAD_WARN, LatencyTable, cpu_name, default_protocol, device_info
from latency_models._worker import PROTOCOL_NAME

__all__ = [
    "ACTIVATIONS",
    "BITS",
    "CalibrationRangeWarning",
    "KERNEL_OPS",
    "KERNEL_SHARE",
    "OFFGRID_SHARE",
    "KernelModel",
    "Kernel",
    "LatencyPredictor",
    "LatencyTable",
    "OutsideModel",
    "PROTOCOL_NAME",
    "QLINEAR_BITS",
    "REFERENCE_SPREAD_WARN",
    "Progress",
    "SegmentPredictor",
    "SegmentSummary",
    "Timing",
    "UnknownOperatorWarning",
    "WorkloadModel",
    "accuracy_metrics",
    "check_kernel_share",
    "check_offgrid_share",
    "cpu_name",
    "default_protocol",
    "device_info",
    "evaluate",
    "family",
    "fit_beside",
    "floor_note",
    "kernel_graph",
    "kernels_from_onnx",
    "layout_state",
    "measure_interleaved",
    "measure_models",
    "measure_onnx",
    "nchwc_layout",
    "noise_floor",
    "offgrid_variants",
    "plain_path",
    "profile",
    "profile_models",
    "profile_workload",
    "read_workload",
    "reference_model",
    "spearman",
    "state_gap",
    "state_gap_note",
    "write_workload",
]

_LAZY = {
    "KernelModel": "latency_models._kernel_model",
    "OutsideModel": "latency_models._outside",
    "plain_path": "latency_models._layout",
    "LatencyPredictor": "latency_models._predictor",
    "UnknownOperatorWarning": "latency_models._predictor",
    "CalibrationRangeWarning": "latency_models._predictor",
    "SegmentPredictor": "latency_models._segments",
    "SegmentSummary": "latency_models._segments",
    "WorkloadModel": "latency_models._profile",
    "accuracy_metrics": "latency_models._evaluate",
    "check_offgrid_share": "latency_models._profile",
    "check_kernel_share": "latency_models._profile",
    "OFFGRID_SHARE": "latency_models._profile",
    "KERNEL_SHARE": "latency_models._profile",
    "evaluate": "latency_models._evaluate",
    "family": "latency_models._features",
    "fit_beside": "latency_models._report",
    "floor_note": "latency_models._floor",
    "kernel_graph": "latency_models._microgen",
    "kernels_from_onnx": "latency_models._onnx_graph",
    "measure_interleaved": "latency_models._protocol",
    "measure_models": "latency_models._profile",
    "measure_onnx": "latency_models._measure",
    "nchwc_layout": "latency_models._layout",
    "layout_state": "latency_models._layout",
    "noise_floor": "latency_models._floor",
    "offgrid_variants": "latency_models._profile",
    "profile": "latency_models._profile",
    "profile_models": "latency_models._profile",
    "reference_model": "latency_models._protocol",
    "profile_workload": "latency_models._workload",
    "read_workload": "latency_models._workload",
    "write_workload": "latency_models._workload",
    "Timing": "latency_models._protocol",
    "spearman": "latency_models._evaluate",
    "state_gap": "latency_models._evaluate",
    "state_gap_note": "latency_models._evaluate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'latency_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
