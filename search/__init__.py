"""The job: search compressed models under a latency budget measured on a device."""

from __future__ import annotations

from search._distill import distill_train, hint_loss, kd_loss
from search._errors import InputError
from search._objective import SearchContext, TrialResult, evaluate_candidate
from search._proxy import ProxyEvaluator
from search._run import SearchResult, run

__all__: list[str] = [
    "InputError",
    "ProxyEvaluator",
    "SearchContext",
    "SearchResult",
    "TrialResult",
    "distill_train",
    "evaluate_candidate",
    "hint_loss",
    "kd_loss",
    "run",
]
