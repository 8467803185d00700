"""tools/safety.py: the row format, and the checks that keep the table honest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("safety_tool", ROOT / "tools" / "safety.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["safety_tool"] = module
    spec.loader.exec_module(module)
    return module


safety = _tool()

ROW = '''
[[row]]
rule = "S4"
what = "queued batches are counted"
file = "trio_feed/_pipelines.py"
fragment = "counters.discarded += len(batch) - handed + drain(receive_channel)"
replacement = "counters.discarded += len(batch) - handed"
tests = ["tests/safety/test_accounting.py::test_batches_still_queued_when_the_handler_fails_are_\
discarded"]
'''


def test_a_row_without_the_optional_keys_gets_an_id_by_position(tmp_path: Path) -> None:
    data = tmp_path / "rows.toml"
    data.write_text(ROW + ROW.replace('"S4"', '"S7"') + ROW)
    rows = safety.load(data)
    assert [r.id for r in rows] == ["S4.1", "S7.1", "S4.2"]
    assert rows[0].note == "" and rows[0].replacement.endswith("- handed")


def test_unknown_keys_are_an_error(tmp_path: Path) -> None:
    data = tmp_path / "rows.toml"
    data.write_text(ROW.replace('rule = "S4"', 'rule = "S4"\nseverity = "high"'))
    with pytest.raises(safety.DataError, match=r"unknown keys \['severity'\]"):
        safety.load(data)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('file = "trio_feed/_pipelines.py"\n', ""), "missing keys"),
        (('"S4"', '"S12"'), "is not one of S1..S11"),
        (("tests = [", "tests = [] #"), "non-empty list"),
        (('replacement = "counters.discarded += len(batch) - handed"',
          'replacement = "counters.discarded += len(batch) - handed + drain(receive_channel)"'),
         "equals the fragment"),
    ],
)
def test_malformed_rows_are_refused(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    data = tmp_path / "rows.toml"
    data.write_text(ROW.replace(*edit))
    with pytest.raises(safety.DataError, match=message):
        safety.load(data)


def test_the_document_carries_the_tables_of_the_data() -> None:
    rows = safety.load()
    doc = safety.DOC.read_text()
    assert safety.rendered(doc, rows) == doc  # `python tools/safety.py render` was run
    for rule in safety.RULES:
        assert f"<!-- safety-table {rule} -->" in doc
        assert any(r.rule == rule for r in rows), f"{rule} has no row"


def test_every_fragment_occurs_exactly_once_in_its_file() -> None:
    for row in safety.load():
        text = (ROOT / row.file).read_text()
        assert text.count(row.fragment) == 1, f"{row.id}: orphaned in {row.file}"


def test_a_stale_table_is_noticed() -> None:
    rows = safety.load()
    doc = safety.DOC.read_text()
    rows[0].what = "something else"
    assert safety.rendered(doc, rows) != doc
