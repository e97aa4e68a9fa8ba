"""Search spaces: what can be searched, and how a candidate becomes a model.

``torch`` is imported only when a model is built, so candidates, kernels and statistics work without it.
"""

from __future__ import annotations

from spaces._base import PRUNE_RATIO_MAX, SEARCH_PARTS, Layer, SearchSpace, SpaceStats
from spaces._candidate import Candidate
from spaces._onnx import export_onnx
from spaces._lowrank import factorize_lowrank
from spaces._prune import Importance, prune_structured, register_importance
from spaces._quant import QUANT_BITS, calibrate, export_onnx_quantized, fold_batchnorm, prepare_qat
from spaces._registry import get_space, list_spaces, register_space
from spaces._sparse import gradual_prune, prune_unstructured, sparsity_report

__all__ = [
    "PRUNE_RATIO_MAX",
    "QUANT_BITS",
    "SEARCH_PARTS",
    "Candidate",
    "Importance",
    "Layer",
    "SearchSpace",
    "SpaceStats",
    "calibrate",
    "export_onnx_quantized",
    "export_onnx",
    "factorize_lowrank",
    "fold_batchnorm",
    "get_space",
    "gradual_prune",
    "list_spaces",
    "prepare_qat",
    "prune_structured",
    "prune_unstructured",
    "register_importance",
    "register_space",
    "sparsity_report",
]
