"""The ``trio-feed`` command: presentation only, on top of the library's public parts.

``describe`` turns an exception into the one line (and exit status) the
command prints; the examples use it too.
"""

from ._errors import describe
from ._main import build_parser, main

__all__ = ["build_parser", "describe", "main"]
