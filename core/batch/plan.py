"""What the batch engine does before ranking: read each input line, parse it, key it, and sort it into a
bad line, a record already in the output (resume), or a record to rank.

The engine (:mod:`blender_core.batch.sharded`) reads through :class:`Scan`, and the executors parse a shard's
lines again with :func:`parse_line` where they rank it (in this process or on a Ray actor), so a bad line is
reported with the same number and reason, a repeated key is caught the same way, and a resumed output is
matched the same way, whichever executor runs.

**Keys.** A record is keyed by its ``id`` (``idx`` for MixInstruct) when it has one, else by its line number.
When a job reads several inputs, ids stay global (an id is an identity: the same id in two files is a repeat,
reported and skipped like one in the same file), while a record without one is keyed by its input's name and
line number; every output record then also says which input it came from (``"file"``, the name as given).
With one input there is no ``file`` field: the output is the single-file output.

Example:
    >>> item, _ = parse_line("sets.jsonl", 3, b'{"prompt": "2+2?", "candidates": ["4", "5"]}', None)
    >>> item.key, record_head(item)
    (('line', 3), {'line': 3, 'line_hash': 'ce5003e391517fba'})
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_core.batch.output import Key, Written, empty_path, read_written
from blender_core.batch.resume import line_fingerprint
from blender_core.batch.sources import Input
from blender_core.data.lines import DataFormatError, DataReadError, LongLine, parse_json_line
from blender_core.data.records import CandidateSet, Pair, parse_record
from blender_core.ranking.interface import Ranker

logger = logging.getLogger(__name__)

#: one ranked record: its scores, ranks and best candidate; or, as a str, why ranking it failed
Ranked = tuple[list[float], list[int], int, bool] | str


@dataclass(frozen=True)
class LineError:
    """An input line that was skipped: its number, why, and (when a job reads several inputs) its input."""

    line: int
    reason: str
    file: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Item:
    """One parsed input record, ready to rank.

    Attributes:
        key: ``("id", id)``, or ``("line", n)`` (``("line", (file, n))`` when a job reads several inputs).
        line: its line (Parquet: row) number in its input.
        line_hash: the fingerprint of that line (:func:`~blender_core.batch.resume.line_fingerprint`).
        prompt: the source text given to the ranker.
        texts: the candidates (a pair record: ``a``, ``b``).
        models: the candidates' model names, when the record has them.
        is_pair: whether the record was a pair ranked as two candidates.
        file: its input's name when a job reads several inputs, else None.
    """

    key: Key
    line: int
    line_hash: str
    prompt: str
    texts: tuple[str, ...]
    models: tuple[str, ...] | None
    is_pair: bool
    file: str | None = None


def parse_line(
    name: str, lineno: int, raw: bytes, score_key: str | None, *, file: str | None = None
) -> tuple[Item | None, str | None]:
    """One input line as an :class:`Item`, or why it cannot be ranked (``(None, reason)``).

    ``name`` is how messages name the input; ``file`` is set when a job reads several inputs (it becomes
    part of a line-numbered key and of the output record).
    """
    where = f"{name}:{lineno}"
    try:  # never a RecursionError, nor a lone surrogate that no output could be written with
        obj = parse_json_line(raw, where)
    except DataFormatError as exc:
        return None, str(exc).removeprefix(f"{where}: ")
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    try:
        rec = parse_record(obj, where=where, score_key=score_key)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # DataFormatError is a ValueError
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        return None, reason.removeprefix(f"{where}: ").removeprefix(f"{where} ")
    explicit_id = rec.id != where  # parse_record falls back to ``where`` when a line has no id
    key: Key = ("id", rec.id) if explicit_id else ("line", lineno if file is None else (file, lineno))
    digest = line_fingerprint(raw)
    if isinstance(rec, Pair):
        return Item(key, lineno, digest, rec.prompt, (rec.a, rec.b), None, True, file), None
    assert isinstance(rec, CandidateSet)
    if len(rec.texts) < 2:
        return None, f"{len(rec.texts)} candidate(s); ranking needs at least 2"
    return Item(key, lineno, digest, rec.prompt, rec.texts, rec.models, False, file), None


def record_head(item: Item) -> dict[str, Any]:
    """The fields that say which input line an output record came from: ``id`` (when it has one),
    ``file`` (when a job reads several inputs), ``line`` and ``line_hash``."""
    head: dict[str, Any] = {}
    if item.key[0] == "id":
        head["id"] = item.key[1]
    if item.file is not None:
        head["file"] = item.file
    head["line"] = item.line
    head["line_hash"] = item.line_hash
    return head


def ranked_record(
    item: Item, scores: list[float], ranks: list[int], best: int, scores_order: bool = True
) -> dict[str, Any]:
    """The output line of ``rank``: where the record came from, its scores, ranks and best candidate; a
    tournament's line says ``"scores_order": false`` (its scores are match margins: read ``ranks``)."""
    out = record_head(item)
    out.update(prompt=item.prompt, scores=scores, ranks=ranks, best=best, best_text=item.texts[best])
    if not scores_order:
        out["scores_order"] = False
    if item.models is not None:
        out["best_model"] = item.models[best]
    if item.is_pair:
        out["pair"] = True
    return out


def rank_chunk(ranker: Ranker, items: Sequence[Item], strategy: str) -> list[Ranked]:
    """Rank a chunk in one call (the ranker batches, and sorts by length, every comparison of the chunk);
    when that fails, rank its records one by one so only bad ones are lost."""
    try:
        rankings = ranker.rank(
            [it.prompt for it in items], [list(it.texts) for it in items], strategy=strategy
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        if len(items) == 1:
            return [f"ranking failed: {exc}"]
        logger.warning("ranking a chunk of %d records failed (%s); ranking them one by one", len(items), exc)
        return [r for it in items for r in rank_chunk(ranker, [it], strategy)]
    return [
        ([float(s) for s in r.scores], [int(k) for k in r.ranks], int(r.best), bool(r.scores_order))
        for r in rankings
    ]


# ---------------------------------------------------------------------------- the output already written


def read_output(out: str | Path, *, several: bool) -> dict[Key, Written]:
    """The records already in ``out`` by key, and those it remembers as giving no row (``OUT.empty.jsonl``), as
    :func:`~blender_core.batch.output.read_written` reads them (a partial last line is repaired); a record of a
    job over several inputs is keyed by file and line.

    Raises:
        ValueError: when ``out`` holds records of a job over several inputs (with a ``file`` field) and this
            job reads one: their line numbers are not this input's.
    """
    written = {**read_written(empty_path(out)), **read_written(out)}
    if not several and any(w.file is not None for w in written.values()):
        raise ValueError(
            f"the output {str(out)!r} holds records of a job over several inputs (they have a 'file' field); "
            "resume it with the same inputs, or write this one to another output file"
        )
    return written


# ---------------------------------------------------------------------------- sorting the input lines


@dataclass(frozen=True)
class Entry:
    """One non-blank input line, sorted.

    Attributes:
        index: which input it is in (the position in the job's list of inputs).
        line: its number in that input.
        raw: its bytes.
        item: the parsed record (None for a bad line).
        error: why it is skipped, for a bad line or a repeated key (then ``item`` may be set).
        done: its key is already in the output (resume): nothing to do.
        changed: done, but its line changed since it was ranked (only a record with an id gets here).
    """

    index: int
    line: int
    raw: bytes
    item: Item | None
    error: LineError | None = None
    done: bool = False
    changed: bool = False

    @property
    def todo(self) -> bool:
        """Whether the record still has to be ranked."""
        return self.item is not None and self.error is None and not self.done


class Scan:
    """Every non-blank line of ``inputs``, in order, as an :class:`Entry`.

    Iterating reads the inputs one after the other. An input that cannot be read to its end (a cut or
    corrupt ``.gz`` or Parquet file) ends where it stops being readable; the scan goes on with the next
    input and keeps the error in :attr:`cuts`, for the caller to raise once everything readable was handled.
    """

    def __init__(
        self, inputs: Sequence[Input], written: Mapping[Key, Written], score_key: str | None
    ) -> None:
        self.inputs = list(inputs)
        self.written = written
        self.score_key = score_key
        self.cuts: list[DataReadError] = []

    def __iter__(self) -> Iterator[Entry]:
        several = len(self.inputs) > 1
        seen: dict[Key, tuple[int, int]] = {}  # key -> (input index, line) of its first line in this run
        for index, source in enumerate(self.inputs):
            file = source.name if several else None
            try:
                for lineno, raw in source.lines():
                    if not raw.strip() and not isinstance(raw, LongLine):
                        continue
                    item, reason = parse_line(source.name, lineno, raw, self.score_key, file=file)
                    if item is None:
                        yield Entry(
                            index, lineno, raw, None, LineError(lineno, reason or "unreadable", file or "")
                        )
                    elif item.key in seen:
                        first_index, first_line = seen[item.key]
                        where = f"line {first_line}"
                        if first_index != index:
                            where += f" of {self.inputs[first_index].name}"
                        reason = f"{item.key[0]} {item.key[1]!r} already used by {where}"
                        yield Entry(index, lineno, raw, item, LineError(lineno, reason, file or ""))
                    else:
                        seen[item.key] = (index, lineno)
                        done = self.written.get(item.key)
                        if done is None:
                            yield Entry(index, lineno, raw, item)
                        else:  # resume: ranked by an earlier run; a line key's text was checked before
                            changed = done.line_hash not in (None, item.line_hash)
                            yield Entry(index, lineno, raw, item, done=True, changed=changed)
            except DataReadError as exc:
                self.cuts.append(exc)


def warn_changed(name: str, out: Path, changed: Sequence[int]) -> None:
    """The warning for records with an id whose line changed since ``out`` ranked them (kept as they were)."""
    if changed:
        logger.warning(
            "%s: %d records with an id changed since %s ranked them (first: line %d); their earlier rankings "
            "are kept. To rank the new text, delete those records from %s or rank into a new output file",
            name,
            len(changed),
            out,
            changed[0],
            out,
        )


def error_line(error: LineError, raw: bytes) -> str:
    """One line of an errors file: the skipped line's number, reason and text (``file`` too when set)."""
    obj: dict[str, Any] = {"file": error.file} if error.file else {}
    obj.update(line=error.line, error=error.reason, text=raw.decode("utf-8", "backslashreplace"))
    return json.dumps(obj, ensure_ascii=False) + "\n"
