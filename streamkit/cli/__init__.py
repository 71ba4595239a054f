"""The ``streamkit`` command: ``serve`` the bundled server, ``chat`` and ``bench`` any endpoint.

``streamkit chat`` writes the reply's text, and nothing else, to stdout as tokens arrive; status and
errors go to stderr, so ``streamkit chat "…" > reply.txt`` keeps a clean transcript. Exit status:
0 success, 1 the stream failed (the partial text is still written), 2 bad usage, 130 interrupted.

``streamkit bench`` runs a load experiment (see :mod:`streamkit.load`): a progress bar on stderr,
the report on stdout, per-request results to ``--output``. Exit status 0 when every request
completed, 1 when some failed (the report says which and why; when all failed, one line with the
first error), 2 bad usage, 130 interrupted.

One module per subcommand (:mod:`.chat`, :mod:`.bench`, :mod:`.serve`): each adds its parser and
runs it; this one only dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import UsageError
from . import bench, chat, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamkit", description="See, tune and measure LLM token streaming."
    )
    parser.add_argument("--version", action="version", version=f"streamkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,chat,bench}")
    serve.add_parser(sub)
    chat.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except UsageError as exc:
        print(f"streamkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``streamkit bench | head``): stop quietly, as Unix tools do, and
        # keep Python from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
