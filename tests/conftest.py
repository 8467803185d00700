"""Suite-wide: tests marked ``shared`` need the data folder beside the repository."""

from __future__ import annotations

import pytest

from .shared_data import MISSING, SAMPLES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shared: reads the Binance samples beside the repository (tests/shared_data.py)"
    )


@pytest.fixture(autouse=True)
def _shared_data_present(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("shared") is not None and not SAMPLES.is_dir():
        pytest.fail(MISSING, pytrace=False)
