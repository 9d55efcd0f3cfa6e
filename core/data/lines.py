"""Reading data files line by line, bytes first: plain or ``.gz`` JSON lines.

Files are read as bytes, line by line (:func:`iter_raw_lines`), and each line is decoded on its own
(:func:`decode_line`): a byte that is not UTF-8 is an error of that line, named by its number. A ``.gz``
that is cut short or corrupt yields every complete line before the damage, then raises
:class:`DataReadError` naming the last line read.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO


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


def _lines(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Split a stream of byte pieces at ``\\n``; a last line without its newline comes out at the end."""
    head: list[bytes] = []  # the pieces of a line that began in an earlier piece
    for piece in pieces:
        parts = piece.split(b"\n")
        if len(parts) == 1:
            head.append(piece)
            continue
        yield b"".join([*head, parts[0]])
        yield from parts[1:-1]
        head = [parts[-1]] if parts[-1] else []
    if head:
        yield b"".join(head)


def iter_raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, bytes)`` for every line of a plain or ``.gz`` file, blank ones too.

    Numbers count every line from 1; the bytes come without their line ending (``\\n`` or ``\\r\\n``).
    Nothing is decoded here, so one bad byte spoils only its own line (see :func:`decode_line`).

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
            for line in _lines(pieces):
                lineno += 1
                yield lineno, line.removesuffix(b"\r")
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


def open_text(path: str | Path) -> TextIO:
    """Open ``.jsonl`` / ``.json`` or their ``.gz`` versions as UTF-8 text."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return p.open(encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-empty line; bad JSON or a byte that is not UTF-8 is an
    error naming the line, and a cut or corrupt ``.gz`` a :class:`DataReadError` naming the last line read."""
    for lineno, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        line = decode_line(raw, f"{path}:{lineno}")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        yield lineno, obj
