"""The one engine of every batch job (``rank`` and ``label-pairs``, in this process or on Ray): plan the shards,
hand them to an executor, merge their parts into the output exactly once.

:func:`run_sharded` reads the inputs in one pass (:class:`~blender_core.batch.plan.Scan`: bad lines are
reported, and written to the errors file, as they are read; records already in the output are skipped), cuts
the records to rank into **shards by input position** (shard ``k`` of input ``i`` holds the records of lines
``k*S+1 .. (k+1)*S``; ``S`` is the shard size), hands each shard that has no valid part yet to an executor as
soon as the scan has passed it, and merges the parts into the output **in shard order**, so the output is in
input order. The shards, what is written per record, and the executors that rank them (in this process, one
shard at a time as they are planned, or on Ray actors) are :mod:`blender_core.batch.shards`; the part files
are :mod:`blender_core.batch.parts`.

Exactly once, whichever executor ranks: every record to rank is in exactly one shard; a shard's rows reach
the output only through its part, which is complete or absent and pinned to the shard's records by a digest;
parts are merged one at a time, journaled, and deleted once merged; a merged record is never planned again
(resume by key; a record that gave no row is remembered in ``OUT.empty.jsonl`` and skipped alike); and one run at
a time holds the output's lock. A run stopped or killed at any point and started again with the same arguments
therefore ends with every record's rows in the output exactly once, having lost at most the chunk in progress of
each shard in progress (a shard keeps its chunks as they are ranked: :mod:`blender_core.batch.partial`).

**Settings.** The output records the settings that produce its rows (:mod:`blender_core.batch.settings`); a run
with other settings is refused before anything is loaded or read, unless it starts over (``overwrite``: the
output, its remembered records, its settings, its errors file and its parts are deleted first).

**Progress and Ctrl-C.** The bar counts the records done: those already in the output, the bad lines, and the
records to rank once their chunk is written into a part (as it is ranked, in this process and on Ray actors).
Ctrl-C (``KeyboardInterrupt``) stops a run with :class:`JobInterrupted`, which says how many records are saved.

The output is the same, byte for byte, whatever the shard size and the executor (up to float noise of
batching in the scores of a real ranker), and the same as ``rank`` wrote before it ran on this engine, so an
output an earlier version left half-written resumes here.

Example:
    >>> from blender_core.batch.shards import LocalExecutor
    >>> report = run_sharded(["a.jsonl", "b.jsonl"], "ranked.jsonl",
    ...                      LocalExecutor("builtin:pairrm-minilm-l6"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blender_core.batch.local_ray import reap_orphans
from blender_core.batch.output import (
    Key,
    Written,
    check_errors_path,
    check_output_path,
    check_writable,
    empty_path,
)
from blender_core.batch.partial import partial_path, records_saved
from blender_core.batch.parts import Part, PartStore, read_part
from blender_core.batch.plan import Entry, LineError, Scan, error_line, read_output, warn_changed
from blender_core.batch.resume import check_unchanged
from blender_core.batch.settings import check_settings, settings_path, write_settings
from blender_core.batch.shards import Executor, JobSpec, RankRows, ShardDone, ShardTask, check_chunk_size
from blender_core.batch.sources import Input, as_inputs
from blender_core.data.lines import DataReadError

logger = logging.getLogger(__name__)

#: records per shard by default: a few seconds to a minute of ranking, few enough part files
DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class BatchRankReport:
    """What a batch run did.

    Attributes:
        written: records whose rows reached the output in this run.
        skipped: records skipped because the output already had them (resume).
        errors: input lines skipped as malformed (and records whose ranking failed), in input order.
        pairs: how many of the written records were pairs ranked as two-candidate sets.
        elapsed_s: wall time of the run.
        changed: input lines of skipped records with an id whose line changed since it was ranked (their
            earlier ranking was kept).
    """

    written: int
    skipped: int
    errors: tuple[LineError, ...]
    pairs: int
    elapsed_s: float
    changed: tuple[int, ...] = ()


@dataclass(frozen=True)
class ShardedReport(BatchRankReport):
    """What a run of the engine did: :class:`BatchRankReport`'s fields, and:

    Attributes:
        rows: output lines written by this run (for ``rank``, one per record).
        shards_ranked: shards ranked by this run.
        shards_reused: shards whose part an earlier, interrupted run had written (merged, not ranked again).
    """

    rows: int = 0
    shards_ranked: int = 0
    shards_reused: int = 0


class PartialInputError(DataReadError):
    """An input could not be read to its end (a cut or corrupt ``.gz`` or Parquet file); every complete line
    before the damage was ranked and written. ``report`` says what the run did; rerun on the complete file."""

    def __init__(self, cause: DataReadError, out: Path, report: ShardedReport) -> None:
        super().__init__(cause.path, cause.last_line, cause.reason)
        self.report = report
        done = (
            f"Lines 1-{cause.last_line} were ranked into {out}" if cause.last_line else "Nothing was ranked"
        )
        self.args = (
            f"{cause}. {done}; restore the complete file and run again with the same output to rank the rest",
        )


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C (``KeyboardInterrupt``) stopped a run. What it had done is kept, and the same call resumes.

    Attributes:
        out: the output.
        saved: records saved: in the output (or remembered there as giving no row), and in part files that the
            next run merges first; None when the run was stopped before it read the output.
        in_parts: how many of those are in part files.
    """

    def __init__(self, out: Path, saved: int | None, in_parts: int = 0) -> None:
        super().__init__(out, saved, in_parts)
        self.out, self.saved, self.in_parts = out, saved, in_parts

    def __str__(self) -> str:
        if self.saved is None:
            return f"interrupted before the run started; {self.out} is as it was"
        where = f" ({self.in_parts} of them in {self.out}.parts/, merged first by the next run)" if self.in_parts else ""
        return f"{self.saved} records saved to {self.out}{where}; run the same command to resume"


class ShardJobError(RuntimeError):
    """The executor failed (e.g. a Ray task failed more often than its retries allow); the parts written so
    far are kept, and the same command resumes."""


@dataclass(frozen=True)
class RunOptions:
    """How the driver plans and reports a run (what stays in this process; :class:`JobSpec` is what every
    shard is ranked with).

    Attributes:
        shard_size: input lines per shard: the unit of work, of retry, of resume, and of what a stopped run
            loses.
        errors_path: each skipped line of this run is also written there (rewritten by each run).
        show_progress: a tqdm bar over the input records.
        on_error: called with each skipped line (bad lines as they are read, records whose ranking failed as
            their shard is merged).
        on_shard: called as each shard's part is written.
        overwrite: start over: delete the output, the records it remembers, its settings, the errors file and
            its parts first (needed to write an output with other settings than those it records).
        on_start: called once the output is locked and checked (paths, settings, input unchanged), before anything
            is read or ranked: e.g. to load and announce the ranker, which a refused run then never loads.
    """

    shard_size: int = DEFAULT_SHARD_SIZE
    errors_path: str | Path | None = None
    show_progress: bool = True
    on_error: Callable[[LineError], None] | None = None
    on_shard: Callable[[ShardDone], None] | None = None
    overwrite: bool = False
    on_start: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        check_chunk_size(self.shard_size, "shard_size")


@dataclass
class _Planner:
    """Gathers the records to rank into shards while the inputs are read; a shard is closed (returned) as soon
    as the scan has passed it."""

    size: int
    several: bool
    settings: str
    _current: tuple[int, int] | None = None
    _source: Input | None = None
    _lines: list[tuple[int, str]] = field(default_factory=list)
    _keys: list[str] = field(default_factory=list)

    def passing(self, index: int, line: int) -> ShardTask | None:
        """The open shard, closed, when line ``line`` of input ``index`` is past it."""
        if self._current is not None and self._current != (index, (line - 1) // self.size):
            return self.close()
        return None

    def add(self, source: Input, entry: Entry) -> None:
        """Add a record to rank (to the open shard: :meth:`passing` closed the one before)."""
        assert entry.item is not None
        if self._current is None:
            self._current, self._source = (entry.index, (entry.line - 1) // self.size), source
        self._lines.append((entry.line, entry.raw.decode("utf-8")))
        item = entry.item
        self._keys.append(json.dumps([item.key[0], item.key[1], item.line_hash], ensure_ascii=False))

    def close(self) -> ShardTask | None:
        """The open shard as a task (None when none is open)."""
        if self._current is None or self._source is None:
            return None
        digest = hashlib.blake2b(
            "\n".join([self.settings, *self._keys]).encode("utf-8", "surrogatepass"), digest_size=16
        ).hexdigest()
        index, number = self._current
        file = self._source.name if self.several else None
        task = ShardTask(f"{index:04d}-{number:08d}", digest, self._source.name, file, tuple(self._lines))
        self._current, self._source, self._lines, self._keys = None, None, [], []
        return task


def check_job_paths(inputs: Sequence[Input], out_path: str | Path, errors_path: str | Path | None) -> Path:
    """Check that every file input exists and that the output (and errors file) can take the job's lines;
    return the output's path."""
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
    source: Any,
    out_path: str | Path,
    executor: Executor,
    job: JobSpec | None = None,
    run: RunOptions | None = None,
) -> ShardedReport:
    """Run a batch job: scan, shard, rank the shards with ``executor``, merge the parts (module docstring).

    Args:
        source: the input(s): paths (JSON lines, ``.gz``, Parquet), :class:`~blender_core.batch.sources.Input`
            objects or ``ray.data.Dataset`` s; several inputs are keyed as :mod:`blender_core.batch.plan` says.
        out_path: the output JSON lines file; its parts go to ``OUT.parts/`` beside it while the job runs.
        executor: ranks the shards (:class:`~blender_core.batch.shards.LocalExecutor`, or the Ray executor).
        job: what to write per record, the strategy, chunk size and score key (default: the ``rank`` output).
        run: the shard size and how the run reports (:class:`RunOptions`).

    Returns:
        A :class:`ShardedReport`.

    Raises:
        FileNotFoundError: when an input file does not exist.
        ValueError: for an output (or errors file) that cannot take the job's lines (a folder, an input, a
            ``.gz``, no permission), an input given twice, or an output of a job over several inputs resumed
            with one.
        InputChangedError: when the output holds records of another version of an input (nothing is ranked
            or written).
        OutputBusyError: when another run is writing the same output.
        ShardJobError: when the executor fails; the parts written so far are kept for the next run.
        PartialInputError: when an input cannot be read to its end, after everything readable was ranked.
    """
    start = time.perf_counter()
    job = job or JobSpec(RankRows())
    run = run or RunOptions()
    inputs = as_inputs(source)
    out = check_job_paths(inputs, out_path, run.errors_path)
    store = PartStore(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store.locked():
        try:
            if run.overwrite:
                reap_orphans(store.folder)  # nothing of a killed run may write a part meanwhile
                _start_over(out, store, run.errors_path)
            else:
                store.recover()
                reap_orphans(store.folder)  # what is left of the local Ray of a run that was killed
            record = job.record()
            changed = check_settings(out, record)  # before anything is read: a refused run changes nothing
            written = read_output(out, several=len(inputs) > 1)
            check_unchanged(inputs, out, written)
        except KeyboardInterrupt:
            raise JobInterrupted(out, None) from None
        if written:
            logger.info("%s already has %d records; they are skipped", out, len(written))
        return _Run(inputs, out, store, job, run, written, start, record if changed else None).execute(executor)


def _start_over(out: Path, store: PartStore, errors_path: str | Path | None) -> None:
    """Delete what a run on ``out`` wrote: the output, the records it remembers, its settings, the errors file and
    its parts (the lock and the note of who holds it stay)."""
    gone = [p for p in (out, empty_path(out), settings_path(out)) if p.exists()]
    for path in gone:
        path.unlink()
    if errors_path is not None:
        Path(errors_path).unlink(missing_ok=True)
    store.remove(keep_owner=True)
    if gone:
        logger.info("starting over: deleted %s", ", ".join(map(str, gone)))


class _Run:
    """One run of the engine, under the output's lock: the scan, the plan, the merge and the counts."""

    def __init__(
        self,
        inputs: list[Input],
        out: Path,
        store: PartStore,
        job: JobSpec,
        run: RunOptions,
        written: Mapping[Key, Written],
        start: float,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        self.inputs = inputs
        self.record = record  # the settings to record before the first row (None: recorded already)
        self.already = len(written)
        self.out = out
        self.store = store
        self.job = job
        self.run = run
        self.start = start
        self.several = len(inputs) > 1
        self.scan = Scan(inputs, written, job.score_key)
        self.errors: list[tuple[int, LineError]] = []
        self.changed: dict[int, list[int]] = {}
        self.counts = dict.fromkeys(("written", "skipped", "pairs", "rows", "ranked", "reused"), 0)
        self.order: list[str] = []  # the shards planned so far, in output order
        self.planned_all = False  # whether the scan reached the end of the inputs
        # the shards handed to the executor and not yet reported, and how many records each has to rank
        self.pending: set[str] = set()
        self.size: dict[str, int] = {}
        self.digests: dict[str, str] = {}  # the plan's digest of each such shard: which part file is its own
        self.ready: dict[str, Part] = {}  # parts waiting for the shards before them
        self.progressed: dict[str, int] = {}  # records of a shard in progress that the bar has counted
        self.counting = threading.Lock()  # an executor may report progress from a thread of its own (Ray)
        self.next_up = 0
        self.present = store.shards_present()  # parts an interrupted run left
        self.err_sink: Any = None
        self.bar: Any = None

    def execute(self, executor: Executor) -> ShardedReport:
        try:
            return self._execute(executor)
        except KeyboardInterrupt:
            in_parts = self._in_parts()
            raise JobInterrupted(self.out, self.already + self.counts["written"] + in_parts, in_parts) from None

    def _execute(self, executor: Executor) -> ShardedReport:
        if self.run.on_start is not None:
            self.run.on_start()
        if self.record is not None:  # before the first row
            write_settings(self.out, self.record)
        with contextlib.ExitStack() as stack:
            if self.run.errors_path:  # rewritten by each run: a run reports every bad line of the input again
                # a lone surrogate (in a file name that is not UTF-8) is written as its JSON escape, not a failure
                self.err_sink = stack.enter_context(
                    Path(self.run.errors_path).open("w", encoding="utf-8", errors="backslashreplace")
                )
            self.bar = stack.enter_context(
                tqdm(
                    total=self._total(),
                    desc=str(self.job.maker.settings().get("job", self.job.maker.name)),
                    unit="rec",
                    disable=not self.run.show_progress,
                )
            )
            for done in executor.run(self._tasks(), self.store.folder, self.job, self._progress):
                self._done(done)
            if not self.planned_all:
                raise ShardJobError(
                    "the executor ended before it took every shard; run the same command again to rank the rest"
                )
            if self.next_up < len(self.order):
                missing = sorted(self.pending)
                raise ShardJobError(
                    f"the executor ended without ranking shard(s) {', '.join(missing[:5])}; run the same "
                    "command again to rank them"
                )
        self.store.remove()  # with any part of a shard this run did not plan (made for other records)
        for index, lines in self.changed.items():
            warn_changed(self.inputs[index].name, self.out, lines)
        report = ShardedReport(
            self.counts["written"],
            self.counts["skipped"],
            tuple(e for _, e in sorted(self.errors, key=lambda x: (x[0], x[1].line))),
            self.counts["pairs"],
            time.perf_counter() - self.start,
            tuple(line for lines in self.changed.values() for line in lines),
            rows=self.counts["rows"],
            shards_ranked=self.counts["ranked"],
            shards_reused=self.counts["reused"],
        )
        if self.scan.cuts:
            raise PartialInputError(self.scan.cuts[0], self.out, report)
        return report

    def _in_parts(self) -> int:
        """Records of this run's plan saved in part files, not merged yet: parts waiting for the shards before them,
        and of each shard handed to the executor, its part or its partial part."""
        saved = sum(part.records for part in self.ready.values())
        for shard, digest in self.digests.items():
            part = read_part(self.store.path(shard, digest))
            saved += part.records if part is not None else records_saved(partial_path(self.store.folder, shard, digest))
        return saved

    def _total(self) -> int | None:
        """The records of the inputs, for the bar (None when an input cannot say without being read)."""
        if not self.run.show_progress:
            return None
        counts = [s.count() for s in self.inputs]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)

    # ------------------------------------------------------------------------ planning, while reading

    def _tasks(self) -> Iterator[ShardTask]:
        """The shards to rank, each as soon as the scan has passed it; a shard whose part an interrupted run
        left is merged instead."""
        planner = _Planner(self.run.shard_size, self.several, self.job.settings())
        for entry in self.scan:
            yield from self._plan(planner.passing(entry.index, entry.line))
            if entry.error is not None:
                self._skip(entry.index, entry.error, error_line(entry.error, entry.raw))
                self.bar.update(1)
            elif entry.done:
                self.counts["skipped"] += 1
                self.bar.update(1)
                if entry.changed:
                    self.changed.setdefault(entry.index, []).append(entry.line)
            else:
                planner.add(self.inputs[entry.index], entry)
        yield from self._plan(planner.close())
        self.planned_all = True

    def _plan(self, task: ShardTask | None) -> Iterator[ShardTask]:
        if task is None:
            return
        self.order.append(task.name)
        if task.name in self.present:
            part = read_part(self.store.path(task.name, task.digest))
            if part is not None and part.digest == task.digest:
                self.counts["reused"] += 1
                self.bar.update(len(task.lines))
                self._ready(part)
                return
            logger.info("%s: discarding the stale part of shard %s", self.store.folder, task.name)
            self.store.discard(task.name, keep=task.digest)
        self.size[task.name] = len(task.lines)
        self.digests[task.name] = task.digest
        self.pending.add(task.name)
        yield task

    # ------------------------------------------------------------------------ parts, as they come

    def _progress(self, shard: str, records: int) -> None:
        with self.counting:
            if shard not in self.size:
                return  # reported late (the shard is merged already), or of a shard this run did not plan
            # a retried shard reports again what its partial part holds: never more than the shard's records
            records = min(records, self.size[shard] - self.progressed.get(shard, 0))
            self.progressed[shard] = self.progressed.get(shard, 0) + records
            if records:
                self.bar.update(records)

    def _done(self, done: ShardDone) -> None:
        if done.name not in self.pending:
            return  # a second report of a shard (a task run twice); its part was taken once
        self.pending.discard(done.name)
        path = self.store.path(done.name, self.digests.pop(done.name))  # this plan's part, never an orphan's
        part = read_part(path)
        if part is None:
            raise ShardJobError(
                f"shard {done.name} was ranked{' on node ' + done.node if done.node else ''}, but its part "
                f"{path} cannot be read here: the output's folder must be on storage "
                "that every node of the cluster sees (a shared file system)"
            )
        self.counts["ranked"] += 1
        with self.counting:
            left = self.size.pop(done.name) - self.progressed.pop(done.name, 0)  # what no chunk reported
            if left:
                self.bar.update(left)
        if self.run.on_shard is not None:
            self.run.on_shard(done)
        self._ready(part)

    def _ready(self, part: Part) -> None:
        """Take a part; merge every part that is next in output order."""
        self.ready[part.shard] = part
        while self.next_up < len(self.order) and self.order[self.next_up] in self.ready:
            part = self.ready.pop(self.order[self.next_up])
            self.store.merge(part)
            self.counts["written"] += part.records
            self.counts["pairs"] += part.pairs
            self.counts["rows"] += len(part.rows)
            for err in sorted(part.errors, key=lambda e: int(e["line"])):
                index = self._index_of(err.get("file", ""))
                text = json.dumps(err, ensure_ascii=False) + "\n"
                self._skip(
                    index, LineError(int(err["line"]), str(err["error"]), str(err.get("file", ""))), text
                )
            self.next_up += 1

    def _index_of(self, file: str) -> int:
        if not self.several:
            return 0
        return next((k for k, s in enumerate(self.inputs) if s.name == file), 0)

    def _skip(self, index: int, error: LineError, text: str) -> None:
        self.errors.append((index, error))
        logger.info("skipped %s", error)
        if self.run.on_error is not None:
            self.run.on_error(error)
        if self.err_sink is not None:
            self.err_sink.write(text)
            self.err_sink.flush()
