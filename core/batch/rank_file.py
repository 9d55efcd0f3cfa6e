"""Batch ranking of a JSON-lines file of candidate sets, resumable and tolerant of bad lines.

:func:`rank_file` reads the input line by line, ranks the candidate sets in chunks (every comparison
of a chunk batched together) and appends one JSON line per record to the output, flushed after each
chunk::

    {"id": "q17", "prompt": "...", "scores": [0.8, -0.3, ...], "ranks": [1, 3, ...], "best": 0,
     "best_text": "...", "best_model": "gpt-4"}

A record is keyed by its ``id`` (``idx`` for MixInstruct) when it has one, else by its line number
(``"line": 12`` instead of ``"id"``). On a second run over the same output, records whose key is
already there are skipped, so an interrupted run resumes where it stopped; a last output line cut
short by a crash is dropped and that record ranked again.

Input lines may be in any format of :mod:`blender_core.data`. A pair (``{prompt, a, b, label}``) is
ranked as a set of two candidates (``a`` is candidate 0, ``b`` candidate 1; its label is not used). A
line that is not valid JSON, matches no format, or has fewer than two candidates is reported as
``line N: <reason>`` and skipped; it never stops the run.

It needs only the :class:`~blender_core.ranking.Ranker` interface (``rank``), so any ranker works; batch
size, device and the like are loading options of the ranker (``load_ranker(spec, batch_size=...)``).

Example:
    >>> from blender_core.ranking import load_ranker
    >>> ranker = load_ranker("llm-blender/PairRM", batch_size=64)  # doctest: +SKIP
    >>> report = rank_file(ranker, "sets.jsonl", "ranked.jsonl")  # doctest: +SKIP
    >>> report.written, report.skipped, len(report.errors)  # doctest: +SKIP
    (998, 0, 2)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blender_core.base.validation import check_choice
from blender_core.data.records import CandidateSet, Pair, open_text, parse_record
from blender_core.ranking.interface import Ranker
from blender_core.ranking.strategies import STRATEGIES

logger = logging.getLogger(__name__)

Key = tuple[str, Any]  # ("id", "q17") or ("line", 12)


@dataclass(frozen=True)
class LineError:
    """An input line that was skipped: its number and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class BatchRankReport:
    """What a :func:`rank_file` run did.

    Attributes:
        written: records ranked and written by this run.
        skipped: records skipped because the output already had them (resume).
        errors: input lines skipped as malformed, in input order.
        pairs: how many of the written records were pairs ranked as two-candidate sets.
        elapsed_s: wall time of the run.
    """

    written: int
    skipped: int
    errors: tuple[LineError, ...]
    pairs: int
    elapsed_s: float


@dataclass(frozen=True)
class _Item:
    """One parsed input record waiting in a chunk."""

    key: Key
    line: int
    prompt: str
    texts: tuple[str, ...]
    models: tuple[str, ...] | None
    is_pair: bool


def _key_of(obj: dict[str, Any]) -> Key | None:
    """The key of an output line, or None when it has neither ``id`` nor ``line``."""
    if "id" in obj:
        return ("id", str(obj["id"]))
    if isinstance(obj.get("line"), int):
        return ("line", obj["line"])
    return None


def read_done(out_path: str | Path, *, repair: bool = True) -> dict[Key, int | None]:
    """The records already in an output file: key -> input line number (empty when there is no file).

    A last line without its newline is a write cut short by a crash: when it is unreadable it is cut
    off the file (``repair``), so that appending starts on a fresh line, and its record is ranked again;
    when it is a complete record, the newline is added. Any other unreadable line is logged and ignored.
    """
    path = Path(out_path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
    done: dict[Key, int | None] = {}
    for n, raw in enumerate(lines[:-1], start=1):
        key, line = _parse_key(raw)
        if key is not None:
            done[key] = line
        elif raw.strip():
            logger.warning("%s:%d: unreadable output line ignored; its record will be ranked again", path, n)
    tail = lines[-1]
    if tail.strip():
        key, line = _parse_key(tail)
        if key is not None:
            done[key] = line
        else:
            logger.warning(
                "%s: dropping a partial last line (%d bytes) left by an interrupted run", path, len(tail)
            )
        if repair:
            with path.open("r+b") as f:
                if key is None:
                    f.truncate(len(data) - len(tail))
                else:
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
    return done


def _parse_key(raw: bytes) -> tuple[Key | None, int | None]:
    """The key of one output line and the input line it came from (None, None when unreadable)."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    line = obj.get("line")
    return _key_of(obj), line if isinstance(line, int) else None


def _count_lines(path: str | Path) -> int:
    """Non-empty lines of the input, for the progress bar's total."""
    with open_text(path) as f:
        return sum(1 for line in f if line.strip())


def _iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for each non-empty line (numbers count every line, from 1)."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, line


def _parse_line(
    path: str | Path, lineno: int, line: str, score_key: str | None
) -> tuple[_Item | None, str | None]:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    try:
        rec = parse_record(obj, where=where, score_key=score_key)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # DataFormatError is a ValueError
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        return None, reason.removeprefix(f"{where}: ").removeprefix(f"{where} ")
    explicit_id = rec.id != where  # parse_record falls back to ``where`` when a line has no id
    key: Key = ("id", rec.id) if explicit_id else ("line", lineno)
    if isinstance(rec, Pair):
        return _Item(key, lineno, rec.prompt, (rec.a, rec.b), None, True), None
    assert isinstance(rec, CandidateSet)
    if len(rec.texts) < 2:
        return None, f"{len(rec.texts)} candidate(s); ranking needs at least 2"
    return _Item(key, lineno, rec.prompt, rec.texts, rec.models, False), None


def _record(item: _Item, scores: list[float], ranks: list[int], best: int) -> dict[str, Any]:
    out: dict[str, Any] = {item.key[0]: item.key[1]}
    if item.key[0] == "id":
        out["line"] = item.line
    out.update(prompt=item.prompt, scores=scores, ranks=ranks, best=best, best_text=item.texts[best])
    if item.models is not None:
        out["best_model"] = item.models[best]
    if item.is_pair:
        out["pair"] = True
    return out


def rank_file(
    ranker: Ranker,
    input_path: str | Path,
    out_path: str | Path,
    *,
    strategy: str = "full",
    chunk_size: int = 32,
    score_key: str | None = None,
    errors_path: str | Path | None = None,
    show_progress: bool = True,
    on_error: Callable[[LineError], None] | None = None,
) -> BatchRankReport:
    """Rank every candidate set of ``input_path`` and append the results to ``out_path`` (resumable).

    Args:
        ranker: any :class:`~blender_core.ranking.Ranker` (e.g. from ``load_ranker``; its batch size is a
            loading option).
        input_path: JSON lines (``.gz`` too) in any format of :mod:`blender_core.data`.
        out_path: the output JSON lines file (plain text); records already in it are skipped.
        strategy: ``full`` (n(n-1) comparisons, scores for every candidate), ``bubble``, ``knockout``
            (2(n-1), for the best one) or ``sort``.
        chunk_size: records ranked together (and written, then flushed, together).
        score_key: MixInstruct only: which score of the candidates' ``scores`` mapping the data uses
            (parsing needs it; ranking ignores the scores).
        errors_path: when given, each skipped line of this run is also written there as
            ``{"line", "error", "text"}`` (the raw line, to fix and rank again).
        show_progress: a tqdm bar over input records.
        on_error: called with each skipped line as it is found (e.g. to print it).

    Returns:
        A :class:`BatchRankReport`.

    Raises:
        FileNotFoundError: when the input does not exist.
        ValueError: on an unknown strategy, a gzipped output, or input and output being one file.
    """
    start = time.perf_counter()
    check_choice(strategy, STRATEGIES, "strategy")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    inp, out = Path(input_path), Path(out_path)
    if not inp.is_file():
        raise FileNotFoundError(f"input file {str(inp)!r} does not exist")
    if out.exists() and out.resolve() == inp.resolve():
        raise ValueError(f"the output {str(out)!r} is the input file; write the rankings to another file")
    if out.suffix == ".gz":
        raise ValueError(
            f"the output {str(out)!r} must be plain JSON lines (it is appended to on resume); gzip it afterwards"
        )
    done = read_done(out)
    if done:
        logger.info("%s already has %d records; they are skipped", out, len(done))
    out.parent.mkdir(parents=True, exist_ok=True)

    errors: list[LineError] = []
    seen: dict[Key, int] = {}
    chunk: list[tuple[_Item, str]] = []
    counts = {"written": 0, "skipped": 0, "pairs": 0}
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(out.open("a", encoding="utf-8"))
        # rewritten by each run: a run reports every bad line of the input again
        err_sink = stack.enter_context(Path(errors_path).open("w", encoding="utf-8")) if errors_path else None

        def skip(lineno: int, reason: str, raw: str) -> None:
            error = LineError(lineno, reason)
            errors.append(error)
            logger.info("skipped %s", error)
            if on_error is not None:
                on_error(error)
            if err_sink is not None:
                err_sink.write(
                    json.dumps(
                        {"line": lineno, "error": reason, "text": raw.rstrip("\n")}, ensure_ascii=False
                    )
                    + "\n"
                )
                err_sink.flush()

        def flush() -> None:
            results = _rank_chunk(ranker, [item for item, _ in chunk], strategy)
            for (item, raw), result in zip(chunk, results, strict=True):
                if isinstance(result, str):
                    skip(item.line, result, raw)
                    continue
                sink.write(json.dumps(_record(item, *result), ensure_ascii=False) + "\n")
                counts["written"] += 1
                counts["pairs"] += item.is_pair
            sink.flush()
            chunk.clear()

        total = _count_lines(inp) if show_progress else None
        bar = stack.enter_context(tqdm(total=total, desc="rank", unit="rec", disable=not show_progress))
        for lineno, raw in _iter_lines(inp):
            bar.update(1)
            item, reason = _parse_line(inp, lineno, raw, score_key)
            if item is None:
                skip(lineno, reason or "unreadable", raw)
            elif item.key in seen or done.get(item.key) not in (None, lineno):
                first = seen.get(item.key) or done[item.key]
                skip(lineno, f"{item.key[0]} {item.key[1]!r} already used by line {first}", raw)
            elif item.key in done:
                counts["skipped"] += 1
            else:
                seen[item.key] = lineno
                chunk.append((item, raw))
                if len(chunk) >= chunk_size:
                    flush()
        if chunk:
            flush()
    return BatchRankReport(
        counts["written"],
        counts["skipped"],
        tuple(sorted(errors, key=lambda e: e.line)),
        counts["pairs"],
        time.perf_counter() - start,
    )


def _rank_chunk(ranker: Ranker, items: list[_Item], strategy: str) -> list[tuple[list[float], list[int], int] | str]:
    """Rank a chunk in one call; when that fails, rank its records one by one so only bad ones are lost."""
    try:
        rankings = ranker.rank([it.prompt for it in items], [list(it.texts) for it in items], strategy=strategy)
    except (ValueError, TypeError, RuntimeError) as exc:
        if len(items) == 1:
            return [f"ranking failed: {exc}"]
        logger.warning("ranking a chunk of %d records failed (%s); ranking them one by one", len(items), exc)
        return [r for it in items for r in _rank_chunk(ranker, [it], strategy)]
    return [([float(s) for s in r.scores], [int(k) for k in r.ranks], int(r.best)) for r in rankings]
