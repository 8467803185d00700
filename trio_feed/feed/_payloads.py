"""Events with the frames they came from: ``open_feed(..., payloads=True)``.

A consumer that forwards what it receives (the Redis sink writes the frames
exactly as Binance sent them) needs each event's payload, not only the event.
In channel mode the feed owns every payload as ``bytes`` anyway (the copy
strategy), so keeping it costs a reference, not a copy.  With
``payloads=True`` the feed's pending queue is a :class:`PayloadQueue`: each
event goes in with its payload, and taking the event out takes the payload
with it, into :attr:`PayloadQueue.last` (``Feed.last_payload``).  Only
events that pass continuity are kept, so the frames line up with the events
handed out, duplicates dropped from both.  A feed without ``payloads`` keeps
a plain ``deque`` and pays nothing for this.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["PayloadQueue"]


class PayloadQueue(deque[Any]):
    """The pending events of a feed that keeps payloads; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        #: The payload of each event still pending, in the same order.
        self.payloads: deque[bytes] = deque()
        #: The payload of the event most recently taken out; ``None`` before the first.
        self.last: bytes | None = None

    def push(self, event: Any, payload: bytes) -> None:
        """Queue ``event`` with the ``payload`` it was decoded from."""
        self.append(event)
        self.payloads.append(payload)

    def popleft(self) -> Any:
        event = super().popleft()
        self.last = self.payloads.popleft()
        return event

    def clear(self) -> None:
        super().clear()
        self.payloads.clear()
