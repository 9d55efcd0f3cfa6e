"""The unit of work of a sharded job: a shard, how it is ranked, and who ranks it.

A :class:`ShardTask` is one shard as plain data (its name, its digest, its records' lines), so that it
travels to a Ray actor as is. :func:`rank_shard` ranks a shard's records in chunks (each chunk's comparisons
batched together) and writes the shard's part file (:mod:`blender_core.batch.parts`); it returns a
:class:`ShardDone`. What is written per ranked record is a :class:`RowMaker`: :class:`RankRows` writes the
``rank`` output (one line per record), :class:`~blender_core.batch.pairs.PairRows` preference pairs (0..k
lines per record). A :class:`JobSpec` holds everything a shard is ranked with but the ranker, and travels
whole.

An :class:`Executor` ranks the shards the driver plans: :class:`LocalExecutor` one after the other in this
process, the Ray executor (:mod:`blender_core.batch.ray_executor`) on a pool of Ray actors. Both write the
same parts through :func:`rank_shard`; the driver that plans the shards and merges their parts, the one
engine of every batch job, is :mod:`blender_core.batch.sharded`.

Example:
    >>> line = '{"prompt": "2+2?", "candidates": ["4", "5"]}'
    >>> task = ShardTask("0000-00000000", "9c1e0f4b", "sets.jsonl", None, ((1, line),))
    >>> ShardTask.from_json(task.to_json()) == task
    True
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from blender_core.base.validation import check_choice
from blender_core.batch.partial import Block, PartialPart, ramp
from blender_core.batch.parts import encode_row, write_part
from blender_core.batch.plan import (
    Item,
    LineError,
    error_line,
    parse_line,
    rank_chunk,
    ranked_record,
    record_head,
)
from blender_core.ranking.interface import Ranker
from blender_core.ranking.registry import RankerSpec, load_ranker
from blender_core.ranking.strategies import STRATEGIES


class RowMaker(Protocol):
    """What a job writes for each ranked record: 0..k output rows."""

    @property
    def name(self) -> str:
        """A short description of what it writes (part of every shard's digest)."""
        ...

    def settings(self) -> dict[str, Any]:
        """What the output records of it: the command that writes it (``job``), and the settings of its rows."""
        ...

    def rows(
        self, item: Item, scores: list[float], ranks: list[int], best: int, scores_order: bool = True
    ) -> list[dict[str, Any]]:
        """The output rows of one ranked record (each carries the record's key fields); ``scores_order``:
        whether its scores order the candidates (a tournament's do not)."""
        ...


@dataclass(frozen=True)
class RankRows:
    """The ``rank`` output: one line per record with its scores, ranks and best candidate."""

    name: str = "rank"

    def settings(self) -> dict[str, Any]:
        return {"job": "rank"}

    def rows(
        self, item: Item, scores: list[float], ranks: list[int], best: int, scores_order: bool = True
    ) -> list[dict[str, Any]]:
        return [ranked_record(item, scores, ranks, best, scores_order)]


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
    job: JobSpec,
    folder: str | Path,
    *,
    node: str = "",
    on_chunk: Callable[[int], None] | None = None,
) -> ShardDone:
    """Rank a shard's records in chunks (1, 2, 4… records, then ``job.chunk_size``; each chunk's comparisons batched
    together), each chunk written to the shard's partial part as it is ranked (:mod:`blender_core.batch.partial`),
    then write its part. A shard that an earlier attempt left part way resumes after its last chunk written.
    ``on_chunk`` is called with the number of records each chunk handled (ranked or failed) once they are on disk,
    and first with those an earlier attempt handled.

    A line that does not parse here (as the driver parsed it) and a record whose ranking fails or whose output
    cannot be written (:func:`~blender_core.batch.parts.encode_row`) are errors of the part, reported by the driver
    as bad lines: nothing a record holds stops the shard.
    """
    items: list[Item] = []
    raws: dict[int, str] = {}
    errors: list[dict[str, Any]] = []
    for lineno, text in task.lines:
        raw = text.encode("utf-8")
        item, reason = parse_line(task.input_name, lineno, raw, job.score_key, file=task.file)
        raws[lineno] = text
        if item is None:  # the driver parsed it fine: only a changed parser gets here
            errors.append(
                json.loads(error_line(LineError(lineno, reason or "unreadable", task.file or ""), raw))
            )
        else:
            items.append(item)
    progress = PartialPart(folder, task.name, task.digest)
    todo = [item for item in items if item.line not in progress.lines]
    if on_chunk is not None and len(todo) < len(items):
        on_chunk(len(items) - len(todo))
    chunks = list(ramp(todo, job.chunk_size))
    for k, chunk in enumerate(chunks):
        block = _rank_block(ranker, chunk, job, task.file or "", raws)
        last = k == len(chunks) - 1
        progress.add(block, save=not last)  # the last chunk goes straight into the part
        if on_chunk is not None and not last:
            on_chunk(len(chunk))
    rows = progress.rows()
    write_part(
        folder,
        task.name,
        task.digest,
        rows,
        records=progress.records,
        pairs=progress.pairs,
        errors=[*errors, *progress.errors()],
        empty=progress.empty(),
    )
    progress.remove()
    if on_chunk is not None and chunks:
        on_chunk(len(chunks[-1]))
    return ShardDone(task.name, progress.records, len(rows), node)


def _rank_block(ranker: Ranker, chunk: Sequence[Item], job: JobSpec, file: str, raws: Mapping[int, str]) -> Block:
    """Rank one chunk and encode what it gives: each record's rows (or its key fields, when it gives none), or
    its error."""
    rows: list[bytes] = []
    empty: list[bytes] = []
    errors: list[dict[str, Any]] = []
    records = pairs = 0
    for item, result in zip(chunk, rank_chunk(ranker, chunk, job.strategy), strict=True):
        if isinstance(result, str):
            errors.append(json.loads(error_line(LineError(item.line, result, file), raws[item.line].encode("utf-8"))))
            continue
        try:  # each row encoded now: a record that cannot be written is reported, the part still written
            encoded = [encode_row(row) for row in job.maker.rows(item, *result)]
            if not encoded:  # remembered, so that a rerun does not rank it again
                empty.append(encode_row(record_head(item)))
        except ValueError as exc:
            error = LineError(item.line, f"its output cannot be written as UTF-8 JSON ({exc})", file)
            errors.append(json.loads(error_line(error, raws[item.line].encode("utf-8"))))
            continue
        rows.extend(encoded)
        records += 1
        pairs += item.is_pair
    return Block(tuple(item.line for item in chunk), records, pairs, tuple(errors), tuple(rows), tuple(empty))


#: what an executor calls as records of a shard are handled before its part is written: (shard, records)
Progress = Callable[[str, int], None]


class Executor(Protocol):
    """Ranks shards and writes their parts; yields each shard as its part is written (any order)."""

    def run(
        self, tasks: Iterable[ShardTask], folder: Path, job: JobSpec, progress: Progress | None = None
    ) -> Iterator[ShardDone]:
        """Rank every task, writing parts to ``folder``. ``tasks`` may be read lazily (the driver plans them
        while it reads the inputs); ``progress`` may be called within a shard, before it is yielded."""
        ...


@dataclass(frozen=True)
class JobSpec:
    """What every shard of a job is ranked with (all but the ranker, which the executor holds). It travels
    whole: to the executor, and on Ray to every actor.

    Attributes:
        maker: what is written per ranked record (:class:`RankRows`, or preference pairs).
        strategy: the ranking strategy (``full``, ``sort``, ``knockout``, ``bubble``).
        chunk_size: records per ``rank`` call (the ranker batches, and sorts by length, a chunk's comparisons).
        score_key: MixInstruct only: which score of the candidates the data uses (parsing needs it).
        ranker_name: the ranker's spec name: a part made by another ranker is not reused.
        ranker_options: the ranker's loading options that change its scores (``revision``, ``dtype``,
            ``max_length``…; :func:`~blender_core.batch.settings.row_options`), as (name, value) pairs.
    """

    maker: RowMaker
    strategy: str = "full"  # every candidate scored: what the output's scores and ranks promise
    chunk_size: int = 32  # its comparisons fill batches, sorted by length; a failed chunk is redone 1 by 1
    score_key: str | None = None
    ranker_name: str = ""
    ranker_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_choice(self.strategy, STRATEGIES, "strategy")
        check_chunk_size(self.chunk_size)

    def settings(self) -> str:
        """The settings a part depends on, as text (hashed into every shard's digest)."""
        given: list[Any] = [self.maker.name, self.strategy, self.score_key, self.ranker_name]
        if self.ranker_options:  # only then: a part of an earlier version, made with the same settings, is reused
            given.append([list(pair) for pair in self.ranker_options])
        return json.dumps(given)

    def record(self) -> dict[str, Any]:
        """The settings the output records (:mod:`blender_core.batch.settings`): every one that changes its rows."""
        options = dict(self.ranker_options)
        record = self.maker.settings()
        record.update(ranker=self.ranker_name, revision=options.pop("revision", None), ranker_options=options)
        record.update(strategy=self.strategy, score_key=self.score_key)
        return record


def check_chunk_size(chunk_size: int, name: str = "chunk_size") -> None:
    """A ``ValueError`` unless ``chunk_size`` is a positive int."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{name} must be a positive int, got {chunk_size!r}")


@dataclass(frozen=True)
class LocalExecutor:
    """Ranks the shards one after the other in this process, as the driver plans them (so that memory holds one
    shard at a time), reporting progress after each chunk.

    Attributes:
        ranker: a ranker object, or any spec ``load_ranker`` accepts (loaded when the first shard is ranked,
            so a run with nothing to rank loads nothing).
        options: loading options for ``load_ranker`` (with a spec).
    """

    ranker: RankerSpec
    options: Mapping[str, Any] = field(default_factory=dict)

    def run(
        self, tasks: Iterable[ShardTask], folder: Path, job: JobSpec, progress: Progress | None = None
    ) -> Iterator[ShardDone]:
        ranker: Ranker | None = None
        for task in tasks:
            if ranker is None:
                ranker = load_ranker(self.ranker, **self.options)
            on_chunk = None if progress is None else functools.partial(progress, task.name)
            yield rank_shard(ranker, task, job, folder, on_chunk=on_chunk)
