"""Compression operators for any ``torch.fx``-traceable CNN: pruning, sparsity, low rank, quantisation, export.

Usable on their own, on a model you bring (this subpackage imports nothing else of karumi)::

    from spaces.compress import prune_structured, prepare_qat, calibrate, export_onnx_quantized

- structured pruning with pluggable importance criteria (:func:`prune_structured`, :class:`Importance`,
  :func:`register_importance`), dependency-aware: coupled channels are removed together;
- unstructured magnitude sparsity and its storage (:func:`prune_unstructured`, :func:`sparsity_report`),
  one-shot, gradual and lottery-ticket schedules (:func:`gradual_prune`);
- low rank: truncated SVD of 1x1 convolutions and linear layers (:func:`factorize_lowrank`);
- Deep Compression: trained weight sharing (k-means, fine-tuned centroids), a Huffman-coded file with a loader
  that restores the weights exactly, and the size of that file (:func:`share_weights`,
  :func:`save_compressed`, :func:`load_compressed`, :func:`compressed_size_bytes`);
- activation sparsity: zeros after each ReLU and the MACs a zero-skipping runtime could save
  (:func:`activation_sparsity`; ONNX Runtime on a CPU does not skip them);
- quantisation: BatchNorm folding, fake quantisation for QAT and PTQ calibration (1, 2, 4, 8, 16 bits:
  binary and ternary weights run as int8 in ONNX Runtime), and the QDQ ONNX export that ONNX Runtime runs
  as real int8 (:func:`fold_batchnorm`, :func:`prepare_qat`, :func:`calibrate`,
  :func:`export_onnx_quantized`), plus the plain float export (:func:`export_onnx`).

``torch`` is imported when an operator runs, not when this package is imported.
"""

from __future__ import annotations

from spaces.compress._activation import ACTIVATION_SPARSITY_NOTE, activation_sparsity
from spaces.compress._deep import (
    SHARE_BITS,
    compressed_size_bytes,
    compression_report,
    load_compressed,
    save_compressed,
    share_weights,
    shared_layers,
    strip_sharing,
)
from spaces.compress._export import export_onnx
from spaces.compress._lowrank import factorize_lowrank, lowrank_eligible
from spaces.compress._prune import (
    PRUNE_RATIO_MAX,
    Importance,
    list_importances,
    prune_groups,
    prune_structured,
    register_importance,
)
from spaces.compress._quant import (
    QUANT_BITS,
    act_quantizers,
    calibrate,
    export_onnx_quantized,
    fold_batchnorm,
    prepare_qat,
    quantized_layers,
)
from spaces.compress._sparse import gradual_prune, prune_unstructured, sparsity_report

__all__ = [
    "ACTIVATION_SPARSITY_NOTE",
    "PRUNE_RATIO_MAX",
    "QUANT_BITS",
    "SHARE_BITS",
    "Importance",
    "act_quantizers",
    "activation_sparsity",
    "calibrate",
    "compressed_size_bytes",
    "compression_report",
    "export_onnx",
    "export_onnx_quantized",
    "factorize_lowrank",
    "fold_batchnorm",
    "gradual_prune",
    "list_importances",
    "load_compressed",
    "lowrank_eligible",
    "prepare_qat",
    "prune_groups",
    "prune_structured",
    "prune_unstructured",
    "quantized_layers",
    "register_importance",
    "save_compressed",
    "share_weights",
    "shared_layers",
    "sparsity_report",
    "strip_sharing",
]
