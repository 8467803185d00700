"""The public surface is deliberate: this list changes only on purpose."""

from __future__ import annotations

import trio_feed

EXPECTED = {
    "BorrowError", "Connection", "ConnectionClosed", "ConnectionStatistics", "DecodeError",
    "Decoder", "Event", "Feed", "FeedStatistics", "HandshakeError", "InvalidStreamName",
    "MessageTooBig", "PipelineCounters", "PipelineStatistics", "ProtocolError", "Stream",
    "SubscriptionError", "TrioFeedError", "format_event", "open_connection", "open_feed",
    "parse_stream", "run_channel", "run_inline",
    "DEFAULT_REST_URL", "OrderBook", "OrderBooks", "OrderBooksStatistics", "SnapshotError",
    "WeightBudget", "open_order_books",
    "AttemptLimiter", "SlowConsumerError", "SlowConsumerPolicy", "StreamStatistics",
}


def test_public_names() -> None:
    assert set(trio_feed.__all__) == EXPECTED
    for name in trio_feed.__all__:
        assert getattr(trio_feed, name) is not None


def test_every_error_is_a_trio_feed_error() -> None:
    for name in ("BorrowError", "ConnectionClosed", "DecodeError", "HandshakeError",
                 "InvalidStreamName", "MessageTooBig", "ProtocolError", "SubscriptionError",
                 "SnapshotError", "SlowConsumerError"):
        assert issubclass(getattr(trio_feed, name), trio_feed.TrioFeedError)
    assert issubclass(trio_feed.MessageTooBig, trio_feed.ProtocolError)
    assert issubclass(trio_feed.InvalidStreamName, ValueError)


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    assert trio_feed.__version__ == version("trio_feed")
    assert trio_feed.__version__[0].isdigit()
