"""One HTTP client for Binance's REST API, charged to a :class:`WeightBudget`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from .._errors import InvalidSymbol, RateLimited, RestError
from ..binance._limits import INVALID_SYMBOL_CODE
from ._budget import WeightBudget

__all__ = ["DEFAULT_REST_TIMEOUT", "RestClient"]

#: Seconds one REST request may take, connecting included, before it fails.
DEFAULT_REST_TIMEOUT = 10.0


class RestClient:
    """``GET`` JSON from ``rest_url``, each request first admitted by ``budget``.

    Every answer's ``X-MBX-USED-WEIGHT-1M`` is reported to the budget; a 429
    or 418 pauses the whole budget for its ``Retry-After`` and raises
    :class:`~trio_feed.RateLimited`; ``-1121`` raises
    :class:`~trio_feed.InvalidSymbol`; any other failure (no answer within
    ``timeout``, a refused connection, another error status) raises
    :class:`~trio_feed.RestError`.  Close it with :meth:`aclose`.
    """

    def __init__(self, rest_url: str, budget: WeightBudget, *,
                 timeout: float = DEFAULT_REST_TIMEOUT,
                 headers: Mapping[str, str] | None = None) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.budget = budget
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), headers=headers)
        #: Requests sent, answers that were 429/418, and weight this client had admitted.
        self.requests = 0
        self.rate_limited = 0
        self.weight = 0

    async def get(self, path: str, params: Mapping[str, Any], weight: int, *,
                  symbol: str = "") -> bytes:
        """The body of ``GET {rest_url}{path}?{params}`` (a 200), once ``weight`` is admitted."""
        await self.budget.acquire(weight)
        self.weight += weight
        self.requests += 1
        try:
            response = await self._client.get(self.rest_url + path, params=dict(params))
        except httpx.HTTPError as exc:
            raise RestError(f"GET {path} failed: {exc!r}") from exc
        used = response.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.budget.note_server_usage(int(used))
        status = response.status_code
        if status in (418, 429):
            self.rate_limited += 1
            try:
                retry = float(response.headers.get("retry-after", "60"))
            except ValueError:
                retry = 60.0
            retry = retry if math.isfinite(retry) and retry >= 0 else 60.0
            self.budget.pause(retry)
            raise RateLimited(retry, status)
        if status == 400 and symbol:
            _raise_invalid_symbol(response.content, symbol)
        if status != 200:
            raise RestError(f"GET {path} answered HTTP {status}: {response.content[:200]!r}",
                            status)
        return response.content

    async def aclose(self) -> None:
        await self._client.aclose()


def _raise_invalid_symbol(body: bytes, symbol: str) -> None:
    """Raise :class:`InvalidSymbol` for Binance's ``{"code":-1121,...}`` answer."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(obj, dict) and obj.get("code") == INVALID_SYMBOL_CODE:
        raise InvalidSymbol(symbol, str(obj.get("msg", "Invalid symbol.")))
