"""The Binance vocabulary: stream names and URLs, typed events, decoding.

Nothing here knows about sockets or trio; the local exchange and the client
both speak through this package, so they cannot disagree about a name.
"""

from ._streams import DEFAULT_BASE_URL, KINDS, Stream, combined_url, parse_stream, raw_url

__all__ = ["DEFAULT_BASE_URL", "KINDS", "Stream", "combined_url", "parse_stream", "raw_url"]
