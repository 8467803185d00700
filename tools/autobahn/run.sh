#!/usr/bin/env bash
# Autobahn|Testsuite client cases 1.* to 10.* (301 cases) against trio_feed's real client
# path: open_connection() and Connection.receive()/send(), through tools/autobahn/adapter.py.
#
#   bash tools/autobahn/run.sh            (or: just autobahn)
#
# Uses the shared runner in place, from ../shared/autobahn beside the repository
# (run_suite.py, client_driver.py, summarize.py, setup.sh); nothing is copied here.
# Builds the two environments with the shared setup.sh when they are missing.
#
# Exit status: 0 only if every one of the 301 cases ran, none is FAILED, every closing
# behavior is OK (INFORMATIONAL only on the three cases the suite itself grades
# INFORMATIONAL), and the driver saw no timeout and no unexpected exception.
#
# Environment (all optional):
#   PYTHON            interpreter with trio_feed's dependencies (default: $VIRTUAL_ENV's
#                     python, else the repo's .venv, else python3); this checkout's
#                     trio_feed is put first on PYTHONPATH, so it is what runs
#   PY27              Python 2.7 for wstest (default ~/.pyenv/versions/2.7.18/bin/python2.7)
#   PY311             Python 3.11 for the shared client venv (default: python3.11)
#   CLIENT_VENV       shared client venv (default /tmp/autobahn-venv)
#   WSTEST_VENV       wstest venv (default /tmp/autobahn-py27)
#   AUTOBAHN_OUTDIR   report directory (default reports/autobahn, gitignored)
#   AUTOBAHN_PORT     fuzzingserver port on 127.0.0.1 (default: a free one)
#   AUTOBAHN_MAX_WALL fail if the driver's wall time exceeds this many seconds (default: off)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SHARED="$(cd "$REPO/.." && pwd)/shared/autobahn"
AGENT=trio_feed

die() { echo "autobahn: $*" >&2; exit 2; }

[ -f "$SHARED/run_suite.py" ] && [ -f "$SHARED/setup.sh" ] ||
  die "the shared Autobahn runner is not at $SHARED (expected beside the repository)"

# -- environments -------------------------------------------------------------------------
PY27="${PY27:-$HOME/.pyenv/versions/2.7.18/bin/python2.7}"
[ -x "$PY27" ] || die "Python 2.7 not found at $PY27: the fuzzingserver (wstest) needs it.
Install it with 'pyenv install 2.7.18' or set PY27=/path/to/python2.7. Not skipping."
export PY27
export CLIENT_VENV="${CLIENT_VENV:-/tmp/autobahn-venv}"
export WSTEST_VENV="${WSTEST_VENV:-/tmp/autobahn-py27}"
if [ -z "${PY311:-}" ]; then
  PY311="$(command -v python3.11 || echo "$HOME/.pyenv/versions/3.11.7/bin/python3.11")"
fi
export PY311

if ! "$WSTEST_VENV/bin/python" -c "import autobahntestsuite" 2>/dev/null ||
   [ ! -x "$CLIENT_VENV/bin/python" ]; then
  echo "== building the Autobahn environments with $SHARED/setup.sh"
  bash "$SHARED/setup.sh" || die "setup.sh failed to build $CLIENT_VENV and $WSTEST_VENV"
fi
"$WSTEST_VENV/bin/python" -c "import autobahntestsuite" ||
  die "autobahntestsuite does not import in $WSTEST_VENV"

# -- the client interpreter: this checkout's trio_feed ----------------------------------
if [ -z "${PYTHON:-}" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"
  elif [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"
  else PYTHON=python3
  fi
fi
export PYTHONPATH="$REPO:$REPO/tools/autobahn${PYTHONPATH:+:$PYTHONPATH}"
found="$("$PYTHON" -c 'import os, adapter, trio_feed; print(os.path.dirname(trio_feed.__file__))')" ||
  die "$PYTHON cannot import trio_feed and its dependencies; set PYTHON to the project's venv"
[ "$found" = "$REPO/trio_feed" ] || die "$PYTHON imports trio_feed from $found, not $REPO"

# -- run ----------------------------------------------------------------------------------
OUTDIR="${AUTOBAHN_OUTDIR:-$REPO/reports/autobahn}"
if [ -e "$OUTDIR" ]; then
  [ -f "$OUTDIR/spec.json" ] || [ -z "$(ls -A "$OUTDIR")" ] ||
    die "$OUTDIR exists and is not an earlier report directory; refusing to empty it"
  rm -rf "$OUTDIR"
fi
mkdir -p "$OUTDIR"
PORT="${AUTOBAHN_PORT:-$("$PYTHON" -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

CASES=()
for i in 1 2 3 4 5 6 7 8 9 10; do CASES+=("$i.*"); done

echo "== Autobahn cases 1-10 against $AGENT ($("$PYTHON" -V 2>&1), $(nproc) cores), report in $OUTDIR"
t0=$(date +%s.%N)
set +e
"$PYTHON" "$SHARED/run_suite.py" --outdir "$OUTDIR" --port "$PORT" \
  --client-python "$PYTHON" --cases "${CASES[@]}" \
  --case-timeout 30 --client-timeout 600 \
  --client "$AGENT=adapter:connect"
suite_rc=$?
set -e
t1=$(date +%s.%N)

# -- verdict ------------------------------------------------------------------------------
"$PYTHON" - "$OUTDIR" "$AGENT" "$suite_rc" "$t0" "$t1" "${AUTOBAHN_MAX_WALL:-}" <<'EOF'
import json
import os
import sys

outdir, agent, suite_rc, t0, t1, max_wall = sys.argv[1:]
EXPECTED_CASES = 301
problems = []
try:
    with open(os.path.join(outdir, "index.json")) as f:
        cases = json.load(f)[agent]
except (OSError, ValueError, KeyError) as exc:
    print(f"\nautobahn: no report for {agent} in {outdir}: {exc!r}", file=sys.stderr)
    sys.exit(2)
if len(cases) != EXPECTED_CASES:
    problems.append(f"{len(cases)} cases in the report, expected {EXPECTED_CASES}")
for cid, e in sorted(cases.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
    beh, close = e.get("behavior"), e.get("behaviorClose")
    if beh not in ("OK", "NON-STRICT", "INFORMATIONAL"):
        problems.append(f"{cid}: behavior {beh}")
    # The suite grades the closing behavior of its INFORMATIONAL cases INFORMATIONAL too.
    if close != "OK" and not (close == "INFORMATIONAL" and beh == "INFORMATIONAL"):
        problems.append(f"{cid}: closing behavior {close} (close code {e.get('remoteCloseCode')})")
wall = None
try:
    with open(os.path.join(outdir, f"driver-{agent}.json")) as f:
        driver = json.load(f)
    wall = driver["wall_seconds"]
    for r in driver["cases"]:
        if r["timed_out"]:
            problems.append(f"driver case #{r['case']}: timed out")
        if r["error"]:
            problems.append(f"driver case #{r['case']}: unexpected exception {r['error']}")
except (OSError, ValueError, KeyError) as exc:
    problems.append(f"no driver results: {exc!r}")
if suite_rc != "0":
    problems.append(f"run_suite.py exited with {suite_rc}")
if wall is not None and max_wall and wall > float(max_wall):
    problems.append(f"driver wall time {wall:.1f} s exceeds AUTOBAHN_MAX_WALL={max_wall}")
print(f"\nautobahn: driver wall time {wall} s; whole run {float(t1) - float(t0):.1f} s")
if problems:
    print(f"autobahn: {len(problems)} problem(s):", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"autobahn: all {len(cases)} cases passed with a clean close (report: {outdir}/index.html)")
EOF
