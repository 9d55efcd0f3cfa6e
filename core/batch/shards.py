"""The unit of work of a sharded job: a shard, how it is ranked, and who ranks it.

A :class:`ShardTask` is one shard as plain data (its name, its digest, its records' lines), so that it
travels to a Ray actor as is. :func:`rank_shard` ranks a shard's records in chunks, as ``rank_file`` does,
and writes the shard's part file (:mod:`blender_core.batch.parts`); it returns a :class:`ShardDone`. What
is written per ranked record is a :class:`RowMaker`: :class:`RankRows` writes the ``rank`` output (one line
per record), :class:`~blender_core.batch.pairs.PairRows` preference pairs (0..k lines per record). A
:class:`JobSpec` holds everything a shard is ranked with but the ranker.

An :class:`Executor` ranks a list of shards: :class:`LocalExecutor` one after the other in this process, the
Ray executor (:mod:`blender_core.batch.ray_engine`) on a pool of Ray actors. The driver that plans the
shards and merges their parts is :mod:`blender_core.batch.sharded`.

Example:
    >>> line = '{"prompt": "2+2?", "candidates": ["4", "5"]}'
    >>> task = ShardTask("0000-00000000", "9c1e0f4b", "sets.jsonl", None, ((1, line),))
    >>> ShardTask.from_json(task.to_json()) == task
    True
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from blender_core.batch.parts import write_part
from blender_core.batch.plan import Item, LineError, error_line, parse_line, rank_chunk, ranked_record
from blender_core.ranking.interface import Ranker


class RowMaker(Protocol):
    """What a job writes for each ranked record: 0..k output rows."""

    @property
    def name(self) -> str:
        """A short description of what it writes (part of every shard's digest)."""
        ...

    def rows(self, item: Item, scores: list[float], ranks: list[int], best: int) -> list[dict[str, Any]]:
        """The output rows of one ranked record (each carries the record's key fields)."""
        ...


@dataclass(frozen=True)
class RankRows:
    """The ``rank`` output: one line per record with its scores, ranks and best candidate."""

    name: str = "rank"

    def rows(self, item: Item, scores: list[float], ranks: list[int], best: int) -> list[dict[str, Any]]:
        return [ranked_record(item, scores, ranks, best)]


@dataclass(frozen=True)
class ShardTask:
    """One shard to rank, as an executor receives it (plain data, so it travels to a Ray actor as is).

    Attributes:
        name: the shard's name, ``<input index>-<shard number>`` (zero-padded), which orders the shards.
        digest: the hash of the job's settings and the shard's records' keys and line fingerprints.
        input_name: how messages name its input.
        file: its input's name when the job reads several inputs, else None (as in :class:`Item`).
        lines: the shard's records to rank: (line number, line as UTF-8 text).
    """

    name: str
    digest: str
    input_name: str
    file: str | None
    lines: tuple[tuple[int, str], ...]

    def to_json(self) -> str:
        """The task as one JSON string (a Ray Data column)."""
        return json.dumps(
            [self.name, self.digest, self.input_name, self.file, self.lines], ensure_ascii=False
        )

    @classmethod
    def from_json(cls, text: str) -> ShardTask:
        """The task back from :meth:`to_json`."""
        name, digest, input_name, file, lines = json.loads(text)
        return cls(name, digest, input_name, file, tuple((int(n), str(t)) for n, t in lines))


@dataclass(frozen=True)
class ShardDone:
    """A shard whose part was written: its name, how many records and rows it holds, where it ran."""

    name: str
    records: int
    rows: int
    node: str = ""


def rank_shard(
    ranker: Ranker,
    task: ShardTask,
    *,
    maker: RowMaker,
    strategy: str,
    chunk_size: int,
    score_key: str | None,
    folder: str | Path,
    node: str = "",
) -> ShardDone:
    """Rank a shard's records (in chunks of ``chunk_size``, as ``rank_file`` does), then write its part."""
    items: list[Item] = []
    raws: dict[int, str] = {}
    errors: list[dict[str, Any]] = []
    for lineno, text in task.lines:
        raw = text.encode("utf-8")
        item, reason = parse_line(task.input_name, lineno, raw, score_key, file=task.file)
        raws[lineno] = text
        if item is None:  # the driver parsed it fine: only a changed parser gets here
            errors.append(
                json.loads(error_line(LineError(lineno, reason or "unreadable", task.file or ""), raw))
            )
        else:
            items.append(item)
    rows: list[dict[str, Any]] = []
    records = pairs = 0
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        for item, result in zip(chunk, rank_chunk(ranker, chunk, strategy), strict=True):
            if isinstance(result, str):
                error = LineError(item.line, result, task.file or "")
                errors.append(json.loads(error_line(error, raws[item.line].encode("utf-8"))))
                continue
            rows.extend(maker.rows(item, *result))
            records += 1
            pairs += item.is_pair
    write_part(folder, task.name, task.digest, rows, records=records, pairs=pairs, errors=errors)
    return ShardDone(task.name, records, len(rows), node)


class Executor(Protocol):
    """Ranks shards and writes their parts; yields each shard as its part is written (any order)."""

    def run(self, tasks: Sequence[ShardTask], folder: Path, job: JobSpec) -> Iterator[ShardDone]:
        """Rank every task, writing parts to ``folder``."""
        ...


@dataclass(frozen=True)
class JobSpec:
    """What every shard of a job is ranked with (all but the ranker, which the executor holds)."""

    maker: RowMaker
    strategy: str = "full"
    chunk_size: int = 32
    score_key: str | None = None
    ranker_name: str = ""

    def settings(self) -> str:
        """The settings a part depends on, as text (hashed into every shard's digest)."""
        return json.dumps([self.maker.name, self.strategy, self.score_key, self.ranker_name])


@dataclass(frozen=True)
class LocalExecutor:
    """Ranks the shards one after the other in this process."""

    ranker: Ranker

    def run(self, tasks: Sequence[ShardTask], folder: Path, job: JobSpec) -> Iterator[ShardDone]:
        for task in tasks:
            yield rank_shard(
                self.ranker,
                task,
                maker=job.maker,
                strategy=job.strategy,
                chunk_size=job.chunk_size,
                score_key=job.score_key,
                folder=folder,
            )
