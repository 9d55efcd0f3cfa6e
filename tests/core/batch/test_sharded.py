"""The one batch engine in this process (``blender_core.batch.sharded``, ``shards``, ``parts``): the output does not
depend on the shard size, several inputs and Parquet, and exactly once through every interruption: a stop after
any number of shards, a crash in the middle of a merge, stale and reusable parts, a second run on the same output."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blender_core.batch.partial import records_saved
from blender_core.batch.parts import (
    JOURNAL,
    OutputBusyError,
    PartStore,
    encode_row,
    parts_folder,
    read_part,
    write_part,
)
from blender_core.batch.plan import LineError
from blender_core.batch.rank_file import PartialInputError, rank_file, rank_files
from blender_core.batch.sharded import JobInterrupted, RunOptions, ShardJobError, run_sharded
from blender_core.batch.shards import JobSpec, LocalExecutor, Progress, RankRows, ShardDone, ShardTask
from tests.core.batch.ray_rankers import Interrupted
from tests.core.batch.records import SETS, read_lines, write_lines
from tests.core.batch.sharded_records import counts, errors_of, keys, many_sets, with_bad_lines
from tests.helpers.core_fakes import LengthRanker


def _ranked(ranker: LengthRanker) -> list[str]:
    return [p for prompts, _, _ in ranker.calls for p in prompts]


def _quiet(shard_size: int = 256) -> RunOptions:
    return RunOptions(shard_size, show_progress=False)


#: the job ``rank_files(..., LengthRanker())`` runs, for runs given their executor
RANK_BY_LENGTH = JobSpec(RankRows(), ranker_name=LengthRanker.name)


def test_the_shard_size_does_not_change_the_output_or_errors(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(30)))
    want = rank_file(
        LengthRanker(), inp, tmp_path / "want.jsonl", errors_path=tmp_path / "want.err", show_progress=False
    )
    seen: list[LineError] = []
    shards: list[ShardDone] = []
    got = rank_files(
        inp,
        tmp_path / "got.jsonl",
        LengthRanker(),
        shard_size=4,
        errors_path=tmp_path / "got.err",
        show_progress=False,
        on_error=seen.append,
        on_shard=shards.append,
    )
    assert (tmp_path / "got.jsonl").read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert (tmp_path / "got.err").read_bytes() == (tmp_path / "want.err").read_bytes()
    assert counts(got) == counts(want)
    assert seen == list(want.errors)
    assert got.rows == got.written == 33  # the 30 sets and the 3 good lines among the bad ones
    # a shard per 4 input lines that hold a record to rank
    assert (
        got.shards_ranked
        == len(shards)
        == len({(r["line"] - 1) // 4 for r in read_lines(tmp_path / "want.jsonl")})
    )
    assert not parts_folder(tmp_path / "got.jsonl").exists()  # cleaned up


@dataclass
class StopAfter:
    """An executor that stops the run (as Ctrl-C would) once ``shards`` parts are written."""

    inner: LocalExecutor
    shards: int

    def run(
        self, tasks: Iterable[ShardTask], folder: Path, job: JobSpec, progress: Progress | None = None
    ) -> Iterator[ShardDone]:
        for k, done in enumerate(self.inner.run(tasks, folder, job, progress)):
            if k == self.shards:
                raise Interrupted
            yield done


def test_a_run_stopped_after_any_shard_resumes_exactly_once(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(20)))
    rank_files(inp, tmp_path / "want.jsonl", LengthRanker(), shard_size=3, show_progress=False)
    total = len(read_lines(tmp_path / "want.jsonl"))
    shards = len({(r["line"] - 1) // 3 for r in read_lines(tmp_path / "want.jsonl")})
    for stop in range(shards):
        out = tmp_path / f"out{stop}.jsonl"
        with pytest.raises(Interrupted):
            run_sharded(inp, out, StopAfter(LocalExecutor(LengthRanker()), stop), RANK_BY_LENGTH, _quiet(3))
        merged = len(read_lines(out)) if out.exists() else 0
        # the shard being reported when the run stopped has its part written, not merged
        (left,) = [read_part(p) for p in parts_folder(out).glob("*.part.jsonl")]
        assert left is not None
        assert merged + left.records <= total
        ranker = LengthRanker()
        report = rank_files(inp, out, ranker, shard_size=3, show_progress=False)
        assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()  # every record once, in input order
        assert (report.skipped, report.written, report.shards_reused) == (merged, total - merged, 1)
        assert len(_ranked(ranker)) == total - merged - left.records  # only what no part held was ranked


@dataclass
class TakesOne:
    """An executor that ranks the first shard it is given and stops taking them (a broken executor)."""

    inner: LocalExecutor

    def run(
        self, tasks: Iterable[ShardTask], folder: Path, job: JobSpec, progress: Progress | None = None
    ) -> Iterator[ShardDone]:
        yield from self.inner.run([next(iter(tasks))], folder, job, progress)


def test_an_executor_that_stops_taking_shards_fails_the_run_and_the_rest_resumes(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(12))
    out = tmp_path / "out.jsonl"
    with pytest.raises(ShardJobError, match=r"^the executor ended before it took every shard; run the same"):
        run_sharded(inp, out, TakesOne(LocalExecutor(LengthRanker())), RANK_BY_LENGTH, _quiet(4))
    assert len(read_lines(out)) == 4  # the shard it ranked, merged; the input it did not read is not lost
    report = rank_files(inp, out, LengthRanker(), shard_size=4, show_progress=False)
    assert (report.skipped, report.written) == (4, 8)


def test_a_merge_cut_short_is_undone_and_redone(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(12))
    want = tmp_path / "want.jsonl"
    rank_files(inp, want, LengthRanker(), shard_size=4, show_progress=False)
    lines = want.read_bytes().splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    with pytest.raises(Interrupted):  # the first shard merged, the second's part written
        run_sharded(inp, out, StopAfter(LocalExecutor(LengthRanker()), 1), RANK_BY_LENGTH, _quiet(4))
    assert out.read_bytes() == b"".join(lines[:4])
    # the state a crash leaves in the middle of merging the second shard: its journal written, and two and a
    # half of its rows appended to the output
    store = PartStore(out)
    (store.folder / JOURNAL).write_text(json.dumps({"shard": "0000-00000001", "offset": out.stat().st_size}))
    out.write_bytes(out.read_bytes() + b"".join(lines[4:6]) + lines[6][:10])
    ranker = LengthRanker()
    report = rank_files(inp, out, ranker, shard_size=4, show_progress=False)
    assert out.read_bytes() == want.read_bytes()
    assert (report.shards_reused, report.shards_ranked, report.skipped) == (1, 1, 4)
    assert len(_ranked(ranker)) == 4  # the reused part was not ranked again
    # a journal whose merge had finished (its part is gone) changes nothing
    store.folder.mkdir()
    (store.folder / JOURNAL).write_text(json.dumps({"shard": "0000-00000001", "offset": 10}))
    assert rank_files(inp, out, LengthRanker(), shard_size=4, show_progress=False).skipped == 12
    assert out.read_bytes() == want.read_bytes()


def test_a_part_of_other_records_is_discarded_not_merged(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(8))
    out = tmp_path / "out.jsonl"
    store = PartStore(out)
    store.folder.mkdir()
    write_part(
        store.folder,
        "0000-00000000",
        "not-this-plan",
        [encode_row({"line": 1, "line_hash": "x", "scores": []})],
        records=1,
    )
    write_part(store.folder, "0007-00000000", "no-such-shard", [], records=0)
    (store.folder / ".tmp-0000-00000001-abc").write_text("half a part")
    report = rank_files(inp, out, LengthRanker(), shard_size=4, show_progress=False)
    assert (report.shards_reused, report.shards_ranked, report.written) == (0, 2, 8)
    rank_file(LengthRanker(), inp, tmp_path / "want.jsonl", show_progress=False)
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert not store.folder.exists()


@dataclass
class BesideAnOrphan:
    """An executor beside which an actor of a killed run is still at work (issue 20: after ``kill -9`` of a Ray
    driver its actors outlive it for seconds): after each shard's part is written, and before the driver reads it,
    the orphan writes its own part of the shard of the same name, made for other records (the killed run had
    another shard size)."""

    inner: LocalExecutor
    stale_rows: list[bytes]

    def run(
        self, tasks: Iterable[ShardTask], folder: Path, job: JobSpec, progress: Progress | None = None
    ) -> Iterator[ShardDone]:
        for done in self.inner.run(tasks, folder, job, progress):
            write_part(folder, done.name, "digest-of-the-killed-run", self.stale_rows, records=len(self.stale_rows))
            yield done


def test_a_part_an_orphan_writes_meanwhile_is_never_merged(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(12))
    want = tmp_path / "want.jsonl"
    rank_files(inp, want, LengthRanker(), shard_size=4, show_progress=False)
    stale = want.read_bytes().splitlines()[:2]  # the killed run's shard 0 (shard size 2): records 1 and 2
    out = tmp_path / "out.jsonl"
    report = run_sharded(inp, out, BesideAnOrphan(LocalExecutor(LengthRanker()), stale), RANK_BY_LENGTH, _quiet(4))
    assert out.read_bytes() == want.read_bytes()  # each record once: no part but this run's own was merged
    assert (report.written, report.shards_ranked) == (12, 3)
    assert not parts_folder(out).exists()  # the orphan's parts went with the rest


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(4))
    out = tmp_path / "out.jsonl"
    with PartStore(out).locked():
        with pytest.raises(OutputBusyError, match=r"another run is writing .*out\.jsonl"):
            rank_files(inp, out, LengthRanker(), show_progress=False)
    assert rank_files(inp, out, LengthRanker(), show_progress=False).written == 4


# ---------------------------------------------------------------------------- several inputs, Parquet


def test_several_inputs_key_lines_by_file_and_ids_globally(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [SETS[0], SETS[1], SETS[2]])
    b = write_lines(tmp_path / "b.jsonl", [SETS[1], {**SETS[4], "id": "q1"}, SETS[5]])
    out = tmp_path / "out.jsonl"
    report = rank_files([a, b], out, LengthRanker(), shard_size=2, show_progress=False)
    assert keys(out) == [(str(a), "q1"), (str(a), 2), (str(a), 3), (str(b), 1), (str(b), 3)]
    assert report.errors == (LineError(2, f"id 'q1' already used by line 1 of {a}", str(b)),)
    rows = read_lines(out)
    assert list(rows[0])[:4] == ["id", "file", "line", "line_hash"]
    assert list(rows[1])[:3] == ["file", "line", "line_hash"]
    again = rank_files([a, b], out, LengthRanker(), show_progress=False)
    assert (again.written, again.skipped) == (0, 5)
    # one input on an output of several is refused: its line numbers are not that input's
    with pytest.raises(ValueError, match="holds records of a job over several inputs"):
        rank_file(LengthRanker(), a, out, show_progress=False)


def _to_parquet(records: list[dict[str, object]], path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=5)
    return path


def test_parquet_rows_rank_as_lines(tmp_path: Path) -> None:
    records = many_sets(17, seed=3)
    general = [r for r in records if "candidates" in r]  # one schema per file: the general sets
    jsonl = write_lines(tmp_path / "in.jsonl", general)
    parquet = _to_parquet(general, tmp_path / "in.parquet")
    rank_file(LengthRanker(), jsonl, tmp_path / "from_jsonl.jsonl", show_progress=False)
    single = rank_file(LengthRanker(), parquet, tmp_path / "from_parquet.jsonl", show_progress=False)
    sharded = rank_files(
        parquet, tmp_path / "sharded.jsonl", LengthRanker(), shard_size=4, show_progress=False
    )
    assert single.written == sharded.written == len(general)
    strip = [
        {k: v for k, v in r.items() if k != "line_hash"} for r in read_lines(tmp_path / "from_jsonl.jsonl")
    ]
    for name in (
        "from_parquet.jsonl",
        "sharded.jsonl",
    ):  # a row's fingerprint is of its JSON, not of a text line
        assert [
            {k: v for k, v in r.items() if k != "line_hash"} for r in read_lines(tmp_path / name)
        ] == strip
    # rows without an id (null in the id column) are keyed by row number; resume matches them
    assert keys(tmp_path / "from_parquet.jsonl") == keys(tmp_path / "from_jsonl.jsonl")
    assert rank_file(
        LengthRanker(), parquet, tmp_path / "from_parquet.jsonl", show_progress=False
    ).skipped == len(general)


def test_a_cut_parquet_ranks_what_it_can(tmp_path: Path) -> None:
    parquet = _to_parquet(many_sets(30), tmp_path / "in.parquet")
    data = parquet.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        PartialInputError, match=r"cut\.parquet: cannot read even its first line: the Parquet file"
    ):
        rank_files(cut, tmp_path / "out.jsonl", LengthRanker(), show_progress=False)


def test_errors_of_several_inputs_name_their_file(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [SETS[0], "[1]"])
    b = write_lines(tmp_path / "b.jsonl", ['{"broken', SETS[1]])
    rank_files(
        [a, b], tmp_path / "out.jsonl", LengthRanker(), errors_path=tmp_path / "e.jsonl", show_progress=False
    )
    assert [(e["file"], e["line"]) for e in errors_of(tmp_path / "e.jsonl")] == [(str(a), 2), (str(b), 1)]
    with pytest.raises(ValueError, match="is given more than once"):
        rank_files([a, a], tmp_path / "o2.jsonl", LengthRanker(), show_progress=False)
    with pytest.raises(ValueError, match=r"^shard_size must be a positive int, got 0$"):
        rank_files(a, tmp_path / "o3.jsonl", LengthRanker(), shard_size=0, show_progress=False)
    with pytest.raises(ValueError, match="must be plain JSON lines"):
        run_sharded(a, tmp_path / "o.jsonl.gz", LocalExecutor(LengthRanker()), RANK_BY_LENGTH, _quiet())


# ---------------------------------------------------------------------------- progress, checks


class _Bar:
    """Stands for tqdm's bar (the terminal is the boundary): what it was told."""

    made: ClassVar[list[_Bar]] = []

    def __init__(self, *, total: int | None, desc: str, unit: str, disable: bool) -> None:
        self.total, self.desc, self.disable = total, desc, disable
        self.updates: list[int] = []
        _Bar.made.append(self)

    def update(self, n: int) -> None:
        self.updates.append(n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_bar_counts_every_input_record_and_moves_within_a_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blender_core.batch.sharded.tqdm", _Bar)
    lines = with_bad_lines(many_sets(30))
    inp = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    write_lines(tmp_path / "half.jsonl", lines[:20])
    rank_files(tmp_path / "half.jsonl", out, LengthRanker(), show_progress=False)  # some already done
    _Bar.made.clear()
    rank_files(inp, out, LengthRanker(), shard_size=10, chunk_size=2)
    (bar,) = _Bar.made
    records = sum(1 for line in inp.read_text().splitlines() if line.strip())
    # as rank's bar always counted: every record of the input, those resumed and the bad lines included
    assert (bar.total, sum(bar.updates), bar.desc, bar.disable) == (records, records, "rank", False)
    assert max(bar.updates) <= 2  # the records to rank, a chunk at a time, not a shard at a time


def test_job_and_engine_settings_are_checked(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    with pytest.raises(ValueError, match=r"strategy"):
        JobSpec(RankRows(), strategy="best")
    with pytest.raises(ValueError, match=r"^chunk_size must be a positive int, got 0$"):
        JobSpec(RankRows(), chunk_size=0)
    with pytest.raises(ValueError, match=r"engine"):
        rank_files(inp, tmp_path / "o.jsonl", LengthRanker(), engine="spark", show_progress=False)  # type: ignore[arg-type]
    from blender_core.batch.ray_cluster import RaySettings

    with pytest.raises(ValueError, match="ray_settings is for engine='ray'"):
        rank_files(inp, tmp_path / "o.jsonl", LengthRanker(), ray_settings=RaySettings(), show_progress=False)
    with pytest.raises(TypeError, match=r"rank_file\(\) ranks one file; got list \(use rank_files\)"):
        rank_file(LengthRanker(), [inp], tmp_path / "o.jsonl")  # type: ignore[arg-type]
    assert not (tmp_path / "o.jsonl").exists()


def _on_disk(out: Path) -> int:
    """Records saved: in the output (one line each, for ``rank``), and in its parts, complete or in progress."""
    saved = len(read_lines(out)) if out.exists() else 0
    for path in parts_folder(out).glob("*.part.jsonl"):
        part = read_part(path)
        saved += part.records if part is not None else 0
    return saved + sum(records_saved(p) for p in parts_folder(out).glob("*.partial.jsonl"))


class _DiskBar(_Bar):
    """A bar that notes, at each update, how many records are on disk."""

    out: ClassVar[Path]

    def __init__(self, **given: object) -> None:
        super().__init__(**given)  # type: ignore[arg-type]
        self.on_disk: list[int] = []

    def update(self, n: int) -> None:
        super().update(n)
        self.on_disk.append(_on_disk(self.out))


def test_the_bar_counts_records_written_from_the_first_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: the bar counted records ranked before they were written (64 shown, 32 saved) and sat at 0 % through
    the first chunk (90 s). Now a shard's first chunks are of 1, 2, 4… records, each written to disk as it is ranked,
    and the bar counts only what is written."""
    monkeypatch.setattr("blender_core.batch.sharded.tqdm", _DiskBar)
    inp = write_lines(tmp_path / "in.jsonl", many_sets(30))
    _DiskBar.out = tmp_path / "out.jsonl"
    _Bar.made.clear()
    rank_files(inp, _DiskBar.out, LengthRanker(), chunk_size=8)  # one shard
    (bar,) = _Bar.made
    assert isinstance(bar, _DiskBar)
    assert bar.updates == [1, 2, 4, 8, 8, 7]
    counted = [sum(bar.updates[: k + 1]) for k in range(len(bar.updates))]
    assert all(c <= d for c, d in zip(counted, bar.on_disk, strict=True)), (counted, bar.on_disk)


class CtrlC(LengthRanker):
    """Stands for Ctrl-C: its ``rank`` call number ``at`` raises ``KeyboardInterrupt``, as SIGINT does in Python."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def rank(self, *args: Any, **kwargs: Any) -> Any:
        if len(self.calls) + 1 == self.at:
            raise KeyboardInterrupt
        return super().rank(*args, **kwargs)


def test_ctrl_c_keeps_every_chunk_written_and_says_how_many(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(30))
    rank_files(inp, tmp_path / "want.jsonl", LengthRanker(), show_progress=False)
    out = tmp_path / "out.jsonl"
    # shards of 10 records, in chunks of 1, 2, 4, 3: the first shard merged, the first chunk of the second written
    with pytest.raises(JobInterrupted) as stopped:
        rank_files(inp, out, CtrlC(at=6), shard_size=10, chunk_size=4, show_progress=False)
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert (stopped.value.saved, stopped.value.in_parts) == (11, 1) == (_on_disk(out), _on_disk(out) - 10)
    assert str(stopped.value) == (
        f"11 records saved to {out} (1 of them in {out}.parts/, merged first by the next run); run the same command "
        "to resume"
    )
    ranker = LengthRanker()
    report = rank_files(inp, out, ranker, shard_size=10, chunk_size=4, show_progress=False)
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()  # every record once
    assert len(_ranked(ranker)) == 30 - 11  # no saved record ranked again
    assert (report.skipped, report.written) == (10, 20)
    # stopped before the first chunk was written: nothing saved, and the message says so
    with pytest.raises(JobInterrupted, match=r"^0 records saved to .*; run the same command to resume$"):
        rank_files(inp, tmp_path / "none.jsonl", CtrlC(at=1), show_progress=False)


def test_a_partial_part_cut_short_resumes_after_its_last_whole_chunk(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(20))
    rank_files(inp, tmp_path / "want.jsonl", LengthRanker(), show_progress=False)
    out = tmp_path / "out.jsonl"
    with pytest.raises(JobInterrupted):
        rank_files(inp, out, CtrlC(at=4), chunk_size=4, show_progress=False)  # chunks of 1, 2, 4 written
    (partial,) = parts_folder(out).glob("*.partial.jsonl")
    assert records_saved(partial) == 7
    whole = partial.read_bytes()
    partial.write_bytes(whole + whole[: len(whole) // 3])  # a crash in the middle of appending a fourth chunk
    assert records_saved(partial) == 7
    ranker = LengthRanker()
    rank_files(inp, out, ranker, chunk_size=4, show_progress=False)
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert len(_ranked(ranker)) == 13
