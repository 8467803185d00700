"""Binance-shaped payloads for scripted scenarios: only the fields a test cares about vary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..exchange import EPOCH_MS

__all__ = ["book_ticker", "depth_update", "trade"]


def trade(
    symbol: str,
    trade_id: int,
    *,
    price: str = "100.00000000",
    quantity: str = "1.00000000",
    event_time: int | None = None,
    trade_time: int | None = None,
    buyer_is_maker: bool = False,
) -> dict[str, Any]:
    """A spot ``@trade`` payload.  Times default to ``EPOCH_MS + trade_id``."""
    event_time = EPOCH_MS + trade_id if event_time is None else event_time
    return {
        "e": "trade", "E": event_time, "s": symbol.upper(), "t": trade_id, "p": price,
        "q": quantity, "T": event_time if trade_time is None else trade_time,
        "m": buyer_is_maker, "M": True,
    }


def depth_update(
    symbol: str,
    first_update_id: int,
    final_update_id: int,
    *,
    bids: Sequence[tuple[str, str]] = (),
    asks: Sequence[tuple[str, str]] = (),
    event_time: int | None = None,
) -> dict[str, Any]:
    """A spot ``@depth`` payload covering update ids ``first..final`` (``U``, ``u``)."""
    return {
        "e": "depthUpdate",
        "E": EPOCH_MS + final_update_id if event_time is None else event_time,
        "s": symbol.upper(), "U": first_update_id, "u": final_update_id,
        "b": [list(level) for level in bids], "a": [list(level) for level in asks],
    }


def book_ticker(
    symbol: str,
    update_id: int,
    *,
    bid: tuple[str, str] = ("99.00000000", "1.00000000"),
    ask: tuple[str, str] = ("101.00000000", "1.00000000"),
) -> dict[str, Any]:
    """A spot ``@bookTicker`` payload (no ``e``, no ``E``, as Binance sends it)."""
    return {"u": update_id, "s": symbol.upper(), "b": bid[0], "B": bid[1],
            "a": ask[0], "A": ask[1]}
