"""Every code block in README.md and docs/*.md that is meant to run, runs here.

Why Sybil (and not pytest-markdown-docs): Sybil is a library as well as a plugin, so this
module can parse the Markdown itself and hand each block to an evaluator of its own, from a
test module under ``tests/`` (the README's ``python -m pytest -n auto`` collects only
``testpaths = ["tests"]``, and no ``.md`` file is ever collected a second time). It also
brings explicit, invisible markers in HTML comments (``<!-- skip: next "why" -->``), which
render as nothing on GitHub and in the built docs.

What each block must do, by its fence:

- ``python``: run *as pasted*, in a fresh interpreter whose working directory is an empty
  temporary folder, under a hard time limit (``BLOCK_TIMEOUT``). A block that defines
  ``test_*`` functions is a pytest module: it runs under pytest with ``trio_mode = true``
  (as docs/testing.md tells users to configure it), and each of its tests must pass. The
  test blocks of one document share one pytest process (its start-up costs seconds), each
  block still its own module. Marked ``<!-- skip: next "reason" -->``, a block is not run
  (a fragment, or a program that runs until Ctrl-C: better, give it a bound, as the README's
  snippet has).
- ``bash``: not run, but must be valid bash (``bash -n``).
- ``json``: every non-empty line must be JSON.
- anything else (``text``, no language): shown, not checked.

One test per document, so the markers apply in document order and ``pytest -n 2`` can
spread the documents over workers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import SkipTest

import pytest
from sybil import Example, Sybil
from sybil.evaluators.skip import Skipper
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    "README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/**/*.md"))]

#: Seconds one block may take, whatever it is: the bound on every doc test.
BLOCK_TIMEOUT = 60.0

_TEST_BLOCKS = "_docs_test_blocks"
_TEST_FUNCTION = re.compile(r"^(?:async\s+)?def\s+(test_\w*)\s*\(", re.MULTILINE)


def _environment() -> dict[str, str]:
    """The caller's environment, with this checkout first on the path and no pytest state."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "COV_CORE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _where(example: Example) -> str:
    return f"{Path(example.path).relative_to(ROOT)}, the block at line {example.line}"


def _run_script(example: Example, source: str, folder: Path) -> None:
    script = folder / "block.py"
    script.write_text(source)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=_environment(),
        capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    assert result.returncode == 0, (
        f"{_where(example)} exited with {result.returncode}:\n{result.stderr[-4000:]}")
    assert "Traceback" not in result.stderr, f"{_where(example)}:\n{result.stderr[-4000:]}"


def _run_tests(blocks: list[tuple[Example, str, list[str]]]) -> None:
    """Run a document's test blocks under one pytest, each block its own module (as pasted)."""
    with tempfile.TemporaryDirectory(prefix="trio_feed_docs_") as name:
        folder = Path(name)
        (folder / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
        files = []
        for number, (_, source, _) in enumerate(blocks):
            files.append(f"test_block_{number}.py")
            (folder / files[-1]).write_text(source)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *files],
            cwd=folder, env=_environment(), capture_output=True, text=True,
            timeout=BLOCK_TIMEOUT * len(blocks),
        )
    outcomes = dict(re.findall(r"^(test_block_\d+\.py::\w+) (\w+)", result.stdout, re.MULTILINE))
    for file, (example, _, names) in zip(files, blocks, strict=True):
        for test in names:
            outcome = outcomes.get(f"{file}::{test}")
            assert outcome == "PASSED", (
                f"{_where(example)}: {test} {outcome or 'did not run'}:\n{result.stdout[-6000:]}")
    assert result.returncode == 0, result.stdout[-6000:]


def evaluate_python(example: Example) -> None:
    source = example.parsed
    if names := _TEST_FUNCTION.findall(source):
        # One pytest start-up costs seconds: the document's test blocks run together, at its end.
        example.namespace.setdefault(_TEST_BLOCKS, []).append((example, source, names))
        return
    with tempfile.TemporaryDirectory(prefix="trio_feed_docs_") as name:
        _run_script(example, source, Path(name))


def evaluate_bash(example: Example) -> None:
    result = subprocess.run(["bash", "-n"], input=example.parsed, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, f"{_where(example)} is not valid bash:\n{result.stderr}"


def evaluate_json(example: Example) -> None:
    for number, line in enumerate(example.parsed.splitlines()):
        if line.strip():
            try:
                json.loads(line)
            except ValueError as exc:
                raise AssertionError(f"{_where(example)}, line {number + 1}: {exc}") from None


SYBIL = Sybil(
    parsers=[
        SkipParser(),
        CodeBlockParser(language="python", evaluator=evaluate_python),
        CodeBlockParser(language="bash", evaluator=evaluate_bash),
        CodeBlockParser(language="json", evaluator=evaluate_json),
    ],
    path="..",
)


def evaluate_document(path: Path) -> list[str]:
    """Evaluate every block of one document in order; the blocks that a marker skipped."""
    skipped = []
    document = SYBIL.parse(path)
    for example in document:
        if isinstance(example.region.evaluator, Skipper):
            action, reason = example.parsed
            assert action != "next" or reason, (
                f"{_where(example)}: say why the block is not run: <!-- skip: next \"why\" -->")
        try:
            example.evaluate()
        except SkipTest as exc:  # a `<!-- skip: next "reason" -->` marker
            skipped.append(f"line {example.line}: {exc}")
    if blocks := document.namespace.get(_TEST_BLOCKS):
        _run_tests(blocks)
    return skipped


@pytest.mark.parametrize("document", DOCUMENTS)
def test_code_blocks_run_as_pasted(document: str) -> None:
    evaluate_document(ROOT / document)


def _documented_json_keys() -> dict[str, list[str]]:
    """docs/api/cli-json.md: the keys listed under each ``### `Type``` heading, in order."""
    text = (ROOT / "docs" / "api" / "cli-json.md").read_text(encoding="utf-8")
    keys: dict[str, list[str]] = {}
    for heading, body in re.findall(r"^### `(\w+)`\n(.*?)(?=^### |\Z)", text, re.M | re.S):
        keys[heading] = re.findall(r"^\| `(\w+)` \|", body, re.M)
    return keys


def test_cli_json_page_lists_every_event_type_and_field() -> None:
    import typing

    import attrs

    from trio_feed.binance import Event

    expected = {cls.__name__: ["type", *(f.name for f in attrs.fields(cls))]
                for cls in typing.get_args(Event)}
    assert _documented_json_keys() == expected


def test_cli_json_lines_have_the_documented_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_feed", "stream", "btcusdt@trade", "btcusdt@bookTicker",
         "btcusdt@depth@100ms", "--json", "--limit", "200"],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    documented = _documented_json_keys()
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # The exchange stamps the wall clock: @depth@100ms is due every 100 ms, so read enough
    # lines (about half a second of the market) to hold each of the three kinds.
    assert len(lines) == 200
    assert {line["type"] for line in lines} == {"Trade", "BookTicker", "DepthUpdate"}
    for line in lines:
        assert list(line) == documented[line["type"]]
        assert line["stream"] in ("btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms")
    trade = next(line for line in lines if line["type"] == "Trade")
    assert isinstance(trade["price"], str) and isinstance(trade["trade_id"], int)


def test_readme_speed_figures_are_the_ones_in_performance_md() -> None:
    """Each measured number lives in docs/performance.md: README's rows are copies of its rows."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## How fast"):readme.index("## The library in a few lines")]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(rows) > 3
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8").splitlines()
    missing = [row for row in rows if row not in performance]
    assert not missing, f"README rows not in docs/performance.md: {missing}"
