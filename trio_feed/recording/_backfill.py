"""``record(..., backfill=...)``: what a recording's trade gaps skipped, fetched and marked.

The recorder writes frames, not events, so its back-fill works on the
payloads: it watches the ids of the ``trade`` and ``aggTrade`` streams it
records and, when one jumps, fetches the skipped range from the REST trade
history (the same endpoints, weights and budget as the feed's back-fill:
``trio_feed.feed._backfill``) and writes each fetched trade as the payload
the stream would have sent, in its envelope, on a line marked
``"backfilled": true``.  The lines come after the line that revealed the gap
(the file stays in receive order); ``trio-feed stats`` counts, per stream,
the ids of its gaps that such lines filled and the ids left missing, and
``trio-feed replay`` skips them (a replay sends what the connection
received).

Each fill is bounded as the feed's are: ``retries`` failed requests in a
row, ``timeout`` seconds from the gap, waits for the weight budget included.
When the recording stops, the fills still running get what is left of their
``timeout`` to finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
import trio

from .._errors import lone_exception
from ..binance._limits import SPOT, Venue
from ..rest._budget import WeightBudget
from ..rest._history import HistoryCounters, fetch_history
from ._format import encode_record

__all__ = ["RecordingBackfill"]

logger = logging.getLogger("trio_feed")

#: The id key of a stream payload, by kind.
_ID_KEY = {"trade": "t", "aggTrade": "a"}


class _Writer(Protocol):
    def write_lines(self, lines: list[bytes]) -> None: ...


def _payload(kind: str, symbol: str, row: dict[str, Any]) -> dict[str, Any]:
    """The stream's payload for one REST history row (``E`` is the trade time)."""
    if kind == "aggTrade":
        return {"e": "aggTrade", "E": row["T"], "s": symbol, "a": row["a"], "p": row["p"],
                "q": row["q"], "f": row["f"], "l": row["l"], "T": row["T"], "m": row["m"]}
    return {"e": "trade", "E": row["time"], "s": symbol, "t": row["id"], "p": row["price"],
            "q": row["qty"], "T": row["time"], "m": row["isBuyerMaker"]}


class RecordingBackfill:
    """What :func:`~trio_feed.recording.record` needs to fill a recording's trade gaps.

    ``rest_url`` is the REST base URL; ``budget`` the weight budget to charge
    (by default one of ``venue.weight_limit``).  The counters say what it did:
    ``gaps`` seen, ids ``filled`` and ``left``, and in ``counters`` the REST
    requests and their weight.
    """

    def __init__(self, rest_url: str, *, venue: Venue = SPOT, budget: WeightBudget | None = None,
                 timeout: float = 30.0, retries: int = 5) -> None:
        self.rest_url = rest_url
        self.venue = venue
        self.budget = budget if budget is not None else WeightBudget(venue.weight_limit)
        self.timeout = timeout
        self.retries = retries
        self.gaps = self.filled = self.left = 0
        #: REST requests sent, failed, answered 429/418, and the weight they had admitted.
        self.counters = HistoryCounters()
        self._last: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        self._writer: _Writer | None = None
        self._client: Any = None

    @asynccontextmanager
    async def running(self, writer: _Writer) -> AsyncIterator[None]:
        """Fill gaps into ``writer`` while the block runs, then let the last fills finish."""
        from ..rest._client import RestClient  # httpx only when asked for

        self._writer = writer
        self._client = RestClient(self.rest_url, self.budget)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                yield
                self._nursery = None  # no new fills; the running ones end by their timeout
        except BaseExceptionGroup as group:  # the recording's own error, not wrapped
            leaf = lone_exception(group)
            raise leaf from leaf.__cause__
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._client.aclose()

    def observe(self, stream: str | None, text: str) -> None:
        """Look at one recorded text payload (in its envelope when ``stream`` is known)."""
        if stream is None:
            return
        kind = stream.rpartition("@")[2]
        key = _ID_KEY.get(kind)
        if key is None:
            return
        try:
            data = orjson.loads(text).get("data")
            ident = data[key]
            symbol = data["s"]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return
        if type(ident) is not int:
            return
        last = self._last.get(stream)
        self._last[stream] = ident
        if last is None or ident <= last + 1:
            return
        self.gaps += 1
        if self._nursery is None or (kind == "trade" and self.venue.trades_need_key):
            self.left += ident - last - 1
            return
        self._nursery.start_soon(self._fill, stream, kind, symbol, last + 1, ident - 1)

    async def _fill(self, stream: str, kind: str, symbol: str, first: int, last: int) -> None:
        filled = 0

        def lines(rows: list[dict[str, Any]]) -> list[bytes]:
            t = time.time_ns()
            try:
                return [_line(t, stream, _payload(kind, symbol, row)) for row in rows]
            except KeyError as exc:
                raise ValueError(f"a trade history row without {exc}") from None

        def write(batch: list[bytes]) -> None:
            nonlocal filled
            assert self._writer is not None
            self._writer.write_lines(batch)
            filled += len(batch)

        with trio.move_on_after(self.timeout):
            await fetch_history(self._client, self.venue, kind, symbol, first, last, lines,
                                write, retries=self.retries, counters=self.counters)
        self.filled += filled
        self.left += last - first + 1 - filled
        if filled < last - first + 1:
            logger.warning("%s: %d of ids %d-%d could not be back-filled", stream,
                           last - first + 1 - filled, first, last)


def _line(t: int, stream: str, payload: dict[str, Any]) -> bytes:
    raw = orjson.dumps({"stream": stream, "data": payload}).decode()
    return encode_record(t, stream, raw, backfilled=True)
