"""The base of the package's attrs value classes: one ``__repr__``, written once.

attrs writes and compiles a ``__repr__`` for every class it builds, which is
a third of the cost of building a class (about 0.25 ms each here), paid at
import for every event, statistics and rule class.  Those classes say
``repr=False`` and inherit this one instead; it gives exactly what attrs
gives (``Trade(event_time=1, symbol='BTCUSDT', ...)``), reading the fields
attrs recorded.  A test holds the two to the same output.
"""

from __future__ import annotations

__all__ = ["Value"]


class Value:
    """Mixin: the attrs-style ``__repr__``, for classes built with ``repr=False``."""

    __slots__ = ()

    def __repr__(self) -> str:
        parts = []
        for field in getattr(type(self), "__attrs_attrs__", ()):
            if field.repr is False:
                continue
            shown = field.repr if callable(field.repr) else repr
            parts.append(f"{field.name}={shown(getattr(self, field.name))}")
        name = type(self).__qualname__.rsplit(">.", 1)[-1]
        return f"{name}({', '.join(parts)})"
