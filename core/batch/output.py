"""The output file of a batch job (:mod:`blender_core.batch.sharded`): where it may go, and what it already holds.

Before a run, :func:`check_output_path` says in one sentence why a path cannot take the rankings (a folder,
the input itself, a ``.gz``, a folder that cannot be created, no permission to write), so that a command
can refuse it before loading a ranker. On resume, :func:`read_written` reads the records already there:
their key (``id``, else input line number), the input line they came from and that line's fingerprint
(``line_hash``; ``None`` in outputs written before fingerprints existed). Records that gave no output line
(``label-pairs``: no pair) are remembered beside the output, in ``OUT.empty.jsonl`` (:func:`empty_path`: their key
fields, one JSON line each, read the same way), so that a rerun does not rank them again.

Example:
    >>> check_output_path("ranked.jsonl.gz", "sets.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: the output 'ranked.jsonl.gz' must be plain JSON lines (it is appended to on resume); gzip it afterwards
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_core.data.lines import DataFormatError, parse_json_line

logger = logging.getLogger(__name__)

Key = tuple[
    str, Any
]  # ("id", "q17"), ("line", 12), or ("line", ("b.jsonl", 12)) in a job over several inputs


@dataclass(frozen=True)
class Written:
    """A record already in the output: the input line it came from, and that line's fingerprint.

    Attributes:
        line: the input line number (``None`` when the record does not say).
        line_hash: the fingerprint of that line (``None`` in outputs written before fingerprints).
        file: the input it came from, in the output of a job over several inputs (else ``None``).
    """

    line: int | None
    line_hash: str | None
    file: str | None = None


def empty_path(out_path: str | Path) -> Path:
    """Where the records of ``out_path`` that gave no output line are remembered: ``OUT.empty.jsonl`` beside it."""
    p = Path(out_path)
    return p.with_name(p.name + ".empty.jsonl")


def check_writable(path: str | Path, what: str, example: str = "ranked.jsonl") -> Path:
    """``path`` as a ``Path`` if a file can be written there (its missing folders created), else a ``ValueError``.

    Args:
        path: the file to write.
        what: how the error names it (``"the output"``, ``"the errors file"``).
        example: a file name to suggest when ``path`` is a folder.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(
            f"{what} {str(p)!r} is a folder; pass a file path inside it, e.g. {str(p / example)!r}"
        )
    if p.exists():
        if not os.access(p, os.W_OK):
            raise ValueError(f"{what} {str(p)!r} is not writable (permission denied); choose another file")
        return p
    parent = p.parent
    while not parent.exists() and parent != parent.parent:  # the nearest folder that exists
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(p)!r} cannot be created: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what} {str(p)!r} cannot be created: the folder {str(parent)!r} is not writable "
            "(permission denied); choose another file"
        )
    return p


def check_output_path(out_path: str | Path, input_path: str | Path) -> Path:
    """``out_path`` as a ``Path`` if it can take the rankings of ``input_path``, else a ``ValueError`` saying why.

    The output must be plain JSON lines (it is appended to on resume), must not be the input, and must be a
    writable file (a missing folder is created when the run starts).
    """
    out = Path(out_path)
    if out.suffix == ".gz":
        raise ValueError(
            f"the output {str(out)!r} must be plain JSON lines (it is appended to on resume); gzip it afterwards"
        )
    if out.is_file() and out.resolve() == Path(input_path).resolve():
        raise ValueError(f"the output {str(out)!r} is the input file; write the rankings to another file")
    return check_writable(out, "the output")


def check_errors_path(errors_path: str | Path, input_path: str | Path, out_path: str | Path) -> Path:
    """``errors_path`` as a ``Path`` if the skipped lines can be written there (it is rewritten by each run)."""
    err = check_writable(errors_path, "the errors file", "errors.jsonl")
    for other, name in ((input_path, "input"), (out_path, "output")):
        if err.resolve() == Path(other).resolve():
            raise ValueError(
                f"the errors file {str(err)!r} is the {name} file, which it would overwrite; pass another file"
            )
    return err


def _key_of(obj: dict[str, Any]) -> Key | None:
    """The key of an output line (its line keyed with its ``file`` when it has one), or None when it has
    neither ``id`` nor ``line``."""
    if "id" in obj:
        return ("id", str(obj["id"]))
    if isinstance(obj.get("line"), int):
        file = obj.get("file")
        return ("line", (file, obj["line"]) if isinstance(file, str) else obj["line"])
    return None


def _parse(raw: bytes) -> tuple[Key, Written] | None:
    """The key of one output line and what it records (None when unreadable: a line edited by hand too, whatever
    it holds, never stops a resume)."""
    try:
        obj = parse_json_line(raw, "the output")
    except DataFormatError:
        return None
    if not isinstance(obj, dict):
        return None
    key = _key_of(obj)
    if key is None:
        return None
    line, digest, file = obj.get("line"), obj.get("line_hash"), obj.get("file")
    return key, Written(
        line if isinstance(line, int) else None,
        digest if isinstance(digest, str) else None,
        file if isinstance(file, str) else None,
    )


def read_written(out_path: str | Path, *, repair: bool = True) -> dict[Key, Written]:
    """The records already in an output file, by key (empty when there is no file).

    A last line without its newline is a write cut short by a crash: when it is unreadable it is cut
    off the file (``repair``), so that appending starts on a fresh line, and its record is ranked again;
    when it is a complete record, the newline is added. Any other unreadable line is logged and ignored.
    """
    path = Path(out_path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
    done: dict[Key, Written] = {}
    for n, raw in enumerate(lines[:-1], start=1):
        parsed = _parse(raw)
        if parsed is not None:
            done[parsed[0]] = parsed[1]
        elif raw.strip():
            logger.warning("%s:%d: unreadable output line ignored; its record will be ranked again", path, n)
    tail = lines[-1]
    if tail.strip():
        parsed = _parse(tail)
        if parsed is not None:
            done[parsed[0]] = parsed[1]
        else:
            logger.warning(
                "%s: dropping a partial last line (%d bytes) left by an interrupted run", path, len(tail)
            )
        if repair:
            with path.open("r+b") as f:
                if parsed is None:
                    f.truncate(len(data) - len(tail))
                else:
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
    return done


def read_done(out_path: str | Path, *, repair: bool = True) -> dict[Key, int | None]:
    """The records already in an output file: key -> input line number (see :func:`read_written`)."""
    return {key: w.line for key, w in read_written(out_path, repair=repair).items()}
