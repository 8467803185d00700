"""What the feed's hot path knows of the back-fill without importing it.

The back-fill (``trio_feed.feed._backfill``) pulls in REST history parsing
and its own event classes, which a feed without ``backfill=True`` never uses;
``import trio_feed`` does not load it.  The feed still needs, at import, the
defaults of ``open_feed``'s back-fill bounds, and in its consumer's hot path
the type of the batches a fill puts in the outbox.  They live here.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_BACKFILL_RETRIES",
    "DEFAULT_BACKFILL_TIMEOUT",
    "DEFAULT_MAX_BACKFILL_HOLD",
    "DEFAULT_MAX_BACKFILL_IDS",
    "Refill",
]

#: Seconds a stream may be held for one gap before what is not fetched is given up.
DEFAULT_BACKFILL_TIMEOUT = 30.0
#: Events one stream may hold while its fill runs.
DEFAULT_MAX_BACKFILL_HOLD = 100_000
#: A gap of more ids than this is not fetched (reported missing at once).
DEFAULT_MAX_BACKFILL_IDS = 100_000
#: Failed requests in a row, per fill, before the rest of the gap is given up.
DEFAULT_BACKFILL_RETRIES = 5


class Refill(list[Any]):
    """A batch the back-fill puts in the outbox: a fill's events, then the events it held."""

    __slots__ = ("filled", "state")

    def __init__(self, state: Any, filled: int) -> None:
        super().__init__()
        #: The stream's fill state (``trio_feed.feed._backfill``).
        self.state = state
        self.filled = filled
