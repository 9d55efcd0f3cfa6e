"""Reading data files as bytes, line by line: a bad byte spoils only its line, a cut or corrupt ``.gz`` yields
every complete line before the damage and then names the last line read; and candidate lists of mixed kinds
name the right candidate."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path

import pytest

from blender_core.data.lines import (
    DataFormatError,
    DataReadError,
    LongLine,
    decode_line,
    iter_jsonl,
    iter_raw_lines,
    parse_json_line,
)
from blender_core.data.records import parse_record

ROWS = [json.dumps({"prompt": f"question {i}", "candidates": [f"yes {i}", f"no {i}"]}) for i in range(400)]


def _recoverable_lines(cut: bytes) -> int:
    """How many complete lines a gzip stream cut short still holds (zlib's own count, the test's oracle)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")


def _decoded_before_damage(data: bytes) -> bytes:
    """What zlib decodes from damaged gzip ``data`` fed one byte at a time, up to its error (the oracle)."""
    d, out = zlib.decompressobj(16 + zlib.MAX_WBITS), b""
    try:
        for k in range(len(data)):
            out += d.decompress(data[k : k + 1])
    except zlib.error:
        return out
    raise AssertionError("the data is not damaged")


def test_a_bad_byte_spoils_only_its_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n{"prompt": "caf\xe9"}\n{"b": 2}')
    lines = list(iter_raw_lines(path))
    # every line, blank ones too, numbered from 1, without its line ending; the last needs no newline
    assert lines == [(1, b'{"a": 1}'), (2, b""), (3, b'{"prompt": "caf\xe9"}'), (4, b'{"b": 2}')]
    with pytest.raises(DataFormatError, match=r"^in:3: not valid UTF-8 \(byte 0xe9 at column 16\); save the file"):
        decode_line(lines[2][1], "in:3")
    assert decode_line(lines[3][1], "in:4") == '{"b": 2}'


def test_the_strict_reader_names_the_line_of_a_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(f"{ROWS[0]}\n{ROWS[1]}\n".encode() + b'{"prompt": "\xff"}\n')
    rows = iter_jsonl(path)
    assert [n for n, _ in (next(rows), next(rows))] == [1, 2]
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}:3: not valid UTF-8 \(byte 0xff at column 13\)"):
        next(rows)


@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_a_cut_gz_yields_its_complete_lines_then_names_the_last(tmp_path: Path, fraction: float) -> None:
    data = gzip.compress(("\n".join(ROWS) + "\n").encode())
    cut = data[: int(len(data) * fraction)]
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(cut)
    want = _recoverable_lines(cut)
    assert 0 < want < len(ROWS)
    got: list[tuple[int, bytes]] = []
    with pytest.raises(DataReadError) as info:
        got.extend(iter_raw_lines(path))
    assert got == [(n, ROWS[n - 1].encode()) for n in range(1, want + 1)]  # no partial last line
    assert info.value.last_line == want
    assert str(info.value) == (
        f"{path}: cannot read past line {want}: the compressed data ends early, so the file is cut short "
        "(Compressed file ended before the end-of-stream marker was reached)"
    )
    with pytest.raises(DataReadError, match=rf"cannot read past line {want}: .*cut short"):
        list(iter_jsonl(path))  # the strict reader too


def test_a_corrupt_gz_yields_every_line_zlib_decodes_before_the_damage(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(("\n".join(ROWS) + "\n").encode()))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeros in the middle of the deflate stream
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(bytes(data))
    want = _decoded_before_damage(bytes(data)).split(b"\n")[:-1]
    assert 100 < len(want) < len(ROWS)  # the damage is well inside the first block that is read
    got: list[tuple[int, bytes]] = []
    with pytest.raises(DataReadError, match=rf"cannot read past line {len(want)}: the file is corrupt \(error: ") as info:
        got.extend(iter_raw_lines(path))
    assert got == list(enumerate(want, start=1))
    assert info.value.last_line == len(want)


def test_a_gz_of_several_members_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(b"a\nb") + gzip.compress(b"c\n") + bytes(8))  # zero padding after the end
    assert list(iter_raw_lines(path)) == [(1, b"a"), (2, b"bc")]
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    assert list(iter_raw_lines(tmp_path / "empty.jsonl.gz")) == []


def test_a_gz_that_is_not_gzip_cannot_be_read_at_all(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_text(ROWS[0] + "\n")
    with pytest.raises(DataReadError, match=r"cannot read even its first line: the file is corrupt \(error: .*incorrect header check\)$") as info:
        list(iter_raw_lines(path))
    assert info.value.last_line == 0


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        (["a", None], r"candidates\[1\] must be a str, like candidates\[0\], got None$"),
        (["a", "b", 3], r"candidates\[2\] must be a str, like candidates\[0\], got int$"),
        ([{"output": "a"}, "b"], r"candidates\[1\] must be an object, like candidates\[0\], got str$"),
        ([None, "b"], r"candidates\[0\] must be an object or a string, got None$"),
    ],
)
def test_mixed_candidates_name_the_one_that_differs(candidates: list[object], message: str) -> None:
    with pytest.raises(DataFormatError, match=r"^f:7: " + message):
        parse_record({"prompt": "p", "candidates": candidates}, where="f:7")


@pytest.mark.parametrize("name", ["long.jsonl", "long.jsonl.gz"])
def test_lines_longer_than_a_read_block_come_out_whole(tmp_path: Path, name: str) -> None:
    long = json.dumps({"prompt": "p", "candidates": ["x" * 300_000, "y" * 200_000]}).encode()
    text = b"\n".join([b"{}", long, long, b"{}"]) + b"\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    assert list(iter_raw_lines(path)) == [(1, b"{}"), (2, long), (3, long), (4, b"{}")]


@pytest.mark.parametrize("name", ["long.jsonl", "long.jsonl.gz"])
def test_a_line_past_the_limit_comes_as_its_start_and_length(tmp_path: Path, name: str) -> None:
    long = json.dumps({"prompt": "p", "candidates": ["x" * 300_000, "y"]}).encode()
    text = b"\n".join([b"{}", long, b"{}", long]) + b"\r\n"  # the last one ends in CRLF
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    lines = list(iter_raw_lines(path, max_bytes=100_000))
    assert [n for n, _ in lines] == [1, 2, 3, 4]
    assert (lines[0][1], lines[2][1]) == (b"{}", b"{}")
    for n, cut in (lines[1], lines[3]):
        assert isinstance(cut, LongLine)
        assert bytes(cut) == long[:1024]
        assert (cut.size, cut.limit) == (len(long) + (n == 4), 100_000)  # the CR is counted, not kept apart
        with pytest.raises(DataFormatError, match=rf"^f:{n}: too long \({cut.size} bytes; a line may have at most 100000\)$"):
            parse_json_line(cut, f"f:{n}")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": "\\ud800"}', r"a holds a lone surrogate \(\\ud800\)"),
        (b'{"a": [{"b": ["ok", "\\udfff x"]}]}', r"a\[0\]\.b\[1\] holds a lone surrogate \(\\udfff\)"),
        (b'{"\\udc00": 1}', r"a key of the record holds a lone surrogate \(\\udc00\)"),
        (b'"\\ud83d"', r"the line holds a lone surrogate \(\\ud83d\)"),  # a high half without its low one
        (b"[" * 101 + b"]" * 101, r"arrays and objects nested more than 100 deep"),
        (b'{"a": ' + b"{" * 100_000, r"arrays and objects nested more than 100 deep"),  # never a RecursionError
    ],
)
def test_a_line_that_no_output_could_hold_is_a_format_error(raw: bytes, message: str) -> None:
    with pytest.raises(DataFormatError, match=r"^f:1: " + message):
        parse_json_line(raw, "f:1")


def test_what_only_looks_like_a_poison_line_parses() -> None:
    assert parse_json_line(b'{"a": "\\ud83d\\ude00"}', "f") == {"a": "\U0001f600"}  # a surrogate pair
    assert parse_json_line(b'{"a": "\\\\ud800"}', "f") == {"a": "\\ud800"}  # a backslash, then text
    assert parse_json_line(b"[" * 100 + b"]" * 100, "f") is not None  # 100 deep is fine
    deep_text = '{"a": "' + "[{" * 5000 + '"}'  # brackets in a string are text
    assert parse_json_line(deep_text.encode(), "f") == {"a": "[{" * 5000}
