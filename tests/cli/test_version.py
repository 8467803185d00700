"""``trio-feed --version``: the installed distribution's version, on stdout, status 0."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from .helpers import run_cli


@pytest.mark.parametrize("entry_point", [False, True])
def test_version_prints_the_distribution_version(entry_point: bool) -> None:
    result = run_cli("--version", entry_point=entry_point)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"trio-feed {version('trio_feed')}\n"
    assert result.stderr == ""
