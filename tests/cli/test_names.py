"""A bad stream name gets what would be right; ``--help`` lists every kind and every default."""

from __future__ import annotations

import inspect

import pytest

from trio_feed import open_feed, parse_stream
from trio_feed.binance import KINDS
from trio_feed.cli import build_parser
from trio_feed.cli._errors import check_streams
from trio_feed.cli._names import FORMS
from trio_feed.exchange import open_exchange

from .helpers import assert_error, run_cli

INTERVALS = "1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M"


def test_a_kline_without_interval_lists_the_intervals() -> None:
    line = assert_error(run_cli("stream", "btcusdt@kline"), 2, "invalid stream name",
                        "'btcusdt@kline'", "needs an interval", "'btcusdt@kline_1m'")
    assert line.endswith(f"kline intervals are {INTERVALS}")
    assert_error(run_cli("record", "btcusdt@kline_2m", "-o", "x.jsonl"), 2,
                 "unknown kline interval '2m'", INTERVALS)


@pytest.mark.parametrize("typed, meant", [
    ("btcusdt@aggtrade", "btcusdt@aggTrade"),
    ("btcusdt@bookticker", "btcusdt@bookTicker"),
    ("btcusdt@aggTrad", "btcusdt@aggTrade"),
    ("btcusdt@minitiker", "btcusdt@miniTicker"),
    ("btcusdt@avgprice", "btcusdt@avgPrice"),
    ("btcusdt@Kline_1h", "btcusdt@kline_1h"),
    ("!ticker_1H@arr", "!ticker_1h@arr"),
])
def test_a_misspelt_kind_suggests_the_right_one(typed: str, meant: str) -> None:
    with pytest.raises(Exception) as caught:
        check_streams([typed])
    message = str(caught.value)
    assert f"did you mean '{meant}'" in message, message
    assert parse_stream(meant).name == meant  # what it suggests is a real name


def test_the_command_suggests_too() -> None:
    assert_error(run_cli("stream", "btcusdt@aggtrade"), 2, "unknown stream kind 'aggtrade'",
                 "did you mean 'btcusdt@aggTrade'?")
    assert_error(run_cli("stream", "btcusdt@trade@100ms"), 2,
                 "'trade' takes no '@100ms' suffix; use 'btcusdt@trade'")


def test_every_kind_has_a_spelling_and_help_lists_it() -> None:
    assert set(FORMS) == set(KINDS)
    for command in ("stream", "record"):
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        for kind in KINDS:
            assert FORMS[kind] in result.stdout, (kind, FORMS[kind])
        assert f"kline intervals: {INTERVALS}" in result.stdout


def _default(function: object, name: str) -> object:
    return inspect.signature(function).parameters[name].default  # type: ignore[arg-type]


def test_defaults_are_the_librarys_and_help_shows_them() -> None:
    args = build_parser().parse_args(["stream", "btcusdt@trade"])
    assert args.mode == _default(open_feed, "mode")
    assert args.seed == _default(open_exchange, "seed")
    assert args.connect_timeout == _default(open_feed, "connect_timeout")
    text = " ".join(run_cli("stream", "--help").stdout.split())  # argparse wraps lines
    assert f"(default: {args.mode})" in text
    assert f"(default: {args.seed})" in text
    assert f"(default: {args.connect_timeout:g})" in text
    assert f"(default: {args.rate:g}, a pace to read by" in text
