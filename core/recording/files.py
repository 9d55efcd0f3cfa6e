"""The traffic files: named so they sort by time, rotated by size and age, written a whole line at a time.

- **Names**: ``traffic-YYYYmmdd-HHMMSS-NNNN.jsonl`` (UTC, the time the file was opened), created exclusively, so
  two writers (two server processes on one folder) never share a file and ``sorted()`` is the order written.
- **Whole lines**: a line is handed to the system in one ``write`` of its complete bytes, newline included
  (unbuffered: nothing waits in a Python buffer, so a process killed afterwards loses nothing written). A write
  that fails part way (a full disk) is cut back to the last whole line.
- **Repair**: a crash in the middle of a write can still leave a torn last line. When a writer opens its first
  file, it checks every traffic file of the folder that no live writer holds (each writer holds its file
  under an advisory lock): a last line without its newline is completed when it is a whole JSON record, else cut
  off. Readers skip a torn last line anyway (``rank`` and ``label-pairs`` report it as a bad line and go on).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks; repair checks every file
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PREFIX = "traffic-"
SUFFIX = ".jsonl"
_TAIL_BLOCK = 1 << 16

#: opens a new traffic file for appending, returning its descriptor (the default: exclusive creation)
Opener = Callable[[Path], int]


def create_exclusive(path: Path) -> int:
    """Create ``path`` for appending; FileExistsError when it exists."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)


def traffic_name(seconds: float, n: int) -> str:
    """The name of a traffic file opened at ``seconds`` (epoch), the ``n``-th of that second."""
    return f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S', time.gmtime(seconds))}-{n:04d}{SUFFIX}"


def traffic_files(folder: str | Path) -> list[Path]:
    """The traffic files of a folder, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{PREFIX}*{SUFFIX}") if p.is_file())


def _lock(fd: int, *, wait: bool) -> bool:
    """Take the advisory lock of an open file (True), or say another writer holds it (False)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: nothing to guard with
        return True
    return True


def _last_newline(fd: int, size: int) -> int:
    """The offset just past the last newline of the file (0: none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        block = os.pread(fd, end - start, start)
        k = block.rfind(b"\n")
        if k >= 0:
            return start + k + 1
        end = start
    return 0


def repair_tail(path: Path) -> str | None:
    """Complete or cut a torn last line of ``path`` (see the module); what was done, or None (nothing to do, or
    a live writer holds the file)."""
    fd = os.open(path, os.O_RDWR)
    try:
        if not _lock(fd, wait=False):
            return None
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return None
        start = _last_newline(fd, size)
        tail = os.pread(fd, size - start, start)
        try:
            whole = isinstance(json.loads(tail), dict)
        except ValueError:  # bad JSON, or bytes that are not UTF-8
            whole = False
        if whole:
            os.pwrite(fd, b"\n", size)
            return f"completed its last line ({len(tail)} bytes) with a newline"
        os.ftruncate(fd, start)
        return f"cut off a torn last line ({len(tail)} bytes) left by a crash"
    finally:
        os.close(fd)


def repair_folder(folder: Path) -> None:
    """Repair the torn last line of every traffic file in ``folder`` that no live writer holds."""
    for path in traffic_files(folder):
        try:
            done = repair_tail(path)
        except OSError as exc:
            logger.warning("%s: could not check its last line: %s", path, exc)
            continue
        if done:
            logger.warning("%s: %s", path, done)


class TrafficFiles:
    """Appends whole lines to rotated traffic files in one folder (one writer thread calls it).

    Args:
        folder: where the files go (created, with its parents, at the first write).
        rotate_bytes: a new file before one would pass this size (a single longer line still gets a file).
        rotate_seconds: a new file once one is this old (None: by size only).
        opener: opens a new file (default :func:`create_exclusive`).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        rotate_bytes: int,
        rotate_seconds: float | None,
        opener: Opener | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.opener = opener or create_exclusive
        self.current: Path | None = None
        self.files = 0  # files opened
        self._fd: int | None = None
        self._size = 0
        self._opened = 0.0
        self._checked = False
        self._broken = False  # the last failed write could not be cut back: its file is done with

    def _due(self, length: int) -> bool:
        if self._fd is None or self._broken:
            return True
        if self._size and self._size + length > self.rotate_bytes:
            return True
        return self.rotate_seconds is not None and time.monotonic() - self._opened >= self.rotate_seconds

    def _open(self) -> None:
        self.close()
        if not self._checked:
            self.folder.mkdir(parents=True, exist_ok=True)
            repair_folder(self.folder)
            self._checked = True
        now = time.time()
        for n in range(1, 10_000):
            path = self.folder / traffic_name(now, n)
            try:
                fd = self.opener(path)
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"{self.folder}: 9999 traffic files opened within one second")
        _lock(fd, wait=True)
        self._fd, self.current, self._broken = fd, path, False
        self._size, self._opened = os.fstat(fd).st_size, time.monotonic()
        self.files += 1
        logger.info("recording traffic to %s", path)

    def write(self, line: bytes) -> None:
        """Append one whole line (rotating first when due).

        Raises:
            OSError: the line could not be written (a full disk, a folder gone); nothing of it stays in the file
                when the file can be cut back, else the next line goes to a new file.
        """
        if self._due(len(line)):
            self._open()
        assert self._fd is not None
        start, done = self._size, 0
        try:
            while done < len(line):  # a regular file takes it in one call; a short write is finished here
                done += os.write(self._fd, line[done:])
        except OSError:
            if done:
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    self._broken = True
            raise
        self._size = start + done

    def close(self) -> None:
        """Close the current file, its lines flushed to the disk."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
