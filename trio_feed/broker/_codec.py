"""What one stream entry holds, and events to and from its payload (schema version 1).

An entry is a micro-batch of the events of one stream, as Redis stream fields:

=========  =================================================================
``v``      schema version, ``1``; a reader refuses versions it does not know
``fmt``    ``json`` (normalised events, below) or ``raw`` (Binance frames)
``n``      how many events the payload holds
``first``  sequence of the first event (trade id, aggTrade id, diff ``U``,
           ``lastUpdateId``, ``u``), empty when the stream has none
``last``   sequence of the last event (diff ``u``); empty when none
``t0``     when the oldest event of the entry reached the sink (µs since the epoch)
``t``      when the entry was first sent to the server (µs since the epoch)
``gap``    ``first:last:count`` of events the sink dropped just before this
           entry (``drop_oldest``), else empty; ``first``/``last`` may be empty
``p``      the payload: a JSON array, one element per event
=========  =================================================================

``fmt=raw``: the elements are the frames exactly as Binance sent them (the
combined-stream envelope ``{"stream": ..., "data": ...}``), so a reader types
them with the same :class:`~trio_feed.binance.Decoder` as a direct feed.
``fmt=json``: each element is an event's attrs fields by name plus
``"type"``, the class name (``{"type": "Trade", "event_time": ..., ...}``);
prices stay strings (``Decimal`` is written in plain notation).  Adding a
format or a field is compatible (a reader ignores fields it does not know, and
a field with a default may be absent); changing the meaning of one bumps ``v``.
"""

from __future__ import annotations

import typing
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any, Final

import attrs
import orjson

from .._errors import SchemaError
from ..binance import Event

__all__ = ["SCHEMA_VERSION", "decode_json_payload", "encode_event", "load_payload"]

SCHEMA_VERSION: Final = b"1"

#: Every event class, from the ``Event`` union itself, so a new kind is encodable at once.
_CLASSES: Final[tuple[type[Any], ...]] = typing.get_args(Event)
_BY_NAME: Final = {cls.__name__: cls for cls in _CLASSES}
_FIELDS: Final = {cls: tuple(f.name for f in attrs.fields(cls)) for cls in _CLASSES}
_GET: Final = {cls: attrgetter(*names) for cls, names in _FIELDS.items()}
_TAKE: Final = {cls: itemgetter(*names) for cls, names in _FIELDS.items()}
#: The all-market arrays: their ``events`` are events too.
_ARRAYS: Final = frozenset(cls for cls in _CLASSES if "events" in _FIELDS[cls])


def _fields(event: Any) -> dict[str, Any]:
    cls = event.__class__
    names = _FIELDS[cls]
    values = _GET[cls](event)
    out: dict[str, Any] = {"type": cls.__name__}
    out.update(zip(names, values, strict=True))
    if cls in _ARRAYS:
        out["events"] = [_fields(e) for e in event.events]
    return out


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_event(event: Event) -> bytes:
    """One event as a normalised JSON object (``fmt=json``)."""
    return orjson.dumps(_fields(event), default=_default)


def _build(obj: dict[str, Any], decimals: bool) -> Any:
    try:
        cls = _BY_NAME[obj["type"]]
    except (KeyError, TypeError):
        raise SchemaError(f"not an event of a json entry: {str(obj)[:80]}") from None
    if cls in _ARRAYS:
        obj["events"] = [_build(e, decimals) for e in obj["events"]]
    if decimals:
        for name in cls._decimal_fields:
            value = obj.get(name)
            if value is not None:
                obj[name] = Decimal(value)
        for name in getattr(cls, "_level_fields", ()):
            obj[name] = [[Decimal(p), Decimal(q)] for p, q in obj[name]]
    try:
        return cls(*_TAKE[cls](obj))  # positional: about twice as fast as keywords
    except KeyError:
        pass
    try:  # a field missing: one with a default (an entry of an older writer), or an error
        return cls(**{name: obj[name] for name in _FIELDS[cls] if name in obj})
    except TypeError as exc:
        raise SchemaError(f"a json entry does not fit {cls.__name__}: {exc}") from None


def load_payload(payload: bytes) -> list[Any]:
    """The elements of an entry's payload (either format); :class:`SchemaError` if not an array."""
    try:
        items = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"an entry's payload is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise SchemaError("an entry's payload is not a JSON array")
    return items


def decode_json_payload(payload: bytes, *, decimals: bool = False) -> list[Event]:
    """The events of a ``fmt=json`` payload."""
    return [_build(obj, decimals) for obj in load_payload(payload)]
