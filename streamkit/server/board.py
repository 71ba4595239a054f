"""The workers' shared scoreboard: one row of numbers per worker in a shared memory mapping, so
that ``GET /metrics``, which the kernel hands to any one worker, reports them all.

Each worker of ``streamkit serve --workers N`` writes its own row (its pid, the time, its
counters and timing figures) a few times a second and whenever it answers ``/metrics``; any
worker reads every row. The mapping is a deleted temporary file the supervisor opens and hands
to each worker as an inherited file descriptor: nothing to name, nothing left behind when the
processes end, no lock (a row is written by its worker alone; a reader may see a row half old,
half new, each figure being one the worker published).
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Board", "Row"]

_HEAD = 3  # pid, publication time (Unix seconds), publications so far


@dataclass(frozen=True, slots=True)
class Row:
    """One worker's last publication.

    Attributes:
        worker: the worker's index (0-based).
        pid: its process id (0: it has not published yet).
        age: seconds since it published.
        values: its figures, by name.
    """

    worker: int
    pid: int
    age: float
    values: dict[str, float]


class Board:
    """Rows of float64 in a shared mapping, one per worker.

    Args:
        fd: a file descriptor of the shared file (made by :meth:`create`; not closed here
            until :meth:`close`).
        workers: how many rows.
        keys: the names of the figures in each row, in order (every process must agree).
        index: the row this process writes, or ``None`` for a reader only (the supervisor).
    """

    def __init__(self, fd: int, workers: int, keys: Sequence[str], index: int | None) -> None:
        self.fd = fd
        self.workers = workers
        self.keys = tuple(keys)
        self.index = index
        self._row = struct.Struct(f"={_HEAD + len(self.keys)}d")
        self._map = mmap.mmap(fd, self._row.size * workers)
        self._published = 0

    @classmethod
    def create(cls, workers: int, keys: Sequence[str]) -> Board:
        """A new, zeroed board for ``workers`` rows, on an already deleted temporary file whose
        descriptor (:attr:`fd`) a child inherits (``pass_fds``)."""
        size = struct.calcsize(f"={_HEAD + len(keys)}d") * workers
        with tempfile.TemporaryFile() as file:  # deleted at once on POSIX
            fd = os.dup(file.fileno())
        os.ftruncate(fd, size)
        return cls(fd, workers, keys, None)

    def publish(self, values: Sequence[float]) -> None:
        """Write this process's row: its pid, the time and ``values`` (in :attr:`keys` order)."""
        if self.index is None:
            raise RuntimeError("this board was opened to read only")
        self._published += 1
        self._row.pack_into(
            self._map,
            self._row.size * self.index,
            os.getpid(),
            time.time(),
            self._published,
            *values,
        )

    def rows(self) -> list[Row]:
        """Every worker's last publication, in worker order."""
        now = time.time()
        rows = []
        for i in range(self.workers):
            pid, when, _, *values = self._row.unpack_from(self._map, self._row.size * i)
            age = max(0.0, now - when) if pid else 0.0
            rows.append(Row(i, int(pid), age, dict(zip(self.keys, values, strict=True))))
        return rows

    def close(self) -> None:
        """Unmap the board and close its descriptor."""
        self._map.close()
        os.close(self.fd)
