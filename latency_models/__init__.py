"""Measure a device once, predict the latency of any candidate on it.

Needs only numpy, onnx and onnxruntime: importing this package never imports torch, so it runs on the
edge device itself.
"""

from __future__ import annotations

from latency_models._kernel import ACTIVATIONS, BITS, KERNEL_OPS, Kernel

__all__ = ["ACTIVATIONS", "BITS", "KERNEL_OPS", "Kernel"]
