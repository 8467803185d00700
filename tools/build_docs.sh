#!/usr/bin/env bash
# Build the documentation site (the guides in docs/ and the API reference generated from the
# docstrings) strictly and offline: any warning fails the build, and nothing is fetched.
#
#   bash tools/build_docs.sh [DIR]      # default DIR: site/ (gitignored); or: just docs
#
# Needs the docs extra: pip install -e ".[docs]".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
out="${1:-site}"
"$PYTHON" -c "import mkdocs, mkdocstrings, material" 2>/dev/null \
    || { echo "build_docs: needs the docs extra: pip install -e '.[docs]'" >&2; exit 1; }
export NO_MKDOCS_2_WARNING=1   # mkdocs-material's banner about a future MkDocs 2.0
"$PYTHON" -m mkdocs build --strict --clean --site-dir "$out"
# Every public name has its entry: each module's __all__ against the anchors of its page (the
# top-level names may instead be documented in the public module they come from).
"$PYTHON" - "$out" <<'PY'
import importlib, pathlib, re, sys

site = pathlib.Path(sys.argv[1])
anchors = set()
for page in site.rglob("*.html"):
    anchors.update(re.findall(r'id="(trio_feed[\w.]*)"', page.read_text(encoding="utf-8")))
missing = []
for module in ("trio_feed", "trio_feed.binance", "trio_feed.feed", "trio_feed.books",
               "trio_feed.bridge", "trio_feed.broker", "trio_feed.wire", "trio_feed.exchange",
               "trio_feed.testing", "trio_feed.recording"):
    for name in importlib.import_module(module).__all__:
        homes = [f"{module}.{name}"]
        if module == "trio_feed":
            homes += [f"trio_feed.{sub}.{name}" for sub in ("binance", "feed", "books")]
        if not anchors.intersection(homes):
            missing.append(f"{module}.{name}")
if missing:
    sys.exit("build_docs: no API entry for: " + ", ".join(missing))
print("build_docs: every public name of the public modules has its entry")
PY
echo "build_docs: built $(find "$out" -name '*.html' | wc -l) pages into $out/"
