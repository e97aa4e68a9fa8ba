"""Imports the modules that register the built-in spaces."""

from __future__ import annotations

import spaces._fbnet  # noqa: F401  (registers "fbnet")
