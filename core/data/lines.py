"""Reading data files line by line, bytes first: plain or ``.gz`` JSON lines.

Files are read as bytes, line by line (:func:`iter_raw_lines`), and each line is decoded and parsed on its own
(:func:`parse_json_line`), so whatever is wrong with a line is an error of that line, named by its number:

- a byte that is not UTF-8 (:func:`decode_line`);
- bad JSON;
- arrays and objects nested more than :data:`MAX_DEPTH` deep (checked before parsing, which would otherwise
  overflow Python's recursion limit);
- a lone surrogate: a ``\\ud800``-style escape without its pair, which decodes to no character and can be written
  back to no UTF-8 file;
- more than :data:`MAX_LINE_BYTES` bytes: the reader skips the rest of such a line without holding it, and gives a
  :class:`LongLine` (its first KiB) in its place.

A ``.gz`` that is cut short or corrupt yields every complete line before the damage, then raises
:class:`DataReadError` naming the last line read.

Example:
    >>> parse_json_line(b'{"prompt": "p", "candidates": ["a\\\\ud800", "b"]}', "in.jsonl:3")
    Traceback (most recent call last):
    ...
    blender_core.data.lines.DataFormatError: in.jsonl:3: candidates[0] holds a lone surrogate (\\ud800), \
which is not a character; write the character itself or a surrogate pair
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

#: the longest line read whole; the rest of a longer one is skipped without being held. A record of long-context
#: candidates (16 answers of 128k tokens) takes a few MB; a file of one huge line (a JSON array given as JSON
#: lines, a binary file) would otherwise be held, decoded and parsed at several times its size
MAX_LINE_BYTES = 16 << 20
#: how deep arrays and objects may nest in a line: records nest 3-5 deep; Python's parser would raise a
#: RecursionError somewhere near 1000
MAX_DEPTH = 100
#: how much of a line too long to read is kept, to show it by (the errors file)
LONG_LINE_HEAD = 1024


class DataFormatError(ValueError):
    """A line of a data file that none of the formats matches; the message names file and line."""


class DataReadError(DataFormatError):
    """A data file that cannot be read to its end (a cut or corrupt ``.gz``).

    Every line up to ``last_line`` was read (0: none); what follows it is lost or unreadable.
    """

    def __init__(self, path: str | Path, last_line: int, reason: str) -> None:
        self.path = str(path)
        self.last_line = last_line
        self.reason = reason
        where = f"cannot read past line {last_line}" if last_line else "cannot read even its first line"
        super().__init__(f"{path}: {where}: {reason}")


def _read_failure(exc: BaseException) -> str:
    """What a read error means, in words (the library's own message in parentheses)."""
    if isinstance(exc, EOFError):
        return f"the compressed data ends early, so the file is cut short ({exc})"
    return f"the file is corrupt ({type(exc).__name__}: {exc})"


_GZIP = 16 + zlib.MAX_WBITS  # zlib's gzip mode: header, deflate data, CRC-32 and size checked
_BLOCK = 1 << 16


def _gunzip(f: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream (every member), piece by piece.

    On damage, the block that holds it is fed again byte by byte from a copy of the decompressor taken
    before it, so every byte zlib can decode before the damage comes out before the error.
    """
    d = zlib.decompressobj(_GZIP)
    seen_any = False
    while block := f.read(_BLOCK):
        seen_any = True
        while block:
            if d.eof:  # a new member follows (trailing zero padding is ignored, as gzip does)
                block = block.lstrip(b"\0")
                if not block:
                    break
                d = zlib.decompressobj(_GZIP)
            saved = d.copy()
            try:
                out = d.decompress(block)
            except zlib.error:
                for k in range(len(block)):  # replay to the byte zlib rejects; that raises again
                    if piece := saved.decompress(block[k : k + 1]):
                        yield piece
                raise
            block = d.unused_data if d.eof else b""
            if out:
                yield out
    if seen_any and not d.eof:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


class LongLine(bytes):
    """A line longer than the reader's limit, in place of it: its first :data:`LONG_LINE_HEAD` bytes (to show it by),
    its length, and the limit. Parsing it is an error of its line (:func:`parse_json_line`)."""

    size: int
    limit: int

    def __new__(cls, head: bytes, size: int, limit: int) -> LongLine:
        line = super().__new__(cls, head[:LONG_LINE_HEAD])
        line.size, line.limit = size, limit
        return line

    @property
    def reason(self) -> str:
        """Why the line is skipped."""
        return f"too long ({self.size} bytes; a line may have at most {self.limit})"


def _start(pieces: list[bytes]) -> bytes:
    """The first :data:`LONG_LINE_HEAD` bytes of a line given as pieces (without joining them all)."""
    out: list[bytes] = []
    left = LONG_LINE_HEAD
    for piece in pieces:
        if left <= 0:
            break
        out.append(piece[:left])
        left -= len(out[-1])
    return b"".join(out)


def _lines(pieces: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    """Split a stream of byte pieces at ``\\n``; a last line without its newline comes out at the end. A line past
    ``max_bytes`` comes out as a :class:`LongLine`, its pieces past the first KiB dropped as they come."""
    head: list[bytes] = []  # the pieces of a line that began in an earlier piece (its first KiB, once too long)
    size = 0  # the length of that line so far

    def line(last: bytes) -> bytes:
        if size + len(last) > max_bytes:
            return LongLine(_start([*head, last]), size + len(last), max_bytes)
        return b"".join([*head, last])

    for piece in pieces:
        parts = piece.split(b"\n")
        if len(parts) == 1:
            if size + len(piece) <= max_bytes:
                head.append(piece)
            else:  # too long: keep its start only
                head = [_start([*head, piece])]
            size += len(piece)
            continue
        yield line(parts[0])
        for middle in parts[1:-1]:
            yield middle if len(middle) <= max_bytes else LongLine(middle, len(middle), max_bytes)
        head, size = ([parts[-1]] if parts[-1] else []), len(parts[-1])
        if size > max_bytes:
            head = [_start(head)]
    if head or size:
        yield line(b"")


def iter_raw_lines(path: str | Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, bytes)`` for every line of a plain or ``.gz`` file, blank ones too.

    Numbers count every line from 1; the bytes come without their line ending (``\\n`` or ``\\r\\n``).
    Nothing is decoded here, so one bad byte spoils only its own line (see :func:`decode_line`). A line longer
    than ``max_bytes`` is never held whole: a :class:`LongLine` (its first KiB) comes in its place.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        DataReadError: when the file cannot be read to its end (a cut or corrupt ``.gz``), after every
            complete line before the damage was yielded; the partial line at the damage is not.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    lineno = 0
    with p.open("rb") as f:
        pieces = _gunzip(f) if p.suffix == ".gz" else iter(lambda: f.read(_BLOCK), b"")
        try:
            for line in _lines(pieces, max_bytes):
                lineno += 1
                yield lineno, line if isinstance(line, LongLine) else line.removesuffix(b"\r")
        except (EOFError, OSError, zlib.error) as exc:
            raise DataReadError(path, lineno, _read_failure(exc)) from exc


def decode_line(raw: bytes, where: str) -> str:
    """One line's bytes as UTF-8 text; a ``DataFormatError`` naming ``where`` and the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            "save the file as UTF-8"
        ) from exc


# a string, or a bracket outside one (an unterminated string leaves its brackets counted: bad JSON either way)
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# the JSON escape of a surrogate (a high one may be half of a pair); absent, no string can hold a lone one
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``text`` (JSON), strings aside."""
    if text.count("[") + text.count("{") <= limit:  # no deeper than its brackets, those in strings too
        return False
    depth = 0
    for token in _TOKEN.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif bracket in ("]", "}"):
            depth -= 1
    return False


def _lone_surrogate(value: Any) -> tuple[str, str] | None:
    """Where the first lone surrogate in a parsed JSON value is (``candidates[0]``, ``a key of prompt``…) and
    which one, or None. Python's parser joins a valid pair into one character, so any surrogate left is lone."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, place = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return place or "the line", node[exc.start]
        elif isinstance(node, dict):
            for key, item in reversed(node.items()):
                inner = f"{place}.{key}" if place else str(key)
                stack.append((item, inner))
                stack.append((key, f"a key of {place or 'the record'}"))
        elif isinstance(node, list):
            stack.extend((item, f"{place}[{k}]") for k, item in reversed(list(enumerate(node))))
    return None


def parse_json_line(raw: bytes, where: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """One line's JSON value, or a :class:`DataFormatError` naming ``where`` and what is wrong with the line: too
    long (a :class:`LongLine`), not UTF-8, nested more than ``max_depth`` deep, not JSON, or holding a lone
    surrogate (see the module docstring). Never a ``RecursionError``, whatever the line."""
    if isinstance(raw, LongLine):
        raise DataFormatError(f"{where}: {raw.reason}")
    text = decode_line(raw, where)
    if _deeper_than(text, max_depth):
        raise DataFormatError(f"{where}: arrays and objects nested more than {max_depth} deep; a record needs a few levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:  # only a max_depth above what this thread's stack takes gets here
        raise DataFormatError(f"{where}: arrays and objects nested too deep to parse") from exc
    if _SURROGATE_ESCAPE.search(text):
        found = _lone_surrogate(value)
        if found is not None:
            place, char = found
            raise DataFormatError(
                f"{where}: {place} holds a lone surrogate (\\u{ord(char):04x}), which is not a character; "
                "write the character itself or a surrogate pair"
            )
    return value


def open_text(path: str | Path) -> TextIO:
    """Open ``.jsonl`` / ``.json`` or their ``.gz`` versions as UTF-8 text."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return p.open(encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-empty line; a line :func:`parse_json_line` refuses is an error
    naming the line, and a cut or corrupt ``.gz`` a :class:`DataReadError` naming the last line read."""
    for lineno, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        obj = parse_json_line(raw, f"{path}:{lineno}")
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        yield lineno, obj
