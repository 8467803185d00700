"""The terminal: event lines on stdout, notes and a live status region on stderr.

A long-running command (``stream``, ``record``, ``replay``) shows a few lines
of status at the bottom of the terminal, redrawn about twice a second.  The
region is drawn on stderr only when stderr is a terminal, and never with
``--json`` or ``--no-status``: piped or redirected output never holds a
status line or an escape code (stdout never does, in any case).

Nothing is written beside the region.  When stdout is a terminal too (so
both share the screen), every write to stdout is preceded by erasing the
region and followed by redrawing it, and every note (a warning, ``-v``'s
log lines) goes through :meth:`Screen.note`, which does the same on stderr.
So an event line is always whole, on a line of its own, and the region
stays below the last one.  (This is what ``rich``'s Live display does for
lines printed through its console; it is done by hand here because the
events must stay on stdout, unchanged and unwrapped, while the region is on
stderr, and because redrawing a few short lines costs little enough to do
after each event.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TextIO

import trio

__all__ = ["PROG", "Rates", "Screen", "ScreenLogHandler", "pack", "size_text", "status_region"]

PROG = "trio-feed"
#: Seconds between redraws of the status region.
STATUS_INTERVAL = 0.5
#: The region never takes more rows than this.
MAX_STATUS_LINES = 4
_ERASE_LINE = "\r\x1b[2K"
_UP_AND_ERASE = "\x1b[1A\x1b[2K"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Screen:
    """Where a command writes: see the module docstring.

    ``status=False`` (or a stderr that is not a terminal, or ``TERM=dumb``)
    turns the region off; everything else still goes through the screen.
    """

    def __init__(self, *, status: bool, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.status_enabled = (status and _is_terminal(self.err)
                               and os.environ.get("TERM") != "dumb")
        #: stdout and the region share the screen: erase before each write to stdout.
        self.shared = self.status_enabled and _is_terminal(self.out)
        self._lines: list[str] = []
        self._drawn = 0

    # -- the region --------------------------------------------------------------

    def width(self) -> int:
        try:
            return max(20, os.get_terminal_size(self.err.fileno()).columns)
        except (OSError, ValueError, AttributeError):
            return 80

    def _erase(self) -> None:
        if self._drawn:
            self.err.write(_ERASE_LINE + _UP_AND_ERASE * (self._drawn - 1))
            self._drawn = 0

    def _draw(self) -> None:
        if self._lines:
            self.err.write("\n".join(self._lines))
            self._drawn = len(self._lines)

    def show(self, lines: Iterable[str]) -> None:
        """Replace the region with ``lines`` (cut to the terminal's width)."""
        if not self.status_enabled:
            return
        # One column short of the width: a full row would leave the cursor
        # past the edge, and the next erase would miss a wrapped row.
        width = self.width() - 1
        fitted = []
        for line in list(lines)[:MAX_STATUS_LINES]:
            fitted.append(line if len(line) <= width else line[: width - 1] + "…")
        self._erase()
        self._lines = fitted
        self._draw()
        self.err.flush()

    def clear(self) -> None:
        """Erase the region for good (the command is ending)."""
        if self._drawn:
            self._erase()
            self.err.flush()
        self._lines = []

    # -- writing beside it ----------------------------------------------------------

    def write(self, text: str) -> None:
        """Write event text (whole lines) to stdout."""
        if self.shared and self._drawn:
            self._erase()
            self.err.flush()
            self.out.write(text)
            self.out.flush()
            self._draw()
            self.err.flush()
        else:
            self.out.write(text)
            self.out.flush()

    def write_bytes(self, data: bytes) -> None:
        """Write encoded event lines (``--json``) to stdout."""
        self.out.flush()
        if self.shared and self._drawn:
            self._erase()
            self.err.flush()
            self.out.buffer.write(data)
            self.out.buffer.flush()
            self._draw()
            self.err.flush()
        else:
            self.out.buffer.write(data)
            self.out.buffer.flush()

    def note(self, text: str) -> None:
        """One line on stderr, ``trio-feed: <text>``, above the region."""
        if self._drawn:
            self._erase()
            self.err.write(f"{PROG}: {text}\n")
            self._draw()
        else:
            self.err.write(f"{PROG}: {text}\n")
        self.err.flush()


class ScreenLogHandler(logging.Handler):
    """Log records as notes, so that they never land inside the status region."""

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.screen.note(self.format(record))
        except Exception:  # a handler must not raise (logging's own rule)
            self.handleError(record)


@contextlib.asynccontextmanager
async def status_region(screen: Screen, render: Callable[[float], list[str]],
                        *, interval: float = STATUS_INTERVAL) -> AsyncIterator[None]:
    """Redraw ``render(seconds since the last call)`` every ``interval`` s while the block runs.

    ``render`` is called once at once, so the region shows from the start.
    The region is erased when the block ends, however it ends.
    """
    if not screen.status_enabled:
        yield
        return

    async def redraw() -> None:
        last = time.monotonic()
        screen.show(render(0.0))
        while True:
            await trio.sleep(interval)
            now = time.monotonic()
            screen.show(render(now - last))
            last = now

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(redraw)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    finally:
        screen.clear()


class Rates:
    """Per-second rates of growing counters, between two calls (keyed by name)."""

    def __init__(self) -> None:
        self._previous: dict[str, int] = {}
        self._rates: dict[str, float] = {}

    def __call__(self, key: str, total: int, seconds: float) -> float:
        """The rate of ``total`` since the last call for ``key`` (the last rate if no time
        passed)."""
        previous = self._previous.get(key, 0)  # a counter first seen grew from 0
        self._previous[key] = total
        if seconds > 0:
            self._rates[key] = (total - previous) / seconds
        return self._rates.get(key, 0.0)


def size_text(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def pack(items: list[str], *, width: int, rows: int, indent: str = "  ") -> list[str]:
    """``items`` joined with two spaces into at most ``rows`` lines of ``width``, then "+N more"."""
    lines: list[str] = []
    current = indent
    for index, item in enumerate(items):
        candidate = item if current == indent else f"  {item}"
        if len(current) + len(candidate) <= width or current == indent:
            current += candidate
            continue
        lines.append(current)
        if len(lines) == rows:
            lines[-1] += f"  +{len(items) - index} more"
            return lines
        current = indent + item
    if current != indent:
        lines.append(current)
    return lines
