"""``python -m latency_models profile | measure | evaluate``."""

from __future__ import annotations

import os

# Pin numeric libraries to one thread before numpy (or torch, via the spaces) loads: on a shared machine
# their thread pools slow the exporter and the fits down and disturb the timings of the other cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from latency_models._cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
