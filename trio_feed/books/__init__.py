"""Local order books kept in sync over REST snapshots: the only importer of httpx.

The pure book (Binance's update rules, exact prices) is :class:`trio_feed.binance.OrderBook`;
this package adds what needs I/O: depth snapshots fetched under a weight budget, and
:func:`open_order_books`, which drives books from a supervised feed.
"""

from ._books import (
    DEFAULT_REST_URL,
    InvalidSymbol,
    OrderBooks,
    OrderBooksStatistics,
    RateLimited,
    SnapshotError,
    WeightBudget,
    open_order_books,
)

__all__ = [
    "DEFAULT_REST_URL",
    "InvalidSymbol",
    "OrderBooks",
    "OrderBooksStatistics",
    "RateLimited",
    "SnapshotError",
    "WeightBudget",
    "open_order_books",
]
