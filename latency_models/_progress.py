"""`Progress`: how every karumi command line shows progress, on a terminal and in a log file.

On a terminal it is a tqdm bar (when tqdm is installed). When the stream is not a terminal (CI, ``nohup``,
a Kubernetes pod, a Ray job) it writes one plain line at the start, at most one every ``interval_s``
seconds (done/total, rate, ETA) and one at the end: never a carriage-return stream, so a redirected log
stays a few short lines per phase.

Nothing is shown until the first unit of progress: a phase that turns out to have nothing to do (a
teacher read from the cache) leaves no trace. Library functions never draw progress themselves: they take an ``on_progress(done, total, message)``
callback, and the command lines hand them :meth:`Progress.report`. It lives in ``latency_models``, the
one package every karumi command can import, the torch-free device side included.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress display of ``total`` units (``None``: unknown total).

    Args:
        total: units of work, or None.
        desc: what is being done, the first word of every line.
        unit: name of a unit (``"trial"``, ``"epoch"``, ``"s"``...).
        initial: units already done (a resumed run).
        enabled: False shows nothing (``-q``).
        stream: where to write (stderr by default); a terminal gets a bar, anything else plain lines.
        interval_s: least seconds between two plain lines.
    """

    def __init__(self, total: float | None, desc: str, *, unit: str = "it", initial: float = 0,
                 enabled: bool = True, stream: IO[str] | None = None, interval_s: float = 10.0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = float(initial)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.postfix = ""
        self._t0 = time.monotonic()
        self._initial = float(initial)
        self._last_line = self._t0
        self._bar: Any = None
        self._started = False
        self._closed = False

    def _start(self) -> None:
        """Show the display (on the first progress)."""
        self._started = True
        if _isatty(self.stream):
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, initial=self._initial, desc=self.desc, unit=self.unit,
                                 file=self.stream, dynamic_ncols=True, leave=True)
                return
            except ImportError:
                self._bar = None
        self._line("started")

    # ----------------------------------------------------------------- updates
    def update(self, n: float = 1, *, postfix: str | None = None) -> None:
        """``n`` more units done."""
        self.set(self.done + n, postfix=postfix)

    def set(self, done: float, *, postfix: str | None = None) -> None:
        """``done`` units done in all (time-based progress sets the seconds spent)."""
        if postfix is not None:
            self.postfix = postfix
        if self.total is not None:
            done = min(done, self.total)
        delta, self.done = done - self.done, done
        if not self.enabled or self._closed:
            return
        if not self._started:
            if delta <= 0 and postfix is None:
                return
            self._start()
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(delta)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._line()

    def report(self, done: float, total: float | None, message: str = "") -> None:
        """The ``on_progress(done, total, message)`` callback the library functions take."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        self.set(done, postfix=message or None)

    def close(self) -> None:
        """The final line (or the bar's last refresh)."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled or not self._started:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._line("done")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- plain lines
    def status(self) -> str:
        """``desc: done/total unit, rate, elapsed, ETA, postfix`` as one line."""
        elapsed = time.monotonic() - self._t0
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {_count(self.done)}" + (f"/{_count(self.total)}" if self.total is not None else "")
                 + f" {self.unit}"]
        if elapsed >= 1.0 and rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 0.1 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _line(self, tag: str = "") -> None:
        self._last_line = time.monotonic()
        text = self.status() + (f" ({tag})" if tag else "")
        self.stream.write(text + "\n")
        self.stream.flush()


def _count(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:.2g}"


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
