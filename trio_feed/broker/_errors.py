"""The broker's errors: subclasses of :class:`~trio_feed.TrioFeedError`."""

from __future__ import annotations

from .._errors import TrioFeedError

__all__ = ["BrokerError", "SchemaError", "SinkClosed"]


class BrokerError(TrioFeedError):
    """Something the broker layer refused or could not do."""


class SchemaError(BrokerError, ValueError):
    """An entry read from the broker has a schema version or format this reader does not know."""


class SinkClosed(BrokerError):
    """:meth:`RedisSink.send` after the sink was closed (or its writer task failed)."""
