"""The part files of a sharded job, and how they reach the output exactly once.

A sharded job (:mod:`blender_core.batch.sharded`) writes each shard's output rows to its own part file in
a folder next to the output, ``OUT.parts/``, then merges the parts into ``OUT`` in shard order:

- **A part is complete or absent.** It is written to a temporary file in the same folder, flushed to disk,
  then renamed over its final name (``os.replace``, atomic). A shard ranked twice (a retried or duplicated
  task) renames the same content over the same name.
- **A part says what it was made from.** Its first line is a header with the shard's digest (a hash of
  the job's settings and of the keys and line fingerprints of the shard's records), and its name holds the
  digest too (``<shard>.<digest>.part.jsonl``), so the run reads only parts of its own plan: a part whose
  digest is not the one the current plan expects is stale, and is deleted and ranked again; a part that an
  actor of a killed run writes meanwhile (it outlives its driver for seconds) has a name of its own, unless
  it was made for the same records with the same settings, and then it is the same part.
- **A part remembers the records that gave no row.** A record can give no output line (``label-pairs``: no pair
  passed the policy and margin); its key fields are kept in the part apart from the rows, and merged into
  ``OUT.empty.jsonl`` beside the output (:func:`~blender_core.batch.output.empty_path`), so that a rerun skips it
  as it skips the records in ``OUT``.
- **A merge is journaled.** Before a part's lines are appended to ``OUT`` (and ``OUT.empty.jsonl``), the
  length of both is written to ``OUT.parts/merging.json``; the part is deleted once the lines are on disk, then
  the journal. A run that starts and finds a journal undoes the half-done merge (both files are cut back to
  those lengths) when the part is still there, so the merge is redone from it whole; when the part is gone,
  the merge had finished.
- **One job at a time.** Every run, in this process or on Ray, holds an exclusive lock on
  ``OUT.parts/lock`` (the ``filelock`` package: ``flock`` on POSIX, the system's file lock on Windows;
  released when its process ends, even by ``kill -9``) and says who it is in ``OUT.parts/owner.json``; a
  second run on the same output stops with an :class:`OutputBusyError` that names the run holding it
  (process, machine, start time, command), instead of writing beside it.

Example:
    >>> store = PartStore("ranked.jsonl")  # doctest: +SKIP
    >>> store.folder.name  # doctest: +SKIP
    'ranked.jsonl.parts'
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from blender_core.batch.local_ray import NOTE as RAY_NOTE
from blender_core.batch.output import empty_path

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part.jsonl"
#: a shard's part in progress (:mod:`blender_core.batch.partial`): deleted with the parts
PARTIAL_SUFFIX = ".partial.jsonl"
JOURNAL = "merging.json"
LOCK = "lock"
OWNER = "owner.json"
_TMP_PREFIX = ".tmp-"


class OutputBusyError(RuntimeError):
    """Another run is writing the same output."""


def parts_folder(out: str | Path) -> Path:
    """The folder of ``out``'s part files: ``OUT.parts`` beside it."""
    p = Path(out)
    return p.with_name(p.name + ".parts")


@dataclass(frozen=True)
class Part:
    """A part file read back.

    Attributes:
        shard: the shard's name.
        digest: the digest of the shard's plan it was made from.
        records: records ranked into it.
        pairs: how many of those were pair records.
        errors: records whose ranking failed, as errors-file objects (``line``, ``error``, ``text``, ``file``?).
        rows: the output rows, as JSON lines (bytes, each ending with a newline).
        empty: the key fields of the records that gave no row, as JSON lines (what ``OUT.empty.jsonl`` keeps).
    """

    shard: str
    digest: str
    records: int
    pairs: int
    errors: tuple[dict[str, Any], ...]
    rows: tuple[bytes, ...]
    empty: tuple[bytes, ...] = ()


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def encode_row(row: Mapping[str, Any]) -> bytes:
    """One output row as its JSON line (UTF-8, without the newline), or a ``ValueError`` saying why it cannot be one
    (a lone surrogate in a text: ``UnicodeEncodeError``), raised before the part is written, so that only its
    record is lost (and reported), never the part."""
    try:
        return json.dumps(row, ensure_ascii=False).encode("utf-8")
    except (TypeError, RecursionError) as exc:  # a value JSON cannot hold
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def part_name(shard: str, digest: str) -> str:
    """The file name of the part of ``shard`` made from the plan ``digest``."""
    return f"{shard}.{digest}{PART_SUFFIX}"


def write_part(
    folder: str | Path,
    shard: str,
    digest: str,
    rows: Sequence[bytes],
    *,
    records: int,
    pairs: int = 0,
    errors: Sequence[dict[str, Any]] = (),
    empty: Sequence[bytes] = (),
) -> Path:
    """Write a shard's part atomically (a temporary file, then ``os.replace``) and return its path.

    ``rows`` are the output lines, encoded (:func:`encode_row`), and ``empty`` the key fields of the records that
    gave no row, encoded alike (they follow the rows); the header is written in ASCII (JSON escapes), so no text of
    an error (a file name that is not UTF-8) can stop the part from being written.
    """
    folder = Path(folder)
    header = {
        "shard": shard,
        "digest": digest,
        "records": records,
        "pairs": pairs,
        "rows": len(rows),
        "empty": len(empty),
        "errors": list(errors),
    }
    final = folder / part_name(shard, digest)
    replace_file(final, b"\n".join([json.dumps(header).encode("ascii"), *rows, *empty]) + b"\n")
    return final


def read_part(path: str | Path) -> Part | None:
    """A part file, or None when it is missing or not a complete part (then it is never merged)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    lines = data.split(b"\n")
    if len(lines) < 2 or lines[-1] != b"":
        return None
    try:
        header = json.loads(lines[0])
        rows, empty = int(header["rows"]), int(header.get("empty", 0))  # an earlier version kept no empty records
        body = [line + b"\n" for line in lines[1:-1]]
        if len(body) != rows + empty:
            return None
        return Part(
            str(header["shard"]),
            str(header["digest"]),
            int(header["records"]),
            int(header["pairs"]),
            tuple(header["errors"]),
            tuple(body[:rows]),
            tuple(body[rows:]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class PartStore:
    """The part folder of one output: its parts, the merge journal and the lock (module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.empty = empty_path(self.out)
        self.folder = parts_folder(self.out)

    def path(self, shard: str, digest: str) -> Path:
        """Where the part of ``shard`` made from the plan ``digest`` goes."""
        return self.folder / part_name(shard, digest)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the output's lock for the block (``OutputBusyError``, naming the holder, when another run has it).

        The folder is removed on the way out when the run left nothing else in it (see :meth:`remove`).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self._acquire()
        try:
            replace_file(self.folder / OWNER, json.dumps(_owner()).encode())
            yield
        finally:
            with contextlib.suppress(OSError):  # who held it, said while it is still held (never the next holder's)
                (self.folder / OWNER).unlink(missing_ok=True)
            lock.release()
            # after the release: Windows deletes no file that is open; a folder holding more is kept
            with contextlib.suppress(OSError):
                if {p.name for p in self.folder.iterdir()} <= {LOCK}:
                    (self.folder / LOCK).unlink(missing_ok=True)
                    self.folder.rmdir()

    def check_free(self) -> None:
        """``OutputBusyError`` (naming the holder) when another run holds the lock now; takes nothing, creates
        nothing: a check to make before minutes of loading (the run takes the lock itself when it starts)."""
        if (self.folder / LOCK).exists():
            self._acquire().release()

    def _acquire(self) -> FileLock:
        lock = FileLock(self.folder / LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise OutputBusyError(
                f"another run is writing {self.out}: {self.holder()}. Wait for it to finish, or stop it, then "
                f"run again (its lock, {self.folder / LOCK}, is released when its process ends)"
            ) from exc
        return lock

    def holder(self) -> str:
        """Which run holds the lock, as its ``owner.json`` says: process, machine, start time and command."""
        try:
            who = json.loads((self.folder / OWNER).read_text(encoding="utf-8"))
            return f"process {int(who['pid'])} on {who['host']}, started {who['started']} ({who['command']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "a run that has not said who it is yet"

    def recover(self) -> None:
        """Undo a merge that a crash cut short (see the module docstring); a no-op without a journal."""
        journal = self.folder / JOURNAL
        try:
            state = json.loads(journal.read_text())
            shard, offset = str(state["shard"]), int(state["offset"])
            named = [self.folder / str(state["part"])] if "part" in state else self._parts_of(shard)
            empty_offset = int(state.get("empty_offset", -1))  # an earlier version merged no empty records
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError):
            # the journal itself was being written: the merge had not started, OUT is as it was
            logger.warning("%s: ignoring an unreadable merge journal", journal)
            journal.unlink()
            return
        if any(p.exists() for p in named):
            for path, length in ((self.out, offset), (self.empty, empty_offset)):
                if length >= 0 and path.exists() and path.stat().st_size > length:
                    logger.warning(
                        "%s: a merge of shard %s was cut short; cutting it back to %d bytes to redo it",
                        path,
                        shard,
                        length,
                    )
                    _truncate(path, length)
        journal.unlink()

    def merge(self, part: Part) -> None:
        """Append a part's rows to the output and its empty records to ``OUT.empty.jsonl`` (journaled), then delete
        the part."""
        journal = self.folder / JOURNAL
        offset = self.out.stat().st_size if self.out.exists() else 0
        empty_offset = self.empty.stat().st_size if self.empty.exists() else 0
        path = self.path(part.shard, part.digest)
        state = {"shard": part.shard, "part": path.name, "offset": offset, "empty_offset": empty_offset}
        replace_file(journal, json.dumps(state).encode())
        _append(self.out, b"".join(part.rows))
        if part.empty:
            _append(self.empty, b"".join(part.empty))
        path.unlink(missing_ok=True)
        journal.unlink()

    def shards_present(self) -> set[str]:
        """The shards that have a part file now (of any plan)."""
        if not self.folder.is_dir():
            return set()
        return {p.name.split(".", 1)[0] for p in self.folder.glob(f"*{PART_SUFFIX}")}

    def _parts_of(self, shard: str) -> list[Path]:
        """Every part file of ``shard`` (complete or in progress), of any plan (an earlier version named a part by its
        shard alone)."""
        return [
            *self.folder.glob(f"{shard}.*{PART_SUFFIX}"),
            *self.folder.glob(f"{shard}.*{PARTIAL_SUFFIX}"),
            self.folder / f"{shard}{PART_SUFFIX}",
        ]

    def discard(self, shard: str, keep: str | None = None) -> None:
        """Delete every part of ``shard`` (stale ones: of another plan, or unreadable) but the partial part of the
        plan ``keep``, which the shard resumes from."""
        for p in self._parts_of(shard):
            if keep is None or not (p.name.startswith(f"{shard}.{keep}.") and p.name.endswith(PARTIAL_SUFFIX)):
                p.unlink(missing_ok=True)

    def remove(self, *, keep_owner: bool = False) -> None:
        """Delete what this module put in the folder but the lock, which :meth:`locked` deletes with the folder
        once released (anything else is left, and the folder with it); ``keep_owner`` keeps the note of who holds
        the lock, for a run that goes on (starting over)."""
        if not self.folder.is_dir():
            return
        names = (JOURNAL, RAY_NOTE) if keep_owner else (JOURNAL, OWNER, RAY_NOTE)
        for p in self.folder.iterdir():
            if p.name.endswith((PART_SUFFIX, PARTIAL_SUFFIX)) or p.name.startswith(_TMP_PREFIX) or p.name in names:
                p.unlink(missing_ok=True)


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) and flush it to disk."""
    with path.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _truncate(path: Path, length: int) -> None:
    with path.open("r+b") as f:
        f.truncate(length)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, flushed to disk, renamed over it (atomic),
    and the rename itself flushed (POSIX: the folder's entry; Windows cannot open a folder, and needs not)."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
    try:
        _fsync_write(tmp, data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if os.name == "posix":
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _owner() -> dict[str, Any]:
    """Who this run is, for the message of a run that finds the output busy: process, machine, start, command."""
    argv = list(getattr(sys, "orig_argv", sys.argv)) or ["python"]
    command = " ".join(shlex.join([Path(argv[0]).name, *argv[1:]]).split())  # on one line, for a message
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command if len(command) <= 300 else command[:299] + "…",
    }
