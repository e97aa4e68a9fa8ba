"""Where the search caches what it computes once per machine: teachers, device tables, data sets."""

from __future__ import annotations

import os
import pathlib

__all__ = ["cache_dir"]


def cache_dir() -> pathlib.Path:
    """``$KARUMI_CACHE`` if set, else ``~/.cache/karumi`` (created on first use by whoever writes)."""
    env = os.environ.get("KARUMI_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "karumi"
