"""Search spaces: what can be searched, and how a candidate becomes a model.

``torch`` is imported only when a model is built, so candidates, kernels and statistics work without it.
"""

from __future__ import annotations

from spaces._base import PRUNE_RATIO_MAX, SearchSpace, SpaceStats
from spaces._candidate import Candidate
from spaces._onnx import export_onnx
from spaces._registry import get_space, list_spaces, register_space

__all__ = [
    "PRUNE_RATIO_MAX",
    "Candidate",
    "SearchSpace",
    "SpaceStats",
    "export_onnx",
    "get_space",
    "list_spaces",
    "register_space",
]
