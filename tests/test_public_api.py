"""The public surface is deliberate: each namespace's ``__all__`` changes only on purpose.

For every public namespace the test checks that ``__all__`` is exactly the
expected set, that every name in it can be imported, that every exception class
it exports is a :class:`~trio_feed.TrioFeedError` drawn in ``_errors.py``'s
tree, and that the public functions and classes it exports are defined in (or
re-exported by) a public namespace, so that nobody gets a private type by
calling a public function.
"""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

import trio_feed

EXPECTED: dict[str, set[str]] = {
    "trio_feed": {
        "BorrowError", "Connection", "ConnectionClosed", "ConnectionContext",
        "ConnectionStatistics",
        "DecodeError",
        "Decoder", "Event", "Feed", "FeedStatistics", "HandshakeError", "InvalidStreamName",
        "MessageTooBig", "PipelineCounters", "PipelineStatistics", "ProtocolError", "Stream",
        "SubscriptionError", "TrioFeedError", "format_event", "open_connection", "open_feed",
        "parse_stream", "run_channel", "run_inline",
        "DEFAULT_REST_URL", "OrderBook", "OrderBooks", "OrderBooksStatistics", "SnapshotError",
        "WeightBudget", "open_order_books", "RateLimited", "RecordingError",
        "RequestTimeout", "InvalidSymbol", "AttemptLimiter", "SlowConsumerError",
        "SlowConsumerPolicy", "StreamStatistics", "RestError",
    },
    "trio_feed.feed": {
        "AttemptLimiter", "Feed", "FeedStatistics", "SlowConsumerPolicy", "StreamStatistics",
        "open_feed",
    },
    "trio_feed.books": {
        "DEFAULT_REST_URL", "InvalidSymbol", "OrderBooks", "OrderBooksStatistics", "RateLimited",
        "SnapshotError",
        "WeightBudget", "open_order_books",
    },
    "trio_feed.recording": {
        "ReadReport", "Record", "RecordCounters", "RecordStatistics", "RecordingError",
        "RecordingWriter", "compute_stats", "encode_record", "read_recording", "record",
        "stream_of", "unwrap", "RecordingBackfill",
    },
    "trio_feed.cli": {"build_parser", "describe", "main"},
    "trio_feed.bridge": {"BridgeStatistics", "FeedThread", "feed_thread"},
    "trio_feed.broker": {
        "SCHEMA_VERSION", "BrokerError", "DroppedRange", "Gap", "LocalCluster", "LocalServer",
        "RedisFeed", "RedisFeedStatistics", "RedisSink", "SchemaError", "SinkClosed",
        "SinkPolicy", "SinkStatistics", "control_key", "free_port", "local_cluster",
        "local_server", "open_redis_feed", "open_redis_sink", "publish", "snapshot_key",
        "stream_key",
    },
}

# Namespaces whose exact list is guarded by their own snapshot below, read from
# the module so that the test fails when a name is added or dropped by accident.
SNAPSHOT_NAMESPACES = ["trio_feed.wire", "trio_feed.binance", "trio_feed.exchange",
                       "trio_feed.testing"]
SNAPSHOTS: dict[str, int] = {
    "trio_feed.wire": 19,
    "trio_feed.binance": 50,
    "trio_feed.exchange": 19,
    "trio_feed.testing": 13,
}

PUBLIC = [*EXPECTED, *SNAPSHOT_NAMESPACES]


def _public_module(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


@pytest.mark.parametrize("namespace", list(EXPECTED))
def test_public_names(namespace: str) -> None:
    module = importlib.import_module(namespace)
    assert set(module.__all__) == EXPECTED[namespace]
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"


@pytest.mark.parametrize("namespace", SNAPSHOT_NAMESPACES)
def test_namespace_sizes_change_only_on_purpose(namespace: str) -> None:
    module = importlib.import_module(namespace)
    assert len(set(module.__all__)) == SNAPSHOTS[namespace], sorted(module.__all__)


@pytest.mark.parametrize("namespace", PUBLIC)
def test_every_listed_name_is_importable(namespace: str) -> None:
    module = importlib.import_module(namespace)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{namespace}.{name}"


@pytest.mark.parametrize("namespace", PUBLIC)
def test_every_exported_exception_is_in_the_tree(namespace: str) -> None:
    module = importlib.import_module(namespace)
    tree = inspect.getdoc(importlib.import_module("trio_feed._errors")) or ""
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, trio_feed.TrioFeedError), f"{namespace}.{name}"
            assert value.__module__ == "trio_feed._errors", f"{name} lives outside _errors.py"
            assert name in tree, f"{name} is not drawn in _errors.py's tree"


def test_every_error_class_in_the_package_is_a_trio_feed_error() -> None:
    errors = importlib.import_module("trio_feed._errors")
    for name in errors.__all__:
        value = getattr(errors, name)
        assert issubclass(value, trio_feed.TrioFeedError), name
    assert issubclass(trio_feed.MessageTooBig, trio_feed.ProtocolError)
    assert issubclass(trio_feed.InvalidStreamName, ValueError)


def _public_types() -> set[type]:
    found: set[type] = set()
    for namespace in PUBLIC:
        module = importlib.import_module(namespace)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type):
                found.add(value)
    return found


@pytest.mark.parametrize("namespace", PUBLIC)
def test_public_callables_return_public_types(namespace: str) -> None:
    """A public function's annotated return type is public (or a builtin / typing form)."""
    module = importlib.import_module(namespace)
    public = _public_types()
    wrong = []
    for name in module.__all__:
        value = getattr(module, name)
        if not inspect.isfunction(value):
            continue
        hints = typing.get_type_hints(value)
        ret = hints.get("return")
        for candidate in _classes_in(ret):
            mod = candidate.__module__
            if mod.startswith("trio_feed") and candidate not in public:
                wrong.append(f"{namespace}.{name} returns {mod}.{candidate.__qualname__}")
    assert not wrong, "\n".join(wrong)


def _classes_in(annotation: object) -> list[type]:
    if annotation is None:
        return []
    if isinstance(annotation, type):
        return [annotation]
    found: list[type] = []
    for arg in typing.get_args(annotation):
        found.extend(_classes_in(arg))
    origin = typing.get_origin(annotation)
    if isinstance(origin, type):
        found.append(origin)
    return found


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    assert trio_feed.__version__ == version("trio_feed")
    assert trio_feed.__version__[0].isdigit()
