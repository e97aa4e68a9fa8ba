"""``python -m search``: the command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("python -m search: the search is not implemented yet (see issue 5); nothing was run.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
