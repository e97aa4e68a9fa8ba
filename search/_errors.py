"""The error the search raises for bad user input (the CLI turns it into one line and exit code 2)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: a bad option, a missing file, a table that does not fit the space.

    The message is one line naming the option, the value and what is allowed or expected. Raised before
    anything is written to the output folder.
    """
