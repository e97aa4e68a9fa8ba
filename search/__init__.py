"""The job: search compressed models under a latency budget measured on a device."""

from __future__ import annotations

from search._distill import distill_train, hint_loss, kd_loss
from search._proxy import ProxyEvaluator

__all__: list[str] = ["ProxyEvaluator", "distill_train", "hint_loss", "kd_loss"]
