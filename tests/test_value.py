"""The shared ``__repr__`` of ``trio_feed._value.Value`` says exactly what attrs would."""

from __future__ import annotations

import importlib
import pkgutil

import attrs
import pytest

import trio_feed
from trio_feed._value import Value


def _value_classes() -> list[type]:
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(trio_feed.__path__, "trio_feed."):
        if info.name.startswith(("trio_feed.cli", "trio_feed.broker")):
            continue  # (they build no Value classes; the broker needs its extra)
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Value) and attrs.has(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return sorted(found.values(), key=lambda c: f"{c.__module__}.{c.__qualname__}")


VALUE_CLASSES = _value_classes()


def _instance(cls: type) -> object:
    values = {}
    for i, field in enumerate(attrs.fields(cls)):
        if field.init:
            values[field.alias] = [f"v{i}", i] if i % 3 == 0 else f"v{i}" if i % 3 else i
    obj = cls.__new__(cls)
    for field in attrs.fields(cls):
        object.__setattr__(obj, field.name, values.get(field.alias, f"default-{field.name}"))
    return obj


def test_the_events_and_statistics_use_it() -> None:
    names = {c.__name__ for c in VALUE_CLASSES}
    assert {"Trade", "DepthUpdate", "FeedStatistics", "StreamStatistics", "Venue",
            "ConnectionStatistics", "Stream"} <= names


@pytest.mark.parametrize("cls", VALUE_CLASSES, ids=lambda c: c.__qualname__)
def test_repr_is_what_attrs_would_write(cls: type) -> None:
    reference = attrs.define(
        type(cls.__name__, (), {"__annotations__": {f.name: "object" for f in attrs.fields(cls)}}),
        slots=False,
    )
    obj = _instance(cls)
    expected = repr(reference(**{f.name: getattr(obj, f.name) for f in attrs.fields(cls)}))
    assert repr(obj) == expected
