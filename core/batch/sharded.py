"""The driver of a sharded job: plan the shards, hand them to an executor, merge their parts into the output
exactly once. The engine behind ``rank --engine ray`` and ``label-pairs``.

:func:`run_sharded` reads the inputs in one pass (:class:`~blender_core.batch.plan.Scan`: bad lines are
reported, and written to the errors file, as the single-process ``rank`` reports them; records already in
the output are skipped), cuts the records to rank into **shards by input position** (shard ``k`` of input
``i`` holds the records of lines ``k*S+1 .. (k+1)*S``; ``S`` is ``shard_size``), hands the shards that have
no valid part yet to an executor, and merges the parts into the output **in shard order**, so the output is
in input order. The shards, what is written per record, and the executors that rank them (in this process or
on Ray actors) are :mod:`blender_core.batch.shards`; the part files are :mod:`blender_core.batch.parts`.

Exactly once: every record to rank is in exactly one shard; a shard's rows reach the output only through
its part, which is complete or absent and pinned to the shard's records by a digest; parts are merged one
at a time, journaled, and deleted once merged; a merged record is never planned again (resume by key). A
run killed at any point and started again with the same arguments therefore ends with every record's rows
in the output exactly once.

Example:
    >>> from blender_core.batch.shards import LocalExecutor
    >>> from blender_core.ranking import load_ranker
    >>> ex = LocalExecutor(load_ranker("builtin:pairrm-minilm-l6"))  # doctest: +SKIP
    >>> report = run_sharded(["a.jsonl", "b.jsonl"], "ranked.jsonl", ex)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blender_core.base.validation import check_choice
from blender_core.batch.output import Key, Written, check_errors_path, check_output_path, check_writable
from blender_core.batch.parts import PartStore, read_part
from blender_core.batch.plan import (
    Item,
    LineError,
    Scan,
    error_line,
    read_output,
    warn_changed,
)
from blender_core.batch.rank_file import BatchRankReport, PartialInputError, check_chunk_size
from blender_core.batch.resume import check_unchanged
from blender_core.batch.shards import Executor, JobSpec, RankRows, ShardDone, ShardTask
from blender_core.batch.sources import FileInput, Input
from blender_core.ranking.strategies import STRATEGIES

logger = logging.getLogger(__name__)

#: records per shard by default: a few seconds to a minute of ranking, few enough part files
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class ShardedReport(BatchRankReport):
    """What a sharded run did: :class:`~blender_core.batch.rank_file.BatchRankReport`'s fields (``written``:
    records whose rows reached the output in this run), and:

    Attributes:
        rows: output lines written by this run (for ``rank``, one per record).
        shards_ranked: shards ranked by this run.
        shards_reused: shards whose part an earlier, interrupted run had written (merged, not ranked again).
    """

    rows: int = 0
    shards_ranked: int = 0
    shards_reused: int = 0


class ShardJobError(RuntimeError):
    """The executor failed (e.g. a Ray task failed more often than its retries allow); the parts written so
    far are kept, and the same command resumes."""


@dataclass
class _Plan:
    """The shards of a run, built while scanning."""

    size: int
    several: bool
    settings: str
    shards: list[ShardTask] = field(default_factory=list)
    _current: tuple[int, int] | None = None
    _lines: list[tuple[int, str]] = field(default_factory=list)
    _keys: list[str] = field(default_factory=list)
    _source: Input | None = None

    def add(self, index: int, source: Input, item: Item, raw: bytes) -> None:
        where = (index, (item.line - 1) // self.size)
        if where != self._current:
            self.close()
            self._current, self._source = where, source
        self._lines.append((item.line, raw.decode("utf-8")))
        self._keys.append(json.dumps([item.key[0], item.key[1], item.line_hash], ensure_ascii=False))

    def close(self) -> None:
        if self._current is None or not self._lines:
            return
        assert self._source is not None
        digest = hashlib.blake2b(
            "\n".join([self.settings, *self._keys]).encode("utf-8", "surrogatepass"), digest_size=16
        ).hexdigest()
        index, number = self._current
        name = f"{index:04d}-{number:08d}"
        file = self._source.name if self.several else None
        self.shards.append(ShardTask(name, digest, self._source.name, file, tuple(self._lines)))
        self._current, self._lines, self._keys = None, [], []


def as_inputs(source: str | Path | Input | Iterable[str | Path | Input]) -> list[Input]:
    """The inputs of a job: a path, an :class:`~blender_core.batch.sources.Input`, or a list of them."""
    if isinstance(source, (str, Path)):
        return [FileInput.of(source)]
    if hasattr(source, "lines") and hasattr(source, "name"):
        return [source]  # type: ignore[list-item]
    items = list(source)  # type: ignore[arg-type]
    out: list[Input] = [FileInput.of(s) if isinstance(s, (str, Path)) else s for s in items]
    if not out:
        raise ValueError("no input given; pass at least one file")
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"the input {repeated[0]!r} is given more than once; pass each input once")
    return out


def check_job_paths(inputs: Sequence[Input], out_path: str | Path, errors_path: str | Path | None) -> Path:
    """Check that every file input exists and that the output (and errors file) can take the job's lines, as
    ``rank_file`` checks them; return the output's path."""
    out = Path(out_path)
    files = [Path(p) for p in (getattr(s, "path", None) for s in inputs) if p is not None]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"input file {str(file)!r} does not exist")
    targets: list[Path | None] = [*files] if files else [None]
    for path in targets:
        if path is not None:
            check_output_path(out, path)
        elif out.suffix == ".gz":
            raise ValueError(
                f"the output {str(out)!r} must be plain JSON lines (it is appended to on resume); gzip it afterwards"
            )
        else:
            check_writable(out, "the output")
        if errors_path is not None:
            check_errors_path(errors_path, path or out, out)
    return out


def run_sharded(
    source: str | Path | Input | Iterable[str | Path | Input],
    out_path: str | Path,
    executor: Executor,
    *,
    job: JobSpec | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    errors_path: str | Path | None = None,
    show_progress: bool = True,
    on_error: Callable[[LineError], None] | None = None,
    on_shard: Callable[[ShardDone], None] | None = None,
) -> ShardedReport:
    """Run a sharded job: scan, shard, rank the shards with ``executor``, merge the parts (module docstring).

    Args:
        source: the input(s): paths (JSON lines, ``.gz``, Parquet) or :class:`~blender_core.batch.sources.Input`
            objects; several inputs are keyed as :mod:`blender_core.batch.plan` says.
        out_path: the output JSON lines file; its parts go to ``OUT.parts/`` beside it while the job runs.
        executor: ranks the shards (:class:`~blender_core.batch.shards.LocalExecutor`, or the Ray executor).
        job: what to write per record, the strategy, chunk size and score key (default: the ``rank`` output).
        shard_size: input lines per shard (the unit of work, of retry and of resume).
        errors_path: each skipped line of this run is also written there (rewritten by each run).
        show_progress: a tqdm bar over the records to rank.
        on_error: called with each skipped line (the bad lines as they are read, records whose ranking failed
            as their shard is merged).
        on_shard: called as each shard's part is written.

    Returns:
        A :class:`ShardedReport`.

    Raises:
        FileNotFoundError, ValueError, InputChangedError: as :func:`~blender_core.batch.rank_file.rank_file`.
        OutputBusyError: when another run is writing the same output.
        ShardJobError: when the executor fails; the parts written so far are kept for the next run.
        PartialInputError: when an input cannot be read to its end, after everything readable was ranked.
    """
    start = time.perf_counter()
    job = job or JobSpec(RankRows())
    check_choice(job.strategy, STRATEGIES, "strategy")
    check_chunk_size(job.chunk_size)
    check_chunk_size(shard_size, "shard_size")
    inputs = as_inputs(source)
    out = check_job_paths(inputs, out_path, errors_path)
    several = len(inputs) > 1
    store = PartStore(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.locked():
        store.recover()
        written = read_output(out, several=several)
        check_unchanged(inputs, out, written)
        if written:
            logger.info("%s already has %d records; they are skipped", out, len(written))
        return _run(
            inputs,
            out,
            store,
            executor,
            job,
            shard_size,
            written,
            errors_path,
            show_progress,
            on_error,
            on_shard,
            start,
        )


def _run(
    inputs: list[Input],
    out: Path,
    store: PartStore,
    executor: Executor,
    job: JobSpec,
    shard_size: int,
    written: Mapping[Key, Written],
    errors_path: str | Path | None,
    show_progress: bool,
    on_error: Callable[[LineError], None] | None,
    on_shard: Callable[[ShardDone], None] | None,
    start: float,
) -> ShardedReport:
    several = len(inputs) > 1
    errors: list[tuple[int, LineError]] = []
    changed: dict[int, list[int]] = {}
    counts = dict.fromkeys(("written", "skipped", "pairs", "rows", "ranked", "reused"), 0)
    index_of = {s.name: k for k, s in enumerate(inputs)}
    with contextlib.ExitStack() as stack:
        # rewritten by each run: a run reports every bad line of the input again
        err_sink = stack.enter_context(Path(errors_path).open("w", encoding="utf-8")) if errors_path else None

        def skip(index: int, error: LineError, text: str) -> None:
            errors.append((index, error))
            logger.info("skipped %s", error)
            if on_error is not None:
                on_error(error)
            if err_sink is not None:
                err_sink.write(text)
                err_sink.flush()

        plan = _Plan(shard_size, several, job.settings())
        scan = Scan(inputs, written, job.score_key)
        for entry in scan:
            if entry.error is not None:
                skip(entry.index, entry.error, error_line(entry.error, entry.raw))
            elif entry.done:
                counts["skipped"] += 1
                if entry.changed:
                    changed.setdefault(entry.index, []).append(entry.line)
            else:
                assert entry.item is not None
                plan.add(entry.index, inputs[entry.index], entry.item, entry.raw)
        plan.close()

        # parts an interrupted run left: reuse the ones made from exactly these records, drop the others
        order = [t.name for t in plan.shards]
        present = store.shards_present()
        ready: dict[str, Any] = {}
        for task in plan.shards:
            if task.name in present:
                part = read_part(store.path(task.name))
                if part is not None and part.digest == task.digest:
                    ready[task.name] = part
                    counts["reused"] += 1
                    continue
                logger.info("%s: discarding the stale part of shard %s", store.folder, task.name)
        for name in present - set(ready):
            store.discard(name)
        todo = [t for t in plan.shards if t.name not in ready]
        total = sum(len(t.lines) for t in todo)
        bar = stack.enter_context(
            tqdm(total=total, desc=job.maker.name, unit="rec", disable=not show_progress)
        )
        next_up = 0

        def merge_ready() -> None:
            nonlocal next_up
            while next_up < len(order) and order[next_up] in ready:
                part = ready.pop(order[next_up])
                store.merge(part)
                counts["written"] += part.records
                counts["pairs"] += part.pairs
                counts["rows"] += len(part.rows)
                for err in sorted(part.errors, key=lambda e: int(e["line"])):
                    index = index_of.get(err.get("file", ""), 0) if several else 0
                    text = json.dumps(err, ensure_ascii=False) + "\n"
                    skip(
                        index, LineError(int(err["line"]), str(err["error"]), str(err.get("file", ""))), text
                    )
                next_up += 1

        merge_ready()
        pending = {t.name for t in todo}
        for done in executor.run(todo, store.folder, job):
            if done.name not in pending:
                continue  # a second report of a shard (a task run twice); its part was taken once
            pending.discard(done.name)
            part = read_part(store.path(done.name))
            if part is None:
                raise ShardJobError(
                    f"shard {done.name} was ranked{' on node ' + done.node if done.node else ''}, but its part "
                    f"{store.path(done.name)} cannot be read here: the output's folder must be on storage "
                    "that every node of the cluster sees (a shared file system)"
                )
            ready[done.name] = part
            counts["ranked"] += 1
            bar.update(done.records + len(part.errors))
            if on_shard is not None:
                on_shard(done)
            merge_ready()
        if next_up < len(order):
            missing = sorted(pending)
            raise ShardJobError(
                f"the executor ended without ranking shard(s) {', '.join(missing[:5])}; run the same command again "
                "to rank them"
            )
    store.remove()
    for index, lines in changed.items():
        warn_changed(inputs[index].name, out, lines)
    report = ShardedReport(
        counts["written"],
        counts["skipped"],
        tuple(e for _, e in sorted(errors, key=lambda x: (x[0], x[1].line))),
        counts["pairs"],
        time.perf_counter() - start,
        tuple(line for lines in changed.values() for line in lines),
        rows=counts["rows"],
        shards_ranked=counts["ranked"],
        shards_reused=counts["reused"],
    )
    if scan.cuts:
        raise PartialInputError(scan.cuts[0], out, report)
    return report
