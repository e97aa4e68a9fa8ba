"""The job: search compressed models under a latency budget measured on a device."""

from __future__ import annotations

__all__: list[str] = []
