"""``rank_with_ray`` on a local Ray (2 CPUs, no dashboard, one for the module): the same output as the single-process
``rank_file``, bad lines and a cut ``.gz`` as it reports them, Parquet, several inputs and a Dataset, and exactly
once through an interrupted run, an actor that crashes, and a driver killed mid-run."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blender_core.batch.parts import parts_folder
from blender_core.batch.plan import LineError
from blender_core.batch.rank_file import PartialInputError, rank_file
from blender_core.batch.ray_cluster import RaySettings
from blender_core.batch.ray_engine import rank_with_ray
from blender_core.batch.sharded import ShardJobError
from blender_core.batch.shards import ShardDone
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from tests.core.batch.ray_local import ONE_ACTOR, TWO_ACTORS, local_ray
from tests.core.batch.ray_rankers import CrashOnce, InterruptAfter
from tests.core.batch.records import (
    DEEP_LINE,
    DEEP_REASON,
    SURROGATE_LINE,
    SURROGATE_REASON,
    read_lines,
    write_lines,
)
from tests.core.batch.sharded_records import counts, errors_of, keys, many_sets, same_rankings, with_bad_lines
from tests.helpers.core_fakes import LengthRanker


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    yield from local_ray()


def _tiny(ckpt: Path) -> tuple[str, dict[str, Any]]:
    """The tiny PairRM as a spec each actor loads, with the options the single-process ranker has."""
    return str(ckpt), {"device": "cpu", "batch_size": 8}


def test_the_output_equals_single_process_rank(
    ray_instance: Any, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(40)))
    local = PairRanker.from_pretrained(tiny_native_ckpt, device="cpu", batch_size=8)
    want = rank_file(
        local, inp, tmp_path / "want.jsonl", errors_path=tmp_path / "want.err", show_progress=False
    )
    spec, options = _tiny(tiny_native_ckpt)
    seen: list[LineError] = []
    shards: list[ShardDone] = []
    got = rank_with_ray(
        inp,
        tmp_path / "got.jsonl",
        spec,
        ranker_options=options,
        ray_settings=TWO_ACTORS,
        shard_size=5,
        errors_path=tmp_path / "got.err",
        show_progress=False,
        on_error=seen.append,
        on_shard=shards.append,
    )
    same_rankings(tmp_path / "got.jsonl", tmp_path / "want.jsonl")  # same records, same order, same scores
    assert errors_of(tmp_path / "got.err") == errors_of(tmp_path / "want.err")
    assert counts(got) == counts(want)
    assert seen == list(want.errors)
    assert (
        got.shards_ranked
        == len(shards)
        == len({(r["line"] - 1) // 5 for r in read_lines(tmp_path / "want.jsonl")})
    )
    assert len({s.node for s in shards}) == 1  # one machine
    assert not parts_folder(tmp_path / "got.jsonl").exists()


def test_parquet_several_inputs_and_a_dataset(ray_instance: Any, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [r for r in many_sets(24, seed=5) if "candidates" in r]
    jsonl = write_lines(tmp_path / "a.jsonl", records[:8])
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(records[8:]), parquet, row_group_size=4)
    dataset = ray_instance.data.from_items([{"prompt": "extra?", "candidates": ["x", "yy", "zzz"]}])
    out = tmp_path / "out.jsonl"
    report = rank_with_ray(
        [jsonl, parquet, dataset],
        out,
        LengthRanker(),
        ray_settings=ONE_ACTOR,
        shard_size=3,
        show_progress=False,
    )
    assert report.written == len(records) + 1
    want = [(str(jsonl), r.get("id", k)) for k, r in enumerate(records[:8], 1)]
    want += [(str(parquet), r.get("id", k)) for k, r in enumerate(records[8:], 1)]
    assert keys(out) == [*want, ("dataset", 1)]
    rows = read_lines(out)
    assert [r["best_text"] for r in rows] == [
        max(r["candidates"], key=len) for r in [*records, {"candidates": ["zzz"]}]
    ]


def test_an_interrupted_run_resumes_exactly_once(ray_instance: Any, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(30)))
    rank_file(LengthRanker(), inp, tmp_path / "want.jsonl", show_progress=False)
    out = tmp_path / "out.jsonl"
    # each actor ranks two shards, then its ranker raises: the job stops part way
    with pytest.raises(
        ShardJobError, match=r"the Ray job failed: .*stopped after 2 calls.*run the same command again"
    ):
        rank_with_ray(
            inp,
            out,
            InterruptAfter(LengthRanker(), 2),
            ray_settings=TWO_ACTORS,
            shard_size=3,
            show_progress=False,
        )
    total = len(read_lines(tmp_path / "want.jsonl"))
    merged = len(read_lines(out)) if out.exists() else 0
    left = list(parts_folder(out).glob("*.part.jsonl"))
    assert merged + len(left) > 0
    assert merged < total
    report = rank_with_ray(
        inp, out, LengthRanker(), ray_settings=TWO_ACTORS, shard_size=3, show_progress=False
    )
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()  # every record once, in input order
    assert (report.skipped, report.written, report.shards_reused) == (merged, total - merged, len(left))


def test_an_actor_that_crashes_is_restarted_and_its_shard_retried_once(
    ray_instance: Any, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(30))
    rank_file(LengthRanker(), inp, tmp_path / "want.jsonl", show_progress=False)
    marker = tmp_path / "crashed"
    shards: list[ShardDone] = []
    report = rank_with_ray(
        inp,
        tmp_path / "out.jsonl",
        CrashOnce(LengthRanker(), str(marker), crash_on=2),  # the worker process dies in its second shard
        ray_settings=TWO_ACTORS,
        shard_size=3,
        show_progress=False,
        on_shard=shards.append,
    )
    assert marker.exists()  # it did crash
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert report.written == 30
    assert sorted(s.name for s in shards) == [f"0000-{k:08d}" for k in range(10)]  # each shard reported once


def test_bad_lines_and_a_cut_gz_as_single_process_rank(ray_instance: Any, tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"q{i}", "candidates": [f"a{i}", f"bb{i}"]}) for i in range(1, 301)]
    lines[10] = '{"prompt": "cut'
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    inp = tmp_path / "in.jsonl.gz"
    inp.write_bytes(data[: len(data) // 2])
    with pytest.raises(PartialInputError) as single:
        rank_file(LengthRanker(), inp, tmp_path / "want.jsonl", show_progress=False)
    out = tmp_path / "out.jsonl"
    with pytest.raises(PartialInputError) as on_ray:
        rank_with_ray(inp, out, LengthRanker(), ray_settings=ONE_ACTOR, shard_size=50, show_progress=False)
    assert str(on_ray.value) == str(single.value).replace(str(tmp_path / "want.jsonl"), str(out))
    assert (
        on_ray.value.report.errors
        == single.value.report.errors
        == (LineError(11, on_ray.value.report.errors[0].reason),)
    )
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert not parts_folder(out).exists()  # every shard before the damage was merged


def test_poison_lines_on_ray_as_in_this_process(ray_instance: Any, tmp_path: Path) -> None:
    """A lone surrogate and a line nested 100,000 deep (issue 20: a RecursionError before anything was written, on
    Ray too) are bad lines on Ray as in this process: the same output, errors and counts."""
    records = many_sets(12, seed=4)
    inp = write_lines(tmp_path / "in.jsonl", [*records[:5], SURROGATE_LINE, *records[5:9], DEEP_LINE, *records[9:]])
    want = rank_file(LengthRanker(), inp, tmp_path / "want.jsonl", errors_path=tmp_path / "want.err", show_progress=False)
    out = tmp_path / "out.jsonl"
    got = rank_with_ray(
        inp, out, LengthRanker(), ray_settings=ONE_ACTOR, shard_size=4, errors_path=tmp_path / "got.err", show_progress=False
    )
    assert [(e.line, e.reason) for e in got.errors] == [(6, SURROGATE_REASON), (11, DEEP_REASON)]
    assert counts(got) == counts(want)
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert errors_of(tmp_path / "got.err") == errors_of(tmp_path / "want.err")


def test_a_killed_driver_resumes_exactly_once(
    ray_instance: Any, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    """``blender-llm rank --engine ray`` on this module's Ray, killed (SIGKILL) once its first parts are written,
    then run again: every record once."""
    # three times the candidates (slower shards, so the kill lands mid-run); models dropped to match
    records = [
        {**{k: v for k, v in r.items() if k != "models"}, "candidates": r["candidates"] * 3}
        for r in many_sets(120, seed=9)
        if "candidates" in r
    ]
    inp = write_lines(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    spec, options = _tiny(tiny_native_ckpt)
    address = ray_instance.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "blender_core.app.cli", "rank", str(inp), "--out", str(out), "-m", spec]
    cmd += ["--engine", "ray", "--address", address, "--actors", "2", "--cpus-per-actor", "0.5"]
    cmd += ["--shard-size", "2", "--chunk-size", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(read_lines(out) if out.exists() else []) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = out.read_bytes()
    assert 4 <= len(read_lines(out)) < len(records)
    report = rank_with_ray(
        inp,
        out,
        spec,
        ranker_options=options,
        ray_settings=TWO_ACTORS,
        shard_size=2,
        chunk_size=2,
        show_progress=False,
    )
    assert out.read_bytes().startswith(before)
    assert keys(out) == [
        r.get("id", k) for k, r in enumerate(records, 1)
    ]  # every record once, in input order
    assert report.written + report.skipped == len(records)
    single = PairRanker.from_pretrained(tiny_native_ckpt, device="cpu", batch_size=8)
    rank_file(single, inp, tmp_path / "want.jsonl", show_progress=False)
    same_rankings(out, tmp_path / "want.jsonl")


def test_a_ranker_that_cannot_travel_is_a_clear_error(ray_instance: Any, tmp_path: Path) -> None:
    from tests.core.batch.ray_rankers import scripted_judge

    inp = write_lines(tmp_path / "in.jsonl", many_sets(2))
    with pytest.raises(ValueError, match=r"cannot be sent to Ray actors .*pass its spec instead"):
        rank_with_ray(inp, tmp_path / "out.jsonl", scripted_judge(), show_progress=False)
    with pytest.raises(ValueError, match=r"actors must be a positive int or None, got 0"):
        RaySettings(actors=0)


def test_on_ray_the_bytes_rank_wrote_and_its_old_partial_output(ray_instance: Any, tmp_path: Path) -> None:
    """The outputs ``rank`` wrote before the one engine (``test_old_outputs``), from Ray actors: the same bytes, and
    an output an interrupted old run left (cut mid-write) resumed, every record once."""
    from blender_core.batch.rank_file import rank_files
    from tests.core.batch.old_rank import DATA, FractionRanker

    out, errors = tmp_path / "ranked.jsonl", tmp_path / "ranked.errors.jsonl"
    report = rank_files(
        DATA / "in.jsonl",
        out,
        FractionRanker(),
        engine="ray",
        ray_settings=ONE_ACTOR,
        shard_size=7,
        chunk_size=3,
        errors_path=errors,
        show_progress=False,
    )
    assert out.read_bytes() == (DATA / "ranked.jsonl").read_bytes()
    assert errors.read_bytes() == (DATA / "ranked.errors.jsonl").read_bytes()
    assert report.written == 45
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_bytes((DATA / "partial_cut.jsonl").read_bytes())
    again = rank_with_ray(
        DATA / "in.jsonl",
        resumed,
        FractionRanker(),
        ray_settings=ONE_ACTOR,
        shard_size=7,
        show_progress=False,
    )
    assert resumed.read_bytes() == (DATA / "ranked.jsonl").read_bytes()
    assert (again.skipped, again.written) == (15, 30)


def test_the_bar_moves_as_actors_write_chunks_of_a_single_shard(
    ray_instance: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: on Ray the bar sat at 0 % until the job ended when the input fit one shard. The actor reports each
    chunk as it is written into the shard's partial part, and the driver passes the reports on while it waits."""
    from tests.core.batch.test_sharded import _Bar

    monkeypatch.setattr("blender_core.batch.sharded.tqdm", _Bar)
    _Bar.made.clear()
    inp = write_lines(tmp_path / "in.jsonl", many_sets(12))
    seen: list[list[int]] = []
    rank_with_ray(
        inp,
        tmp_path / "out.jsonl",
        LengthRanker(),
        ray_settings=ONE_ACTOR,
        chunk_size=4,  # one shard (256 lines), in chunks of 1, 2, 4, 4, 1
        on_shard=lambda _: seen.append(list(_Bar.made[0].updates)),
    )
    (bar,) = _Bar.made
    assert bar.updates == [1, 2, 4, 4, 1]  # each chunk counted as written, none at the end in one go
    assert seen == [[1, 2, 4, 4, 1]]  # all counted by the time the shard's part was taken
