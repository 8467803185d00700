"""The version of trio_feed: the one place it is written.

``pyproject.toml`` reads it from here when the distribution is built
(``[tool.setuptools.dynamic]``), ``trio_feed.__version__`` re-exports it and
``trio-feed --version`` prints it, so the three cannot disagree.  Reading it
costs nothing at import time, unlike asking ``importlib.metadata``.
"""

__version__ = "0.1.0"
