"""One worker of ``streamkit serve --workers N`` (``python -m streamkit.server._worker``).

Started by :func:`~.workers.serve_workers`, which writes its settings (a pickled dict: the
:class:`~.config.ServerConfig`, this worker's index, the worker count, and the inherited file
descriptors of its listening socket and of the shared scoreboard) on its stdin. It serves until
SIGTERM or SIGINT, saying on stdout when it accepts connections.
"""

from __future__ import annotations

import pickle
import socket
import sys

from .app import App
from .board import Board
from .lateness import SaturationLog
from .runner import serve_socket
from .stats import SNAPSHOT_KEYS
from .workers import READY


def main() -> int:
    """Serve as the worker described on stdin; returns the exit status."""
    message = pickle.loads(sys.stdin.buffer.read())
    index: int = message["index"]
    sock = socket.socket(fileno=message["sock"])
    app = App(message["config"])
    app.stats.board = Board(message["board"], message["workers"], SNAPSHOT_KEYS, index)

    def started() -> None:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()

    try:
        serve_socket(app, sock, SaturationLog(f"streamkit serve: worker {index}"), started)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
