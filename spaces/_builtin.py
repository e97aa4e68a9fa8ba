"""Imports the modules that register the built-in spaces."""

from __future__ import annotations

import spaces._fbnet  # noqa: F401  (registers "fbnet")
import spaces._mobilenet  # noqa: F401  (registers "mobilenet")
import spaces._shufflenet  # noqa: F401  (registers "shufflenet")
import spaces._prune_space  # noqa: F401  (registers "prune")
