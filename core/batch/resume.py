"""Resuming into an output written earlier: is the input still the one that output was ranked from?

Each output record stores ``line_hash``, a short fingerprint of the bytes of its input line
(:func:`line_fingerprint`). A record without an ``id`` is keyed by its line number, so on resume the
input's line at that number must still be the line it was ranked from: :func:`check_input_unchanged`
compares them before anything is ranked, and a difference (a line inserted, deleted or edited above it)
is an :class:`InputChangedError`, since matching by number would rank some records twice and skip
others. Records with an ``id`` are matched by id wherever their line now stands; ``rank_file`` keeps the
ranking of one whose text changed and says so (see its docstring).

Outputs written before fingerprints existed still resume (matched as before); a warning says once that
a changed input cannot be detected for them.

Example:
    >>> line_fingerprint(b'{"prompt": "2+2?", "candidates": ["4", "5"]}')
    'ce5003e391517fba'
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from blender_core.batch.output import Key, Written
from blender_core.data.lines import DataReadError, iter_raw_lines

logger = logging.getLogger(__name__)


class InputChangedError(ValueError):
    """The input is not the one a resumed output was ranked from; nothing was ranked or written."""


def line_fingerprint(raw: bytes) -> str:
    """A 16-hex-digit BLAKE2b digest of one input line's bytes (its line ending left out)."""
    return hashlib.blake2b(raw.rstrip(b"\r\n"), digest_size=8).hexdigest()


def _changed(inp: Path, out: Path, what: str) -> InputChangedError:
    return InputChangedError(
        f"{inp}: {what}: the input changed since {out} was written (lines inserted, deleted or edited), so "
        "records matched by line number no longer fit its lines. Nothing was ranked or written. Restore the "
        "input as it was, or rank it into a new output file (--out); records with an 'id' field resume "
        "across such edits"
    )


def check_input_unchanged(
    input_path: str | Path, out_path: str | Path, written: Mapping[Key, Written]
) -> None:
    """Check every record of ``written`` keyed by line number against the input's line at that number.

    Reads the input only up to the last such line. A cut or corrupt input stops the check where it stops
    being readable (the run reports it when it gets there).

    Raises:
        InputChangedError: at the first line whose fingerprint differs from the one stored with its record,
            or when the input now ends before a line that has a record.
    """
    inp, out = Path(input_path), Path(out_path)
    unchecked = sum(1 for w in written.values() if w.line_hash is None)
    if unchecked:
        logger.warning(
            "%s: %d of its %d records have no line fingerprint (written by an older version): they resume "
            "as before, but a changed input cannot be detected for them",
            out,
            unchecked,
            len(written),
        )
    expected = {
        w.line: w.line_hash
        for key, w in written.items()
        if key[0] == "line" and w.line is not None and w.line_hash is not None
    }
    if not expected:
        return
    last, lineno = max(expected), 0
    try:
        for lineno, raw in iter_raw_lines(inp):
            want = expected.get(lineno)
            if want is not None and line_fingerprint(raw) != want:
                raise _changed(
                    inp,
                    out,
                    f"line {lineno} is not the line that {out} ranked as line {lineno} "
                    f"(fingerprint {line_fingerprint(raw)}; the record says {want})",
                )
            if lineno >= last:
                return
    except DataReadError:
        return
    raise _changed(inp, out, f"the input ends at line {lineno}, but {out} holds a record of line {last}")
