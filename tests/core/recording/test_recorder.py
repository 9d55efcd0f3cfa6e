"""The traffic recorder as the engine's sink: what a line holds, rotation, sampling, redaction, a full queue, a
full disk (a real ENOSPC from /dev/full), whole lines under concurrent writers, the repair of a torn line."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blender_core.ensemble import Ensemble
from blender_core.recording import RecordSettings, TrafficRecorder
from blender_core.recording.files import create_exclusive, traffic_files
from tests.helpers.core_fakes import LengthRanker, ScriptedFuser, answering, failing

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]


def calls(suffix: str = "") -> dict[str, object]:
    return {
        "short": answering("four" + suffix, usage={"input_tokens": 3, "output_tokens": 1}),
        "long": answering("it is four, 2 + 2" + suffix),
        "down": failing("no"),
    }


def lines_of(folder: Path) -> list[dict[str, object]]:
    out = []
    for path in traffic_files(folder):
        data = path.read_bytes()
        assert data.endswith(b"\n"), path
        out += [json.loads(line) for line in data.splitlines()]
    return out


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[TrafficRecorder]:
    rec = TrafficRecorder(tmp_path / "traffic")
    yield rec
    rec.close()


def test_a_line_is_a_ranked_candidate_set_with_the_served_account(recorder: TrafficRecorder) -> None:
    engine = Ensemble(LengthRanker(), ScriptedFuser(), top_k=2, sinks=[recorder])
    outcome = engine.run("Be brief.\n2 + 2?", calls(), messages=CHAT)
    assert recorder.flush()
    (line,) = lines_of(recorder.folder)
    assert line["prompt"] == "Be brief.\n2 + 2?"
    assert line["messages"] == CHAT
    assert line["candidates"] == ["four", "it is four, 2 + 2"]
    assert line["models"] == ["short", "long"]
    assert line["scores"] == [4.0, 17.0]
    assert line["ranks"] == [2, 1]
    assert (line["best"], line["best_text"], line["best_model"]) == (1, "it is four, 2 + 2", "long")
    assert line["answer"] == outcome.text == "it is four, 2 + 2 + four"
    assert line["fused"] is True
    assert line["chosen"] == ["long", "short"]
    assert (line["ranker"], line["strategy"]) == ("length", "full")
    served = line["served"]
    assert [c["backend"] for c in served["candidates"]] == ["short", "long"]
    assert served["candidates"][0]["usage"] == {"input_tokens": 3, "output_tokens": 1}
    assert served["failed"] == [{"backend": "down", "latency_s": pytest.approx(0, abs=1), "error": "RuntimeError: no"}]
    assert served["fuser"] == "scripted"
    assert "rank_s" in served["timings"]
    assert str(line["id"]).startswith(str(line["time"]).replace("-", "").replace(":", "")[:15])
    assert recorder.stats().written == 1


def test_files_rotate_by_size_with_names_that_sort_in_writing_order(tmp_path: Path) -> None:
    with TrafficRecorder(tmp_path, rotate_bytes=1500) as rec:
        engine = Ensemble(LengthRanker(), sinks=[rec])
        for k in range(6):
            engine.run(f"question {k}", calls(f" #{k}"))
        assert rec.flush()
        stats = rec.stats()
    files = traffic_files(tmp_path)
    assert stats.files == len(files) >= 3
    assert all(f.stat().st_size <= 1500 for f in files)
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert all(f.name.startswith("traffic-") and f.name.endswith(".jsonl") for f in files)
    # every request once, in the order answered, across the files
    assert [line["prompt"] for line in lines_of(tmp_path)] == [f"question {k}" for k in range(6)]
    assert stats.written == 6
    assert stats.bytes_written == sum(f.stat().st_size for f in files)


def test_files_rotate_by_age(tmp_path: Path) -> None:
    with TrafficRecorder(tmp_path, rotate_seconds=0.05) as rec:
        engine = Ensemble(LengthRanker(), sinks=[rec])
        engine.run("first", calls())
        assert rec.flush()
        threading.Event().wait(0.1)
        engine.run("second", calls())
        assert rec.flush()
    first, second = traffic_files(tmp_path)
    assert json.loads(first.read_text())["prompt"] == "first"
    assert json.loads(second.read_text())["prompt"] == "second"


def test_sample_keeps_about_its_share_and_counts_the_rest(tmp_path: Path) -> None:
    with TrafficRecorder(tmp_path, sample=0.25, rng=random.Random(7)) as rec:
        engine = Ensemble(LengthRanker(), sinks=[rec])
        for k in range(200):
            engine.run(f"q{k}", {"a": answering("x"), "b": answering("yy")})
        assert rec.flush()
        stats = rec.stats()
    assert stats.written + stats.sampled_out == 200
    assert 30 <= stats.written <= 70  # 50 expected
    assert len(lines_of(tmp_path)) == stats.written


def test_requests_matching_a_pattern_or_holding_a_secret_are_dropped_and_counted(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    with TrafficRecorder(tmp_path, drop_matching=[r"(?i)\bpassword\b", r"\d{4}-\d{4}-\d{4}-\d{4}"], secrets=[secret]) as rec:
        engine = Ensemble(LengthRanker(), sinks=[rec])
        engine.run("My PASSWORD is hunter2", calls(), messages=[{"role": "user", "content": "My PASSWORD is hunter2"}])
        engine.run("card?", {"a": answering("4111-1111-1111-1111"), "b": answering("no")})  # in an answer
        engine.run(f"use {secret}", calls())
        engine.run("harmless", calls())
        assert rec.flush()
        stats = rec.stats()
    assert (stats.redacted, stats.written) == (3, 1)
    assert [line["prompt"] for line in lines_of(tmp_path)] == ["harmless"]
    assert secret not in "".join(p.read_text() for p in traffic_files(tmp_path))


def test_a_full_queue_drops_and_counts_and_never_waits(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_disk(path: Path) -> int:  # the writer's first open hangs until released
        entered.set()
        release.wait(30)
        return create_exclusive(path)

    rec = TrafficRecorder(tmp_path, queue_size=2, opener=slow_disk)
    engine = Ensemble(LengthRanker(), sinks=[rec])
    try:
        engine.run("q0", calls())
        assert entered.wait(10)  # the writer holds q0, stuck in its open
        for k in range(1, 6):
            engine.run(f"q{k}", calls())  # q1, q2 fill the queue; q3..q5 are dropped at once
        stats = rec.stats()
        assert (stats.queue_full, stats.pending, stats.written) == (3, 2, 0)
    finally:
        release.set()
        rec.close()
    assert rec.stats().written == 3
    assert [line["prompt"] for line in lines_of(tmp_path)] == ["q0", "q1", "q2"]


def test_a_full_disk_is_counted_and_logged_once_while_every_answer_goes_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def full_disk(path: Path) -> int:  # every write fails with a real ENOSPC
        return os.open("/dev/full", os.O_WRONLY)

    rec = TrafficRecorder(tmp_path, opener=full_disk)
    engine = Ensemble(LengthRanker(), sinks=[rec])
    with caplog.at_level(logging.WARNING, logger="blender_core.recording"):
        answers = [engine.run(f"q{k}", calls()).text for k in range(4)]
        assert rec.flush()
    rec.close()
    assert answers == ["it is four, 2 + 2"] * 4
    stats = rec.stats()
    assert (stats.failed, stats.written) == (4, 0)
    logged = [r for r in caplog.records if "could not record a request" in r.getMessage()]
    assert len(logged) == 1
    assert "No space left on device" in logged[0].getMessage()
    assert engine.sinks.errors == 0  # the recorder itself never raised into the engine


def test_concurrent_requests_give_whole_lines_only(tmp_path: Path) -> None:
    big = "x" * 200_000  # lines far longer than a pipe's or a page's atomic size
    with TrafficRecorder(tmp_path, rotate_bytes=2_000_000, queue_size=200) as rec:
        engine = Ensemble(LengthRanker(), sinks=[rec])
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: engine.run(f"q{k}", calls(f" {k} {big}")), range(40)))
        assert rec.flush()
        stats = rec.stats()
    lines = lines_of(tmp_path)  # each parses, each file ends with a newline
    assert stats.written == len(lines) == 40
    assert sorted(line["prompt"] for line in lines) == sorted(f"q{k}" for k in range(40))


def test_a_torn_last_line_left_by_a_crash_is_cut_and_a_whole_one_completed(tmp_path: Path) -> None:
    whole = json.dumps({"prompt": "p", "candidates": ["a", "b"]}).encode()
    torn = tmp_path / "traffic-20260101-000000-0001.jsonl"
    torn.write_bytes(whole + b"\n" + whole[:17])  # a crash in the middle of the second line
    unfinished = tmp_path / "traffic-20260101-000001-0001.jsonl"
    unfinished.write_bytes(whole + b"\n" + whole)  # cut just before its newline
    with TrafficRecorder(tmp_path) as rec:
        Ensemble(LengthRanker(), sinks=[rec]).run("new", calls())
        assert rec.flush()
    assert torn.read_bytes() == whole + b"\n"
    assert unfinished.read_bytes() == whole + b"\n" + whole + b"\n"
    assert [line["prompt"] for line in lines_of(tmp_path)] == ["p", "p", "p", "new"]


def test_close_writes_what_is_queued_and_later_requests_are_counted_as_closed(tmp_path: Path) -> None:
    rec = TrafficRecorder(tmp_path)
    engine = Ensemble(LengthRanker(), sinks=[rec])
    for k in range(20):
        engine.run(f"q{k}", calls())
    rec.close()  # no flush before: close itself writes the queue out
    engine.run("late", calls())
    stats = rec.stats()
    assert (stats.written, stats.closed, stats.pending) == (20, 1, 0)
    assert len(lines_of(tmp_path)) == 20
    assert stats.as_dict()["dropped"] == 0


def test_a_request_with_one_answer_is_not_a_line(recorder: TrafficRecorder) -> None:
    Ensemble(LengthRanker(), sinks=[recorder]).run("q", {"a": answering("x"), "b": failing("no")})
    assert recorder.flush()
    assert recorder.stats().too_few == 1
    assert lines_of(recorder.folder) == []


def test_settings_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"needs a folder to write to"):
        TrafficRecorder()
    with pytest.raises(ValueError, match=r"sample\n  Input should be less than or equal to 1"):
        RecordSettings(sample=1.5)
    with pytest.raises(ValueError, match=r"drop_matching item 1 \('\[a-'\) is not a regular expression"):
        RecordSettings(drop_matching=["ok", "[a-"])
    with pytest.raises(TypeError, match=r"both settings and \['sample'\]"):
        TrafficRecorder("x", RecordSettings(), sample=0.5)


FILE_SIZE_LIMIT = """
import json, resource, signal, sys
from pathlib import Path
from blender_core.ensemble import Ensemble
from blender_core.recording import TrafficRecorder
from tests.helpers.core_fakes import LengthRanker, answering

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write is cut short, then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
rec = TrafficRecorder(sys.argv[1], rotate_bytes=10**9)
engine = Ensemble(LengthRanker(), sinks=[rec])
texts = [engine.run(f"q{k}", {"a": answering("x" * 300), "b": answering(f"answer {k}")}).text for k in range(8)]
rec.close()
print(json.dumps({"answers": len(texts), **rec.stats().as_dict()}))
"""


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=root, check=True,
    )
    stats = json.loads(out.stdout.splitlines()[-1])
    assert stats["answers"] == 8
    assert stats["written"] >= 2
    assert stats["failed"] == 8 - stats["written"] >= 1
    (path,) = traffic_files(tmp_path)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    assert len(data.splitlines()) == stats["written"]
    assert len(data) == stats["bytes_written"]
    assert "File too large" in out.stderr  # the real error, logged once
