"""Resuming into an output written earlier: is the input still the one that output was ranked from?

Each output record stores ``line_hash``, a short fingerprint of the bytes of its input line
(:func:`line_fingerprint`). A record without an ``id`` is keyed by its line number, so on resume the
input's line at that number must still be the line it was ranked from: :func:`check_unchanged`
compares them before anything is ranked, and a difference (a line inserted, deleted or edited above it)
is an :class:`InputChangedError`, since matching by number would rank some records twice and skip
others. Records with an ``id`` are matched by id wherever their line now stands; the engine keeps the
ranking of one whose text changed and says so (see :mod:`blender_core.batch.rank_file`).

Outputs written before fingerprints existed still resume (matched as before); a warning says once that
a changed input cannot be detected for them.

Example:
    >>> line_fingerprint(b'{"prompt": "2+2?", "candidates": ["4", "5"]}')
    'ce5003e391517fba'
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from blender_core.batch.output import Key, Written
from blender_core.batch.sources import Input
from blender_core.data.lines import DataReadError

logger = logging.getLogger(__name__)


class InputChangedError(ValueError):
    """The input is not the one a resumed output was ranked from; nothing was ranked or written."""


def line_fingerprint(raw: bytes) -> str:
    """A 16-hex-digit BLAKE2b digest of one input line's bytes (its line ending left out)."""
    return hashlib.blake2b(raw.rstrip(b"\r\n"), digest_size=8).hexdigest()


def _changed(name: str, out: Path, what: str) -> InputChangedError:
    return InputChangedError(
        f"{name}: {what}: the input changed since {out} was written (lines inserted, deleted or edited), so "
        "records matched by line number no longer fit its lines. Nothing was ranked or written. Restore the "
        "input as it was, or rank it into a new output file (--out); records with an 'id' field resume "
        "across such edits"
    )


def check_unchanged(inputs: Sequence[Input], out: str | Path, written: Mapping[Key, Written]) -> None:
    """Check every record of ``written`` keyed by line number against its input's line at that number.

    For every input format, and for several inputs (a key then names its input). Reads each input only up to
    its last such line; an input that cannot be read that far stops its check there (the run reports it when
    it gets there).

    Raises:
        InputChangedError: at the first line whose fingerprint differs from the one stored with its record,
            or when an input now ends before a line that has a record.
    """
    out = Path(out)
    unchecked = sum(1 for w in written.values() if w.line_hash is None)
    if unchecked:
        logger.warning(
            "%s: %d of its %d records have no line fingerprint (written by an older version): they resume "
            "as before, but a changed input cannot be detected for them",
            out,
            unchecked,
            len(written),
        )
    several = len(inputs) > 1
    for source in inputs:
        expected: dict[int, str] = {}
        for key, w in written.items():
            if key[0] != "line" or w.line is None or w.line_hash is None:
                continue
            if not several or (isinstance(key[1], tuple) and key[1][0] == source.name):
                expected[w.line] = w.line_hash
        if not expected:
            continue
        last, lineno = max(expected), 0
        try:
            for lineno, raw in source.lines():
                want = expected.get(lineno)
                if want is not None and line_fingerprint(raw) != want:
                    raise _changed(
                        source.name,
                        out,
                        f"line {lineno} is not the line that {out} ranked as line {lineno} "
                        f"(fingerprint {line_fingerprint(raw)}; the record says {want})",
                    )
                if lineno >= last:
                    break
            else:
                raise _changed(
                    source.name,
                    out,
                    f"the input ends at line {lineno}, but {out} holds a record of line {last}",
                )
        except DataReadError:
            continue
