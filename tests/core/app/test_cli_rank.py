"""``blender-llm rank``: the summary and bad lines on the terminal, resume, the ranker's loading options, and
clear errors (``blender_core.batch.rank_file`` itself is tested in ``tests/core/batch``)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from blender_core.app.cli import app
from blender_core.ranking import load_ranker
from blender_core.ranking.pairrm.pair_ranker import PairRanker
from blender_core.ranking.registry import DEFAULT_RANKER, clear_ranker_cache
from tests.core.batch.lock_holder import ROOT, lock_held_elsewhere
from tests.core.batch.old_rank import DATA as OLD
from tests.core.batch.records import BAD_LINES, POISON_IDS, POISON_LINES, SETS, read_lines, write_lines
from tests.core.batch.sharded_records import keys, many_sets


@pytest.fixture
def empty_ranker_cache() -> Iterator[None]:
    """No ranker loaded by an earlier test stands in for the one a command loads."""
    clear_ranker_cache()
    yield
    clear_ranker_cache()


def test_cli_reports_bad_lines_and_a_summary(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", BAD_LINES)
    out = tmp_path / "out.jsonl"
    args = ["rank", str(inp), "--out", str(out), "--model", str(tiny_native_ckpt), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{inp}: line 2: not valid JSON" in res.stderr
    assert f"{inp}: line 4: 1 candidate(s); ranking needs at least 2; skipped" in res.stderr
    assert "ranked 3 records; skipped 6 bad lines" in res.stdout
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "ranked 0 records; skipped 3 already in" in again.stdout
    assert len(read_lines(out)) == 3


def test_batch_size_is_a_loading_option_of_the_ranker(
    empty_ranker_cache: None, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    common = ["rank", str(inp), "--model", str(tiny_native_ckpt), "--device", "cpu", "--no-progress"]
    res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "one.jsonl"), "--batch-size", "1"])
    assert res.exit_code == 0, res.output
    # the command loaded (and cached) its ranker with that batch size
    loaded = load_ranker(str(tiny_native_ckpt), device="cpu", batch_size=1)
    assert isinstance(loaded, PairRanker)
    assert loaded.batch_size == 1
    res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "many.jsonl")])
    assert res.exit_code == 0, res.output
    one, many = read_lines(tmp_path / "one.jsonl"), read_lines(tmp_path / "many.jsonl")
    assert [r["best"] for r in one] == [r["best"] for r in many]
    for a, b in zip(one, many, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_bad_arguments_are_clear_errors(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
    res = CliRunner().invoke(
        app,
        [
            "rank",
            str(inp),
            "-o",
            str(tmp_path / "o.jsonl"),
            "-m",
            str(tiny_native_ckpt),
            "--strategy",
            "best",
        ],
    )
    assert res.exit_code == 2
    assert "Invalid value for '--strategy': 'best' is not one of full, bubble, knockout, sort" in res.output
    res = CliRunner().invoke(
        app, ["rank", str(inp), "-o", str(tmp_path / "o.jsonl"), "-m", str(tmp_path / "nope")]
    )
    assert res.exit_code == 1
    assert "could not load the ranker" in res.stderr


def test_default_ranker_that_cannot_load_is_an_error_not_a_random_model(
    empty_ranker_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline, the default ranker (llm-blender/PairRM, from the hub) cannot load: an error that says so
    and names the offline choice, never another ranker in its place."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))  # no cached copy
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["rank", str(inp), "--out", str(out), "--no-progress"])  # no --model
    assert res.exit_code == 1, res.output
    assert f"could not load the ranker {DEFAULT_RANKER!r}" in res.stderr
    assert "HF_HUB_OFFLINE is set" in res.stderr
    assert "pass a ranker explicitly: --model builtin:pairrm-minilm-l6 (" in res.stderr  # the flag, not Python
    assert "ranker=" not in res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)  # an error message, no traceback
    assert "ranker:" not in res.stdout  # no ranker was loaded in its place
    assert "ranked" not in res.stdout
    assert not out.exists()


# ---------------------------------------------------------------------------- damaged input, bad options


@pytest.fixture
def wide_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer's error box on one line per message, so that messages with long paths can be asserted whole."""
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 1000)


def _no_traceback(res: Result) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output


def test_a_bad_byte_is_one_bad_line(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    lines = [json.dumps(x).encode() for x in SETS]
    lines[2] = b'{"prompt": "caf\xe9", "candidates": ["a", "b"]}'
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    args = ["rank", str(inp), "--out", str(out), "-m", str(tiny_native_ckpt), "--no-progress"]
    for _ in range(2):  # the rerun reports it again and does not stop there either
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert f"{inp}: line 3: not valid UTF-8 (byte 0xe9 at column 16); save the file as UTF-8; skipped" in res.stderr
    assert "ranked 0 records; skipped 5 already in" in res.stdout
    assert "skipped 1 bad lines" in res.stdout
    assert [r.get("id", r.get("line")) for r in read_lines(out)] == ["q1", 2, 4, "q5", 6]


@pytest.mark.parametrize(("line", "reason"), POISON_LINES, ids=POISON_IDS)
def test_a_poison_line_is_one_bad_line(tiny_native_ckpt: Path, tmp_path: Path, line: str, reason: str) -> None:
    """A lone surrogate once stopped the run at writing (exit 2) and a line nested 100,000 deep before anything was
    written (exit 1, a RecursionError), and every rerun at the same line (issue 20)."""
    inp = write_lines(tmp_path / "in.jsonl", [SETS[0], line, SETS[1]])
    out = tmp_path / "out.jsonl"
    args = ["rank", str(inp), "--out", str(out), "-m", str(tiny_native_ckpt), "--no-progress"]
    for _ in range(2):  # the rerun reports it again and does not stop there either
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        _no_traceback(res)
        assert f"{inp}: line 2: {reason}; skipped" in res.stderr
        assert "skipped 1 bad lines" in res.stdout
    assert "ranked 0 records; skipped 2 already in" in res.stdout
    assert [r.get("id", r.get("line")) for r in read_lines(out)] == ["q1", 3]


def test_a_cut_gz_ranks_what_it_can_then_exits_1(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"q{i}", "candidates": [f"a{i}", f"b{i}"]}) for i in range(1, 201)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    cut = data[: len(data) // 2]
    good = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")
    assert 0 < good < 200
    inp = tmp_path / "in.jsonl.gz"
    inp.write_bytes(cut)
    out = tmp_path / "out.jsonl"
    common = ["--out", str(out), "-m", str(tiny_native_ckpt), "--device", "cpu", "--no-progress"]
    res = CliRunner().invoke(app, ["rank", str(inp), *common])
    assert res.exit_code == 1, res.output
    _no_traceback(res)
    assert f"ranked {good} records;" in res.stdout
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {inp}: cannot read past line {good}: the compressed data ends early, so the file is cut short "
        f"(Compressed file ended before the end-of-stream marker was reached). Lines 1-{good} were ranked into "
        f"{out}; restore the complete file and run again with the same output to rank the rest"
    )
    assert [r["line"] for r in read_lines(out)] == list(range(1, good + 1))
    inp.write_bytes(data)  # the complete file is back
    res = CliRunner().invoke(app, ["rank", str(inp), *common])
    assert res.exit_code == 0, res.output
    assert f"ranked {200 - good} records; skipped {good} already in {out}" in res.stdout
    assert [r["line"] for r in read_lines(out)] == list(range(1, 201))


def test_an_input_changed_under_the_output_exits_1_and_writes_nothing(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    no_ids = [{k: v for k, v in s.items() if k != "id"} for s in SETS]
    inp = write_lines(tmp_path / "in.jsonl", no_ids[:4])
    out = tmp_path / "out.jsonl"
    common = ["--out", str(out), "-m", str(tiny_native_ckpt), "--no-progress"]
    assert CliRunner().invoke(app, ["rank", str(inp), *common]).exit_code == 0
    before = out.read_bytes()
    write_lines(inp, [no_ids[0], *no_ids[2:]])  # line 2 deleted
    res = CliRunner().invoke(app, ["rank", str(inp), *common])
    assert res.exit_code == 1, res.output
    _no_traceback(res)
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {inp}: line 2 is not the line that {out} ranked as line 2 (fingerprint ")
    assert "the input changed since" in error
    assert error.endswith(
        "Nothing was ranked or written. Restore the input as it was, or rank it into a new output file (--out); "
        "records with an 'id' field resume across such edits"
    )
    assert "ranked" not in res.stdout.replace("ranker:", "")
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch-size", "0", "Invalid value for '--batch-size': must be at least 1, got 0"),
        ("--batch-size", "-5", "Invalid value for '--batch-size': must be at least 1, got -5"),
        ("--chunk-size", "0", "Invalid value for '--chunk-size': must be at least 1, got 0"),
        ("--num-threads", "-1", "Invalid value for '--num-threads': must be at least 0, got -1"),
    ],
)
def test_bad_numbers_are_usage_errors_before_any_loading(
    empty_ranker_cache: None, wide_errors: None, tiny_native_ckpt: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["rank", str(inp), "-o", str(out), "-m", str(tiny_native_ckpt), option, value])
    assert res.exit_code == 2, res.output
    _no_traceback(res)
    assert message in res.stderr
    assert "ranker:" not in res.stdout  # nothing was loaded
    assert not out.exists()


def test_outputs_that_cannot_be_written_are_usage_errors_before_loading(
    empty_ranker_cache: None, wide_errors: None, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
    (tmp_path / "folder").mkdir()
    cases = [
        (["-o", str(tmp_path / "folder")], f"Invalid value for '--out': the output '{tmp_path / 'folder'}' is a folder; pass a file path inside it, e.g. '{tmp_path / 'folder' / 'ranked.jsonl'}'"),
        (["-o", str(inp / "out.jsonl")], f"Invalid value for '--out': the output '{inp / 'out.jsonl'}' cannot be created: '{inp}' is a file, not a folder"),
        (["-o", str(inp)], f"Invalid value for '--out': the output '{inp}' is the input file; write the rankings to another file"),
        (["-o", str(tmp_path / "o.jsonl.gz")], "Invalid value for '--out': the output"),
        (["-o", str(tmp_path / "o.jsonl"), "--errors", str(tmp_path / "folder")], f"Invalid value for '--errors': the errors file '{tmp_path / 'folder'}' is a folder"),
    ]  # fmt: skip
    for args, message in cases:
        res = CliRunner().invoke(app, ["rank", str(inp), *args, "-m", str(tiny_native_ckpt), "--no-progress"])
        assert res.exit_code == 2, res.output
        _no_traceback(res)
        assert message in res.stderr
        assert "ranker:" not in res.stdout
    assert not (tmp_path / "o.jsonl").exists()
    # a folder that does not exist yet is created
    res = CliRunner().invoke(
        app, ["rank", str(inp), "-o", str(tmp_path / "new" / "o.jsonl"), "-m", str(tiny_native_ckpt), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert len(read_lines(tmp_path / "new" / "o.jsonl")) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: no permission to refuse")
def test_an_output_folder_without_write_permission(wide_errors: None, tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = CliRunner().invoke(app, ["rank", str(inp), "-o", str(locked / "o.jsonl"), "-m", str(tiny_native_ckpt)])
    finally:
        locked.chmod(0o700)
    assert res.exit_code == 2, res.output
    assert f"the folder '{locked}' is not writable (permission denied)" in res.stderr


# ---------------------------------------------------------------------------- one engine: the lock, old outputs


def test_a_second_run_on_the_same_out_is_refused_before_loading(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    out = tmp_path / "out.jsonl"
    args = ["rank", str(inp), "--out", str(out), "-m", str(tiny_native_ckpt), "--no-progress"]
    with lock_held_elsewhere(out) as holder:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 1, res.output
        _no_traceback(res)
        error = res.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: another run is writing {out}: process {holder.pid} on ")
        assert "-c " in error  # the command that holds it
        assert error.endswith("Wait for it to finish, or stop it, then run again (its lock, "
                              f"{out}.parts/lock, is released when its process ends)")  # fmt: skip
        assert "ranker:" not in res.stdout  # refused before the ranker was loaded
        assert not out.exists()
    res = CliRunner().invoke(app, args)  # the holder is gone, and its lock with it
    assert res.exit_code == 0, res.output
    assert len(read_lines(out)) == len(SETS)


def test_two_rank_processes_on_one_out_write_each_record_once(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    """Two ``blender-llm rank`` processes on the same --out at once (issue 20: before the lock covered local runs,
    the output held 536 lines for 300 records). The first is held still (SIGSTOP) once it has merged a shard, so
    the second surely starts while the first runs; the second is refused naming the first, and the first,
    let go, writes each record once."""
    inp = write_lines(tmp_path / "in.jsonl", many_sets(300, seed=3))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "blender_core.app.cli", "rank", str(inp), "--out", str(out)]
    cmd += ["-m", str(tiny_native_ckpt), "--shard-size", "10", "--chunk-size", "2", "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while first.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.stat().st_size > 0:
                break
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        os.kill(first.pid, signal.SIGSTOP)  # the first run, mid-way, holds --out
        merged = len(read_lines(out))
        assert 0 < merged < 300
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=240)
    assert second.returncode == 1, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"error: another run is writing {out}: process {first.pid} on {socket.gethostname()}, started "
    )
    assert first.returncode == 0, stderr[-3000:]
    assert "ranked 300 records" in stdout
    assert keys(out) == [r.get("id", k) for k, r in enumerate(many_sets(300, seed=3), 1)]  # each once, in order


def test_an_output_the_old_rank_left_resumes(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    """An output that ``rank`` left half-written before it ran on the one engine (cut in the middle of a line)."""
    out = tmp_path / "ranked.jsonl"
    shutil.copyfile(OLD / "partial_cut.jsonl", out)
    before = (OLD / "partial.jsonl").read_bytes()
    args = ["rank", str(OLD / "in.jsonl"), "--out", str(out), "-m", str(tiny_native_ckpt), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "ranked 30 records; 5 of them pairs; skipped 15 already in" in res.stdout
    assert "skipped 9 bad lines" in res.stdout
    assert out.read_bytes().startswith(before)  # the old records untouched, the cut one ranked again
    keys = [(r.get("id"), r["line"]) for r in read_lines(out)]
    assert keys == [(r.get("id"), r["line"]) for r in read_lines(OLD / "ranked.jsonl")]  # every record once


# ---------------------------------------------------------------------------- settings, Ctrl-C (issue 21)


def test_a_rerun_with_another_strategy_is_refused(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    """``rank --strategy full`` into an output written with knockout appended without a word."""
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    out = tmp_path / "out.jsonl"
    base = ["rank", str(inp), "--out", str(out), "-m", str(tiny_native_ckpt), "--no-progress"]
    first = CliRunner().invoke(app, [*base, "--strategy", "knockout"])
    assert first.exit_code == 0, first.output
    write_lines(out, read_lines(out)[:3])  # as an interrupted run leaves it
    before = out.read_bytes()
    again = CliRunner().invoke(app, [*base, "--strategy", "full"])
    assert again.exit_code == 1, again.output
    _no_traceback(again)
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: {out} was written with other settings: --strategy knockout (this run: full). Nothing was loaded, "
        f"ranked or written. Run with the settings it was written with (they are in {out}.settings.json), add "
        f"--overwrite to start over (it deletes {out}, its errors file and its parts), or write to another --out"
    )
    assert "ranker:" not in again.stdout
    assert out.read_bytes() == before
    same = CliRunner().invoke(app, [*base, "--strategy", "knockout"])  # the settings it records resume it
    assert same.exit_code == 0, same.output
    assert "ranked 3 records;" in same.stdout
    assert "skipped 3 already in" in same.stdout
    over = CliRunner().invoke(app, [*base, "--strategy", "full", "--overwrite"])
    assert over.exit_code == 0, over.output
    assert "ranked 6 records;" in over.stdout
    assert json.loads((tmp_path / "out.jsonl.settings.json").read_text())["strategy"] == "full"


def test_ctrl_c_says_how_many_records_are_saved_and_the_rerun_resumes(tiny_native_ckpt: Path, tmp_path: Path) -> None:
    """A real ``rank`` process sent SIGINT (Ctrl-C) mid-run: it exited 130 with no word of what was saved."""
    from blender_core.batch.partial import records_saved

    records = many_sets(300, seed=3)
    inp = write_lines(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    parts = out.with_name("out.jsonl.parts")
    cmd = [sys.executable, "-m", "blender_core.app.cli", "rank", str(inp), "--out", str(out)]
    cmd += ["-m", str(tiny_native_ckpt), "--shard-size", "40", "--chunk-size", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # a shard merged, the next one part way
            if out.exists() and out.stat().st_size > 0 and any(parts.glob("*.partial.jsonl")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    merged = len(read_lines(out))
    in_parts = sum(records_saved(p) for p in parts.glob("*.partial.jsonl"))
    assert 0 < merged < 300
    assert in_parts > 0
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: {merged + in_parts} records saved to {out} ({in_parts} of them in {out}.parts/, merged first "
        "by the next run); run the same command to resume"
    )
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"ranked {300 - merged} records;" in rerun.stdout
    assert f"skipped {merged} already in {out}" in rerun.stdout
    assert keys(out) == [r.get("id", k) for k, r in enumerate(records, 1)]  # each once, in order
