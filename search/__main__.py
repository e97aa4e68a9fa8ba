"""``python -m search``: the command line (see ``python -m search --help``)."""

from __future__ import annotations

import sys

from search._cli import main

if __name__ == "__main__":
    sys.exit(main())
