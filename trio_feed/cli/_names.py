"""Stream names as the command explains them: every kind, and what was probably meant.

The library's :func:`~trio_feed.binance.parse_stream` says what is wrong with a
name; this module adds what would be right: the intervals a kline needs, the
spelling of a kind typed in the wrong case (``aggtrade`` for ``aggTrade``),
the nearest known kinds for a typo.  The kinds are those of
:data:`trio_feed.binance.KINDS`.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable, Sequence

from .._errors import InvalidStreamName
from ..binance import KINDS
from ..binance._streams import DEPTH_LEVELS, DEPTH_SPEEDS, KLINE_INTERVALS, TICKER_WINDOWS

__all__ = ["FORMS", "explain", "kinds_help", "name_in"]


def _ordered(values: Iterable[str]) -> list[str]:
    unit = {"s": 0, "m": 1, "h": 2, "d": 3, "w": 4, "M": 5}
    return sorted(values, key=lambda v: (unit.get(v[-1], 9), int(v[:-1]) if v[:-1].isdigit()
                                         else 0))


INTERVALS = " ".join(_ordered(KLINE_INTERVALS))
WINDOWS = "|".join(_ordered(TICKER_WINDOWS))
LEVELS = "|".join(str(n) for n in sorted(DEPTH_LEVELS))
SPEEDS = "|".join(f"@{s}" for s in sorted(DEPTH_SPEEDS, key=len))

#: How each kind in KINDS is spelled (``<symbol>`` is lowercase, e.g. ``btcusdt``).
FORMS: dict[str, str] = {
    "trade": "<symbol>@trade",
    "aggTrade": "<symbol>@aggTrade",
    "blockTrade": "<symbol>@blockTrade",
    "kline": "<symbol>@kline_<interval>[@+08:00]",
    "miniTicker": "<symbol>@miniTicker",
    "miniTicker_arr": "!miniTicker@arr",
    "ticker": "<symbol>@ticker",
    "ticker_arr": "!ticker@arr",
    "ticker_window": f"<symbol>@ticker_<{WINDOWS}>",
    "ticker_window_arr": f"!ticker_<{WINDOWS}>@arr",
    "avgPrice": "<symbol>@avgPrice",
    "bookTicker": "<symbol>@bookTicker",
    "depth_partial": f"<symbol>@depth<{LEVELS}>[{SPEEDS}]",
    "depth": f"<symbol>@depth[{SPEEDS}]",
    "referencePrice": "<symbol>@referencePrice",
    "serverShutdown": "!serverShutdown",
    # USD-M futures (--market usdm); its depth speeds are @500ms and @100ms.
    "markPrice": "<symbol>@markPrice[@1s]",
    "markPrice_arr": "!markPrice@arr[@1s]",
    "forceOrder": "<symbol>@forceOrder",
    "forceOrder_all": "!forceOrder@arr",
    "bookTicker_all": "!bookTicker",
    "continuousKline": "<pair>_<perpetual|current_quarter|next_quarter>@continuousKline_<interval>",
    "compositeIndex": "<symbol>@compositeIndex",
    "contractInfo": "!contractInfo",
    "assetIndex": "<asset>@assetIndex",
    "assetIndex_arr": "!assetIndex@arr",
    "rpiDepth": "<symbol>@rpiDepth@500ms",
}

#: The kinds only USD-M futures serves, marked so in ``--help``.
USDM_ONLY = frozenset({"markPrice", "markPrice_arr", "forceOrder", "forceOrder_all",
                       "bookTicker_all", "continuousKline", "compositeIndex", "contractInfo",
                       "assetIndex", "assetIndex_arr", "rpiDepth"})

# What may follow "<symbol>@", spelled right, for suggestions: each kind's word,
# and the full forms of those that carry a parameter.
_WORDS: dict[str, str] = {}
for _kind, _form in FORMS.items():
    if _form.startswith("<symbol>@"):
        _word = _form[len("<symbol>@"):].split("[")[0].split("<")[0].rstrip("_")
        _WORDS[_word.lower()] = _word
for _levels in sorted(DEPTH_LEVELS):
    _WORDS[f"depth{_levels}"] = f"depth{_levels}"
for _window in TICKER_WINDOWS:
    _WORDS[f"ticker_{_window.lower()}"] = f"ticker_{_window}"
_ALL_MARKET = {
    name.lower(): name
    for name in ("!miniTicker@arr", "!ticker@arr", "!serverShutdown",
                 *(f"!ticker_{w}@arr" for w in TICKER_WINDOWS),
                 # USD-M futures
                 "!markPrice@arr", "!markPrice@arr@1s", "!forceOrder@arr", "!bookTicker",
                 "!contractInfo", "!assetIndex@arr")
}
# Words that take no "@..." suffix.
_BARE = {"trade", "aggTrade", "blockTrade", "miniTicker", "ticker", "avgPrice", "bookTicker",
         "referencePrice"}


def kinds_help() -> str:
    """The stream kinds, one per line, for ``--help``."""
    lines = ["stream names (the symbol in lowercase, e.g. btcusdt):"]
    lines += [f"  {FORMS[kind]}" for kind in KINDS if kind not in USDM_ONLY]
    lines.append("USD-M futures only (--market usdm):")
    lines += [f"  {FORMS[kind]}" for kind in KINDS if kind in USDM_ONLY]
    lines.append(f"kline intervals: {INTERVALS}")
    return "\n".join(lines)


def _suggest(word: str, choices: dict[str, str]) -> list[str]:
    exact = choices.get(word.lower())
    if exact is not None:
        return [exact]
    close = difflib.get_close_matches(word.lower(), list(choices), n=3, cutoff=0.6)
    return [choices[c] for c in close]


def _did_you_mean(options: Sequence[str]) -> str:
    quoted = [f"'{o}'" for o in options]
    if len(quoted) == 1:
        return f"did you mean {quoted[0]}?"
    return f"did you mean {', '.join(quoted[:-1])} or {quoted[-1]}?"


def explain(name: str, exc: InvalidStreamName) -> str:
    """The library's complaint about ``name``, plus what would be right."""
    message = str(exc)
    if not isinstance(name, str):
        return message
    if name.startswith("!"):
        if "unknown all-market stream" in message:
            found = _suggest(name, _ALL_MARKET)
            hint = _did_you_mean(found) if found else "all-market streams are " + ", ".join(
                f"'{FORMS[k]}'" for k in KINDS if FORMS[k].startswith("!"))
            return f"{message}; {hint}"
        return message
    symbol, sep, rest = name.partition("@")
    if not sep or not rest:
        return message
    head, _, tail = rest.partition("@")
    if "unknown kline interval" in message:
        return f"{message}; kline intervals are {INTERVALS}"
    if "unknown stream kind" not in message:
        return message
    if head.lower() == "kline":
        return (f"{name!r}: a kline stream needs an interval, e.g. '{symbol}@kline_1m'; "
                f"kline intervals are {INTERVALS}")
    if head.lower().startswith("kline_"):
        interval = head[len("kline_"):]
        same = [i for i in _ordered(KLINE_INTERVALS) if i.lower() == interval.lower()]
        same.sort(key=lambda i: i != interval)  # "1m" and "1M" differ: the exact case first
        found = [f"kline_{i}" for i in same]
    else:
        found = _suggest(head, _WORDS)
    if found and found[0] == head and head in _BARE and tail:
        return f"{name!r}: '{head}' takes no '@{tail}' suffix; use '{symbol}@{head}'"
    if found:
        suffix = f"@{tail}" if tail else ""
        return f"{message}; {_did_you_mean([f'{symbol}@{w}{suffix}' for w in found])}"
    return f"{message}; 'trio-feed stream --help' lists the stream kinds"


def name_in(exc: InvalidStreamName) -> str | None:
    """The stream name an :class:`InvalidStreamName` message starts with (its ``repr``)."""
    match = re.match(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", str(exc))
    if match is None:
        return None
    try:
        name = ast.literal_eval(match.group(0))
    except (ValueError, SyntaxError):
        return None
    return name if isinstance(name, str) else None
