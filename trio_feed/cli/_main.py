"""The ``trio-feed`` command (also ``python -m trio_feed``).

::

    trio-feed stream btcusdt@trade ethusdt@bookTicker [--mode channel|inline] [--limit N] [--json]
    trio-feed record STREAM... -o FILE [--duration S | --limit N] [--append | --force] [--raw]
    trio-feed replay FILE [--speed 1|10|max] [--port P] [--exit-when-done]
    trio-feed stats FILE [--json]

``stream`` and ``record`` use an embedded local exchange unless ``--live``
(Binance spot) or ``--url`` (a base ``ws[s]://host:port``, or a full stream
URL) says otherwise.  Every error is one line on stderr, ``trio-feed: error:
...``, with exit status 2 for a usage error or a bad stream name and 1 for
anything else (unreachable URL, TLS failure, unreadable file, a recording
that ``record`` would replace without ``--force``, a connection closed
abnormally).  ``--debug`` shows the traceback instead.  Ctrl-C ends any
command quietly with status 0: it is how ``record`` and ``replay`` are meant
to be stopped.

Output goes to stdout (events, the replay URL, stats); notes, warnings and
the live status lines go to stderr, the status lines only when stderr is a
terminal (see ``_status``).

Each command is added by an ``add_<command>(subparsers, common)`` function
listed in :data:`COMMANDS`; a new command adds its function there.

``publish`` and ``stream --from-redis`` are the two ends of the Redis Streams
broker (``trio_feed.broker``, ``docs/scale-out.md``, in ``_broker``); they need
the ``redis`` extra, which the other commands never import.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import trio

from .._version import __version__
from ._broker import add_from_redis, add_publish
from ._commands import LIVE_BASE_URL, add_record, add_replay, add_stats, add_stream
from ._errors import describe, leaves
from ._status import PROG, Screen, ScreenLogHandler

__all__ = ["COMMANDS", "build_parser", "main"]

#: ``add_<command>(subparsers, common)`` for each command, in ``--help`` order.
COMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = [
    add_stream, add_from_redis, add_record, add_replay, add_stats, add_publish,
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: every error is one clear line.
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log each connection state change (reconnects, rotations) to stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Binance market-data streams on Trio: watch, record, replay, summarise.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, False)
    # The same options after the command name ("trio-feed stream ... --debug"),
    # without overriding what was given before it.
    common = _Parser(add_help=False)
    _add_global_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)
    for add in COMMANDS:
        add(commands, common)
    return parser


async def _run(args: argparse.Namespace) -> int:
    """Run the command; the first Ctrl-C cancels it cleanly (a second one interrupts)."""
    status: list[int] = []
    interrupted = False

    async def on_ctrl_c(scope: trio.CancelScope) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                interrupted = True
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_ctrl_c, nursery.cancel_scope)
        status.append(await args.run(args))
        nursery.cancel_scope.cancel()
    return 0 if interrupted or not status else int(status[0])


def _log_to(screen: Screen) -> None:
    """``-v``: the library's log records (reconnects, retries, rotations) as notes."""
    handler = ScreenLogHandler(screen)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("trio_feed")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-feed`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    args.screen = screen = Screen(status=getattr(args, "status", False)
                                  and not getattr(args, "json", False))
    if args.verbose:
        _log_to(screen)
    args.target = args.url if getattr(args, "url", None) else "the local exchange"
    if getattr(args, "live", False):
        args.target = LIVE_BASE_URL
    try:
        return trio.run(_run, args)
    except BaseException as exc:
        error = exc
    finally:
        screen.clear()
    # Not re-raised from inside the except clause: a leaf keeps its own __cause__
    # (which holds, for instance, why each connection attempt failed).
    found = leaves(error)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
        return 0
    if len(found) == 1:
        error = found[0]
    if isinstance(error, BrokenPipeError):
        # The reader (say `| head`) went away: stop quietly, and keep Python
        # from complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    if isinstance(error, Exception) and not args.debug:
        message, code = describe(error, args.target)
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return code
    raise error
