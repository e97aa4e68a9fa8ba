"""Search spaces: what can be searched, and how a candidate becomes a model.

A :class:`Candidate` is plain data; its space decodes it into a plan, from which come its kernels (for the
latency predictor), its quantised layers and its ``torch.nn.Module``. ``torch`` is imported only when a
model is built, so candidates, kernels and statistics work without it. The compression operators the
spaces use are in :mod:`spaces.compress`, usable on any CNN.
"""

from __future__ import annotations

from spaces._base import PRUNE_RATIO_MAX, PRUNE_RATIO_STEP, SEARCH_BITS, SEARCH_PARTS, Architecture, Layer, SearchSpace, SpaceStats, StudentSpace, Suggest
from spaces._candidate import Candidate
from spaces._compiled import CompiledLatency
from spaces._registry import get_space, list_spaces, opt_in_genes, register_space

# The built-in spaces register themselves when their modules are imported.
from spaces._fbnet import FBNET_OPS, FBNetSpace
from spaces._mobilenet import MobileNetSpace
from spaces._prune_space import PruneSpace, builtin_teacher
from spaces._shufflenet import ShuffleNetSpace
from spaces._supernet import SUPERNET_SPACES, Supernet, supports_supernet

__all__ = [
    "FBNET_OPS",
    "PRUNE_RATIO_MAX",
    "PRUNE_RATIO_STEP",
    "SEARCH_BITS",
    "SEARCH_PARTS",
    "Architecture",
    "Candidate",
    "CompiledLatency",
    "FBNetSpace",
    "Layer",
    "MobileNetSpace",
    "PruneSpace",
    "SearchSpace",
    "ShuffleNetSpace",
    "SUPERNET_SPACES",
    "SpaceStats",
    "StudentSpace",
    "Supernet",
    "Suggest",
    "builtin_teacher",
    "get_space",
    "list_spaces",
    "opt_in_genes",
    "register_space",
    "supports_supernet",
]
