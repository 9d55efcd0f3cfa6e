"""A shard's part in progress: what a stopped shard keeps, chunk by chunk.

While a shard is ranked (:func:`~blender_core.batch.shards.rank_shard`), each chunk but the last is appended to
``<shard>.<digest>.partial.jsonl`` in the part folder as soon as it is ranked, and flushed to disk; then the
complete part is written (:func:`~blender_core.batch.parts.write_part`) and the partial one deleted. A shard that
was stopped part way (Ctrl-C, ``kill -9``, an actor lost with its node) is ranked again from where its partial part
ends, not from its start, so a stopped run loses at most the chunk in progress of each shard in progress; and the
records a progress bar counts are records written to disk. The file is named by the shard's digest, as a part is
(:mod:`blender_core.batch.parts`), so only a run with the same plan and settings takes it up.

One block per chunk: a header line (ASCII JSON: the input lines the chunk handled, its records, pairs, errors, and
how many rows and empty records follow), then its rows, then the key lines of its records that gave no row. A block
cut short by a crash is dropped when the file is read, and cut off before the next append; a block that holds a line
an earlier block holds (two attempts at one shard at once) is skipped.

Example:
    >>> progress = PartialPart(Path("ranked.jsonl.parts"), "0000-00000000", "9c1e0f4b")  # doctest: +SKIP
    >>> sorted(progress.lines)  # doctest: +SKIP
    [1, 2, 3]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_core.batch.parts import PARTIAL_SUFFIX

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """What one chunk of a shard gave: the input lines it handled (ranked, failed or unwritable), the records written
    (``pairs`` of them pair records), the errors (errors-file objects), the rows and the key lines of the records
    that gave no row (encoded JSON, without newlines)."""

    lines: tuple[int, ...]
    records: int
    pairs: int
    errors: tuple[dict[str, Any], ...]
    rows: tuple[bytes, ...]
    empty: tuple[bytes, ...]

    def encode(self) -> bytes:
        header = {
            "lines": list(self.lines),
            "records": self.records,
            "pairs": self.pairs,
            "rows": len(self.rows),
            "empty": len(self.empty),
            "errors": list(self.errors),
        }
        return b"".join(line + b"\n" for line in (json.dumps(header).encode("ascii"), *self.rows, *self.empty))


def partial_path(folder: str | Path, shard: str, digest: str) -> Path:
    """The partial part of ``shard`` made from the plan ``digest``."""
    return Path(folder) / f"{shard}.{digest}{PARTIAL_SUFFIX}"


def _blocks(data: bytes) -> Iterator[tuple[Block, int]]:
    """The complete blocks of a partial part, each with the offset where it ends."""
    lines = data.split(b"\n")[:-1]  # what follows the last newline is a line cut short
    offset, k = 0, 0
    while k < len(lines):
        try:
            header = json.loads(lines[k])
            rows, empty = int(header["rows"]), int(header["empty"])
            block_lines = tuple(int(n) for n in header["lines"])
            records, pairs, errors = int(header["records"]), int(header["pairs"]), tuple(header["errors"])
        except (ValueError, KeyError, TypeError):
            return
        body = lines[k + 1 : k + 1 + rows + empty]
        if len(body) < rows + empty:
            return
        offset += sum(len(line) + 1 for line in (lines[k], *body))
        k += 1 + rows + empty
        yield Block(block_lines, records, pairs, errors, tuple(body[:rows]), tuple(body[rows:])), offset


class PartialPart:
    """The chunks of a shard written so far (read from its partial part, if an earlier attempt left one)."""

    def __init__(self, folder: str | Path, shard: str, digest: str) -> None:
        self.path = partial_path(folder, shard, digest)
        self.blocks: list[Block] = []
        self.lines: set[int] = set()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = 0
        for block, block_end in _blocks(data):
            end = block_end
            if self.lines.isdisjoint(block.lines):
                self.blocks.append(block)
                self.lines.update(block.lines)
        if end < len(data):  # a block cut short: appends start after the last whole one
            logger.info("%s: dropping %d bytes of a chunk cut short", self.path, len(data) - end)
            with self.path.open("r+b") as f:
                f.truncate(end)

    def add(self, block: Block, *, save: bool) -> None:
        """Take a chunk's block; ``save`` appends it to the partial part first (flushed to disk)."""
        if save:
            with self.path.open("ab") as f:
                f.write(block.encode())
                f.flush()
                os.fsync(f.fileno())
        self.blocks.append(block)
        self.lines.update(block.lines)

    def _ordered(self) -> list[Block]:
        return sorted(self.blocks, key=lambda b: min(b.lines, default=0))

    @property
    def records(self) -> int:
        return sum(b.records for b in self.blocks)

    @property
    def pairs(self) -> int:
        return sum(b.pairs for b in self.blocks)

    def rows(self) -> list[bytes]:
        """Every row so far, in input order."""
        return [row for b in self._ordered() for row in b.rows]

    def empty(self) -> list[bytes]:
        """The key lines of every record so far that gave no row, in input order."""
        return [e for b in self._ordered() for e in b.empty]

    def errors(self) -> list[dict[str, Any]]:
        return [e for b in self._ordered() for e in b.errors]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def records_saved(path: Path) -> int:
    """How many records a partial part holds (0 when there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    seen: set[int] = set()
    records = 0
    for block, _ in _blocks(data):
        if seen.isdisjoint(block.lines):
            seen.update(block.lines)
            records += block.records
    return records


def ramp(items: Sequence[Any], chunk_size: int) -> Iterator[Sequence[Any]]:
    """``items`` in chunks of 1, 2, 4… up to ``chunk_size``: the first records of a shard are written (and counted)
    within seconds, whatever the chunk size, and the later chunks are full."""
    start, size = 0, 1
    while start < len(items):
        yield items[start : start + size]
        start += size
        size = min(size * 2, chunk_size)
