"""The ``trio-feed`` command: presentation only, on top of the library's public parts."""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
