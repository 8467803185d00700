"""S11: an error the feed does not know to be transient is fatal; the known transients are not."""

from __future__ import annotations

import pytest
import trio

from trio_feed import ConnectionClosed, ProtocolError
from trio_feed.feed._link import is_fatal


@pytest.mark.parametrize(
    "error",
    [KeyError("a bug"), RuntimeError("a bug"), TypeError("a misconfiguration")],
    ids=["KeyError", "RuntimeError", "TypeError"],
)
def test_an_unknown_error_is_fatal(error: Exception) -> None:
    assert is_fatal(error)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionClosed(1006, "abnormal"),
        ConnectionClosed(1011, "server error"),
        ProtocolError("masked frame", 1002),
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        trio.BrokenResourceError("transport failed"),
        trio.TooSlowError(),
    ],
    ids=["1006", "1011", "protocol", "refused", "reset", "broken", "timeout"],
)
def test_a_transient_error_is_not_fatal(error: Exception) -> None:
    assert not is_fatal(error)
