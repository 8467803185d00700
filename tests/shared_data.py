"""Where the tests find the data that is never copied into the repository.

Recorded Binance captures and documented sample payloads live in
``shared/binance/samples`` beside the repository (CI lays it out so), or in the
folder ``TRIO_FEED_SHARED`` names.  Tests that read them carry the ``shared``
marker.  When the folder is absent, those tests *fail* with a message saying
where to put it: they never skip silently.  A clone without the data runs the
rest of the suite with ``python -m pytest -m "not shared"``.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("TRIO_FEED_SHARED",
                             Path(__file__).resolve().parents[2] / "shared"))
SAMPLES = SHARED / "binance" / "samples"

MISSING = (
    f"the Binance samples folder {SAMPLES} is absent: it sits beside the repository in "
    "shared/binance/samples (or set TRIO_FEED_SHARED to the folder holding binance/samples); "
    'without it, run the rest of the suite with: python -m pytest -m "not shared"'
)
