"""``stream``, ``record`` and ``stats`` on USD-M futures (``--market usdm``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson

from .helpers import assert_error, run_cli


def test_stream_routes_mark_price_and_depth() -> None:
    # The depth stream is due every 100 ms and the mark price every 3 s on the exchange's
    # wall clock: 45 lines hold at least one mark price.
    result = run_cli("stream", "--market", "usdm", "btcusdt@markPrice", "btcusdt@depth@100ms",
                     "--json", "--limit", "45")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 45
    assert {line["type"] for line in lines} == {"MarkPrice", "DepthUpdate"}
    depth = [line for line in lines if line["type"] == "DepthUpdate"]
    assert all(line["prev_final_update_id"] is not None for line in depth)
    for before, after in itertools.pairwise(depth):
        assert after["prev_final_update_id"] == before["final_update_id"]


def test_a_spot_name_on_usdm_says_which_market_has_it() -> None:
    assert_error(run_cli("stream", "--market", "usdm", "btcusdt@trade"), 2,
                 "btcusdt@trade", "market='spot'")
    assert_error(run_cli("stream", "btcusdt@markPrice"), 2, "market='usdm'")
    assert_error(run_cli("stream", "--market", "usdm", "btcusdt@markprice"), 2,
                 "did you mean 'btcusdt@markPrice'?")
    assert_error(run_cli("stream", "--market", "usdm", "!markprice@arr"), 2,
                 "did you mean '!markPrice@arr'?")


def test_record_both_routes_then_stats_checks_the_pu_chain(tmp_path: Path) -> None:
    path = tmp_path / "futures.jsonl"
    result = run_cli("record", "--market", "usdm", "btcusdt@aggTrade", "btcusdt@depth@100ms",
                     "-o", str(path), "--limit", "300", "--rate", "200")
    assert result.returncode == 0, result.stderr
    assert "/market/stream?streams=btcusdt@aggTrade" in result.stderr
    assert "/public/stream?streams=btcusdt@depth@100ms" in result.stderr
    stats = orjson.loads(run_cli("stats", str(path), "--json").stdout)
    depth = stats["streams"]["btcusdt@depth@100ms"]
    assert depth["messages"] >= 3 and depth["id_gaps"] == 0
    assert stats["streams"]["btcusdt@aggTrade"]["id_gaps"] == 0
    # Break the pu chain of one event, keeping U contiguous: only the futures rule sees it.
    lines = path.read_bytes().splitlines()
    depth_lines = [i for i, line in enumerate(lines)
                   if orjson.loads(line)["stream"] == "btcusdt@depth@100ms"]
    index = depth_lines[1]
    record = orjson.loads(lines[index])
    envelope = orjson.loads(record["raw"])
    envelope["data"]["pu"] -= 7
    record["raw"] = orjson.dumps(envelope).decode()
    lines[index] = orjson.dumps(record)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\n".join(lines) + b"\n")
    stats = orjson.loads(run_cli("stats", str(broken), "--json").stdout)
    assert stats["streams"]["btcusdt@depth@100ms"]["id_gaps"] == 1


def test_stats_of_the_all_market_book_ticker_sees_no_repeats(tmp_path: Path) -> None:
    path = tmp_path / "tickers.jsonl"
    result = run_cli("record", "--market", "usdm", "!bookTicker", "-o", str(path),
                     "--limit", "150", "--rate", "200")
    assert result.returncode == 0, result.stderr
    stream = orjson.loads(run_cli("stats", str(path), "--json").stdout)["streams"]["!bookTicker"]
    assert stream["messages"] == 150
    assert (stream["id_gaps"], stream["repeated_ids"]) == (0, 0)
