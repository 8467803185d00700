"""The broker is optional: ``import trio_feed`` does not import coredis."""

from __future__ import annotations

import subprocess
import sys

import trio_feed.broker


def test_importing_trio_feed_does_not_import_coredis() -> None:
    code = ("import sys, trio_feed, trio_feed.exchange; "
            "print('coredis' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_broker_public_names() -> None:
    names = trio_feed.broker.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(trio_feed.broker, name), name
    assert {"open_redis_sink", "open_redis_feed", "publish", "Gap", "SinkPolicy",
            "local_server", "stream_key"} <= set(names)
