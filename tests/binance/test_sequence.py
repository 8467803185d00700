"""One set of sequence rules: the feed, the recorder and ``trio-feed stats`` agree on real captures.

The recorded captures in ``shared/binance/samples`` (beside the repository,
never copied into it; ``TRIO_FEED_SHARED`` names another place) are judged
three ways: by the feed's :class:`Continuity`, by
:meth:`EventRecorder.gaps` and by :func:`compute_stats`.  They must report
the same gaps and the same number of missing ids, per stream.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from trio_feed.binance import Decoder, DepthUpdate, Trade
from trio_feed.binance._sequence import (
    BROKEN,
    DUPLICATE,
    RESET_THRESHOLD,
    RULES,
    is_reset,
    object_ids,
)
from trio_feed.feed._continuity import Continuity
from trio_feed.recording import compute_stats
from trio_feed.testing import EventRecorder

from ..shared_data import SAMPLES

FUTURES = "recorded_cryptofeed_usdm_futures.jsonl"
SPOT = "recorded_cryptofeed_spot.jsonl"


def sample_lines(name: str) -> list[bytes]:
    path = SAMPLES / name
    assert path.is_file(), (
        f"{path} is missing: the samples sit beside the repository in shared/binance/samples "
        "(or set TRIO_FEED_SHARED to the folder holding binance/samples)"
    )
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def three_verdicts(lines: list[bytes], tmp_path: Path) -> tuple[dict[str, int], dict[str, int],
                                                       dict[str, int], dict[str, int]]:
    """Missing ids per stream by Continuity, the recorder and stats; and Continuity's gaps."""
    decoder = Decoder()
    continuity = Continuity()
    recorder = EventRecorder()
    for line in lines:
        event = decoder.decode(line)
        recorder(event)
        continuity.accept(event)
    recording = tmp_path / "sample.jsonl"
    recording.write_bytes(b"".join(
        orjson.dumps({"t": 1_000_000 * i, "stream": orjson.loads(line)["stream"],
                      "raw": line.decode()}) + b"\n"
        for i, line in enumerate(lines)
    ))
    stats = compute_stats(str(recording))
    by_continuity = {str(k): v.missing for k, v in continuity.streams().items()}
    gaps_by_continuity = {str(k): v.gaps for k, v in continuity.streams().items()}
    by_recorder: dict[str, int] = dict.fromkeys(by_continuity, 0)
    gaps_by_recorder: dict[str, int] = dict.fromkeys(by_continuity, 0)
    for gap in recorder.gaps():
        by_recorder[gap.stream] += gap.missing
        gaps_by_recorder[gap.stream] += 1
    by_stats = {k: v["missing_ids"] for k, v in stats["streams"].items()}
    gaps_by_stats = {k: v["id_gaps"] for k, v in stats["streams"].items()}
    assert continuity.missing == sum(by_continuity.values())
    assert gaps_by_continuity == gaps_by_recorder == gaps_by_stats
    return by_continuity, by_recorder, by_stats, gaps_by_continuity


@pytest.mark.shared
def test_futures_sample_the_three_agree_on_the_pu_chain(tmp_path: Path) -> None:
    continuity, recorder, stats, gaps = three_verdicts(sample_lines(FUTURES), tmp_path)
    assert continuity == recorder == stats
    # The futures chain on pu has no break in this capture (its SOURCES.md says so),
    # though U never follows the previous u: counting U would find 529,020 missing ids.
    assert sum(recorder.values()) == 0 and sum(gaps.values()) == 0
    depth = [orjson.loads(line)["data"] for line in sample_lines(FUTURES)
             if b"depthUpdate" in line]
    assert depth and all("pu" in d for d in depth)


@pytest.mark.shared
def test_spot_sample_the_three_agree(tmp_path: Path) -> None:
    continuity, recorder, stats, _ = three_verdicts(sample_lines(SPOT), tmp_path)
    assert continuity == recorder == stats
    assert any(name.endswith("@depth@100ms") for name in continuity)


@pytest.mark.shared
def test_futures_pu_break_counts_the_skipped_update_ids(tmp_path: Path) -> None:
    """Drop one futures depth update: all three see one gap of the ids it covered."""
    lines = sample_lines(FUTURES)
    index = next(i for i, line in enumerate(lines) if b"sushiusdt@depth" in line and i > 10)
    dropped = orjson.loads(lines[index])["data"]
    following = next(orjson.loads(line)["data"] for line in lines[index + 1:]
                     if b"sushiusdt@depth" in line)
    assert following["pu"] == dropped["u"]
    continuity, recorder, stats, gaps = three_verdicts(lines[:index] + lines[index + 1:],
                                                       tmp_path)
    stream = "sushiusdt@depth@100ms"
    assert gaps[stream] == 1
    assert continuity[stream] == recorder[stream] == stats[stream] == dropped["u"] - dropped["pu"]


# -- the rules themselves --------------------------------------------------------------------


def depth(first: int, final: int, pu: int | None = None) -> DepthUpdate:
    return DepthUpdate(event_time=1, symbol="X", first_update_id=first, final_update_id=final,
                       bids=[], asks=[], prev_final_update_id=pu, stream="x@depth")


def test_depth_rules_spot_and_futures() -> None:
    check = RULES[DepthUpdate].check
    assert check(10, depth(11, 12)) == 0          # U == last + 1
    assert check(10, depth(9, 12)) == 0           # overlap
    assert check(10, depth(14, 15)) == 3          # 11, 12, 13 skipped
    assert check(10, depth(5, 10)) == DUPLICATE
    assert check(10, depth(500, 600, pu=10)) == 0  # futures: U need not follow, pu must
    assert check(10, depth(500, 600, pu=17)) == 7
    assert check(10, depth(500, 600, pu=9)) == BROKEN
    assert check(10, depth(1, 10, pu=3)) == DUPLICATE


def test_reset_threshold_and_event_time() -> None:
    def trade(tid: int, time: int) -> Trade:
        return Trade(event_time=time, symbol="X", trade_id=tid, price="1", quantity="1",
                     trade_time=time, buyer_is_maker=False, stream="x@trade")

    last = trade(RESET_THRESHOLD + 10, 100)
    assert is_reset(last.trade_id, trade(1, 200), last)
    assert not is_reset(last.trade_id, trade(1, 50), last)  # older: a repeat, not a reset
    assert not is_reset(last.trade_id, trade(10, 200), last)  # within the threshold


def test_object_ids_read_the_keys_the_rules_need() -> None:
    rule, ids = object_ids({"e": "depthUpdate", "U": 5, "u": 9, "pu": 4}) or (None, None)
    assert rule is RULES[DepthUpdate] and ids is not None
    assert rule.check(4, ids) == 0 and rule.position(ids) == 9
    assert object_ids({"e": "trade"}) is None  # no id: nothing to check
    assert object_ids({"e": "kline", "k": {}}) is None
    assert object_ids([1, 2]) is None
