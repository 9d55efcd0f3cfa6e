"""``rank_file`` against damaged input and outputs that do not fit: bad bytes, cut or corrupt ``.gz`` files, an
input that changed under a resumed output, and output paths that cannot take the rankings."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from pathlib import Path

import pytest

from blender_core.batch.rank_file import (
    InputChangedError,
    LineError,
    PartialInputError,
    rank_file,
)
from tests.core.batch.records import SETS, read_lines, write_lines
from tests.helpers.core_fakes import LengthRanker

# no record has an id: each is keyed by its line number
NO_IDS = [{k: v for k, v in s.items() if k != "id"} for s in SETS]


def _keys(path: Path) -> list[object]:
    return [r.get("id", r.get("line")) for r in read_lines(path)]


def _ranked(ranker: LengthRanker) -> list[str]:
    """The prompts the ranker was asked to rank, in order."""
    return [p for prompts, _, _ in ranker.calls for p in prompts]


def _gz_lines(n: int) -> list[str]:
    return [json.dumps({"prompt": f"q{i}", "candidates": [f"a{i}", f"bb{i}"]}) for i in range(1, n + 1)]


def _cut_gz(path: Path, lines: list[str], fraction: float) -> int:
    """Write ``lines`` gzipped, cut at ``fraction`` of the bytes; the number of complete lines left (zlib's count)."""
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    cut = data[: int(len(data) * fraction)]
    path.write_bytes(cut)
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")


# ---------------------------------------------------------------------------- bad bytes


def test_a_bad_byte_is_a_bad_line_and_the_run_goes_on(tmp_path: Path) -> None:
    lines = [json.dumps(x).encode() for x in SETS]
    lines[2] = b'{"prompt": "caf\xe9", "candidates": ["a", "b"]}'
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    seen: list[LineError] = []
    report = rank_file(LengthRanker(), inp, out, errors_path=err, show_progress=False, on_error=seen.append)
    assert report.errors == (
        LineError(3, "not valid UTF-8 (byte 0xe9 at column 16); save the file as UTF-8"),
    )
    assert seen == list(report.errors)
    assert (report.written, report.skipped) == (5, 0)
    assert _keys(out) == ["q1", 2, 4, "q5", 6]  # every line after the bad one was ranked
    (bad,) = read_lines(err)
    assert bad == {
        "line": 3,
        "error": report.errors[0].reason,
        "text": '{"prompt": "caf\\xe9", "candidates": ["a", "b"]}',
    }
    # the same line, the same place: not a dead end
    again = rank_file(LengthRanker(), inp, out, show_progress=False)
    assert (again.written, again.skipped, [e.line for e in again.errors]) == (0, 5, [3])


def test_each_record_stores_the_fingerprint_of_its_line(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS)
    rank_file(LengthRanker(), inp, tmp_path / "out.jsonl", show_progress=False)
    raw = inp.read_bytes().split(b"\n")
    rows = read_lines(tmp_path / "out.jsonl")
    assert [r["line_hash"] for r in rows] == [
        hashlib.blake2b(raw[r["line"] - 1], digest_size=8).hexdigest() for r in rows
    ]
    assert list(rows[0])[:4] == ["id", "line", "line_hash", "prompt"]
    assert list(rows[1])[:3] == ["line", "line_hash", "prompt"]


# ---------------------------------------------------------------------------- cut and corrupt .gz


def _decodable_lines(data: bytes) -> int:
    """Complete lines zlib decodes from ``data`` before it raises, fed one byte at a time (the test's oracle)."""
    d, out = zlib.decompressobj(16 + zlib.MAX_WBITS), b""
    try:
        for k in range(len(data)):
            out += d.decompress(data[k : k + 1])
    except zlib.error:
        return out.count(b"\n")
    raise AssertionError("the data is not damaged")


@pytest.mark.parametrize("show_progress", [False, True])
def test_a_cut_gz_ranks_every_complete_line_then_fails_and_a_rerun_resumes(
    tmp_path: Path, show_progress: bool
) -> None:
    lines = _gz_lines(300)
    cut_path = tmp_path / "in.jsonl.gz"
    good = _cut_gz(cut_path, lines, 0.5)
    assert 0 < good < 300
    out = tmp_path / "out.jsonl"
    with pytest.raises(PartialInputError) as info:
        rank_file(LengthRanker(), cut_path, out, chunk_size=7, show_progress=show_progress)
    assert info.value.last_line == good
    assert str(info.value) == (
        f"{cut_path}: cannot read past line {good}: the compressed data ends early, so the file is cut short "
        f"(Compressed file ended before the end-of-stream marker was reached). Lines 1-{good} were ranked into "
        f"{out}; restore the complete file and run again with the same output to rank the rest"
    )
    assert (info.value.report.written, info.value.report.skipped) == (good, 0)
    assert _keys(out) == list(range(1, good + 1))  # the last partial chunk was written too

    full = tmp_path / "full.jsonl.gz"
    full.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    ranker = LengthRanker()
    report = rank_file(ranker, full, out, chunk_size=7, show_progress=show_progress)
    assert (report.written, report.skipped, report.errors) == (300 - good, good, ())
    assert _ranked(ranker) == [f"q{i}" for i in range(good + 1, 301)]  # nothing ranked twice
    rank_file(LengthRanker(), full, tmp_path / "once.jsonl", show_progress=False)
    assert read_lines(out) == read_lines(tmp_path / "once.jsonl")


def test_a_corrupt_gz_keeps_what_came_before_the_damage(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(("\n".join(_gz_lines(300)) + "\n").encode()))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    inp = tmp_path / "in.jsonl.gz"
    inp.write_bytes(bytes(data))
    good = _decodable_lines(bytes(data))
    assert 100 < good < 300
    out = tmp_path / "out.jsonl"
    with pytest.raises(
        PartialInputError, match=rf"cannot read past line {good}: the file is corrupt \(error: "
    ) as info:
        rank_file(LengthRanker(), inp, out, show_progress=False)
    assert info.value.last_line == good
    # every line zlib decoded before it noticed the damage was ranked, or reported if the damage garbled it
    bad = [e.line for e in info.value.report.errors]
    assert sorted(_keys(out) + bad) == list(range(1, good + 1))  # type: ignore[type-var]
    assert len(bad) <= 1


# ---------------------------------------------------------------------------- an input that changed under the output


def test_a_deleted_line_under_line_keyed_records_stops_before_ranking(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rank_file(LengthRanker(), write_lines(tmp_path / "a.jsonl", NO_IDS[:4]), out, show_progress=False)
    before = out.read_bytes()
    edited = write_lines(tmp_path / "b.jsonl", [NO_IDS[0], *NO_IDS[2:]])  # line 2 deleted, two lines added
    ranker = LengthRanker()
    with pytest.raises(InputChangedError) as info:
        rank_file(ranker, edited, out, errors_path=tmp_path / "err.jsonl", show_progress=False)
    message = str(info.value)
    assert message.startswith(f"{edited}: line 2 is not the line that {out} ranked as line 2 (fingerprint ")
    assert f": the input changed since {out} was written (lines inserted, deleted or edited)" in message
    assert (
        "Nothing was ranked or written. Restore the input as it was, or rank it into a new output file"
        in message
    )
    assert ranker.calls == []
    assert out.read_bytes() == before  # nothing more written
    assert not (tmp_path / "err.jsonl").exists()


def test_an_edited_line_and_a_shorter_input_are_changes_too(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rank_file(LengthRanker(), write_lines(tmp_path / "a.jsonl", NO_IDS), out, show_progress=False)
    edited = [*NO_IDS]
    edited[4] = {**NO_IDS[4], "prompt": "Write a sonnet"}
    with pytest.raises(InputChangedError, match=r": line 5 is not the line that .* ranked as line 5"):
        rank_file(LengthRanker(), write_lines(tmp_path / "b.jsonl", edited), out, show_progress=False)
    with pytest.raises(
        InputChangedError, match=rf": the input ends at line 4, but {out} holds a record of line 6"
    ):
        rank_file(LengthRanker(), write_lines(tmp_path / "c.jsonl", NO_IDS[:4]), out, show_progress=False)
    # the same text with other line endings is the same input
    crlf = tmp_path / "d.jsonl"
    crlf.write_bytes((tmp_path / "a.jsonl").read_bytes().replace(b"\n", b"\r\n"))
    assert rank_file(LengthRanker(), crlf, out, show_progress=False).skipped == 6


def test_records_with_an_id_resume_across_deleted_lines(tmp_path: Path) -> None:
    ided = [{**s, "id": f"r{k}"} for k, s in enumerate(SETS)]
    out = tmp_path / "out.jsonl"
    rank_file(LengthRanker(), write_lines(tmp_path / "a.jsonl", ided[:4]), out, show_progress=False)
    ranker = LengthRanker()
    report = rank_file(
        ranker, write_lines(tmp_path / "b.jsonl", [ided[0], *ided[2:]]), out, show_progress=False
    )
    # r2 and r3 moved up a line: still done, not "already used"; only r4 and r5 are new
    assert (report.written, report.skipped, report.errors, report.changed) == (2, 3, (), ())
    assert _ranked(ranker) == [SETS[4]["prompt"], SETS[5]["prompt"]]
    # a repeated id is still caught, against the line that had it in this run
    again = rank_file(
        LengthRanker(), write_lines(tmp_path / "c.jsonl", [*ided, ided[1]]), out, show_progress=False
    )
    assert again.errors == (LineError(7, "id 'r1' already used by line 2"),)


def test_a_changed_record_with_an_id_keeps_its_ranking_and_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.jsonl"
    inp = write_lines(tmp_path / "a.jsonl", SETS)
    rank_file(LengthRanker(), inp, out, show_progress=False)
    before = out.read_bytes()
    edited = [*SETS]
    edited[4] = {**SETS[4], "candidates": ["a different poem", "b"]}  # id q5, line 5
    ranker = LengthRanker()
    with caplog.at_level(logging.WARNING, logger="blender_core.batch.rank_file"):
        report = rank_file(ranker, write_lines(tmp_path / "b.jsonl", edited), out, show_progress=False)
    assert (report.written, report.skipped, report.changed) == (0, 6, (5,))
    assert ranker.calls == []
    assert out.read_bytes() == before
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 records with an id changed since" in warning
    assert "(first: line 5); their earlier rankings are kept" in warning


def test_an_output_without_fingerprints_still_resumes_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.jsonl"
    inp = write_lines(tmp_path / "a.jsonl", NO_IDS[:4])
    rank_file(LengthRanker(), inp, out, show_progress=False)
    # as older versions wrote
    old = [{k: v for k, v in r.items() if k != "line_hash"} for r in read_lines(out)]
    write_lines(out, old)
    ranker = LengthRanker()
    with caplog.at_level(logging.WARNING):
        report = rank_file(ranker, write_lines(tmp_path / "b.jsonl", NO_IDS), out, show_progress=False)
    assert (report.written, report.skipped) == (2, 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{out}: 4 of its 4 records have no line fingerprint (written by an older version): they resume as "
        "before, but a changed input cannot be detected for them"
    ]


# ---------------------------------------------------------------------------- where the output goes


def test_output_paths_that_cannot_take_the_rankings(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", SETS[:2])
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"^the output '.*folder' is a folder; pass a file path inside it"):
        rank_file(LengthRanker(), inp, tmp_path / "folder", show_progress=False)
    with pytest.raises(ValueError, match=r"cannot be created: '.*in\.jsonl' is a file, not a folder$"):
        rank_file(LengthRanker(), inp, tmp_path / "in.jsonl" / "out.jsonl", show_progress=False)
    with pytest.raises(
        ValueError, match=r"^the errors file '.*in\.jsonl' is the input file, which it would overwrite"
    ):
        rank_file(LengthRanker(), inp, tmp_path / "out.jsonl", errors_path=inp, show_progress=False)
    with pytest.raises(
        ValueError, match=r"^the errors file '.*folder' is a folder; .*folder/errors\.jsonl'$"
    ):
        rank_file(
            LengthRanker(), inp, tmp_path / "out.jsonl", errors_path=tmp_path / "folder", show_progress=False
        )
    with pytest.raises(ValueError, match=r"^chunk_size must be a positive int, got 0$"):
        rank_file(LengthRanker(), inp, tmp_path / "out.jsonl", chunk_size=0, show_progress=False)
    assert not (tmp_path / "out.jsonl").exists()
    # a missing folder is created, as before
    report = rank_file(LengthRanker(), inp, tmp_path / "new" / "deeper" / "out.jsonl", show_progress=False)
    assert report.written == 2
