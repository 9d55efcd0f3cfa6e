"""Batch ranking of a JSON-lines file of candidate sets, resumable and tolerant of bad lines.

:func:`rank_file` reads the input line by line, ranks the candidate sets in chunks (every comparison
of a chunk batched together) and appends one JSON line per record to the output, flushed after each
chunk::

    {"id": "q17", "line": 17, "line_hash": "9c1e0f4b2a7d5e13", "prompt": "...", "scores": [0.8, -0.3, ...],
     "ranks": [1, 3, ...], "best": 0, "best_text": "...", "best_model": "gpt-4"}

A record is keyed by its ``id`` (``idx`` for MixInstruct) when it has one, else by its line number
(``"line": 12`` instead of ``"id"``), and stores ``line_hash``, a fingerprint of its input line. On a
second run over the same output, records whose key is already there are skipped, so an interrupted run
resumes where it stopped; a last output line cut short by a crash is dropped and that record ranked
again. Resuming checks that the input is still the one the output was ranked from
(:mod:`blender_core.batch.resume`): a record keyed by line number whose line changed stops the run
before anything is ranked (:class:`~blender_core.batch.resume.InputChangedError`). A record with an id is
matched by id wherever its line now stands; when its text changed, its earlier ranking is kept, a
warning says so, and the report lists the line in ``changed``.

Input lines may be in any format of :mod:`blender_core.data`. A pair (``{prompt, a, b, label}``) is
ranked as a set of two candidates (``a`` is candidate 0, ``b`` candidate 1; its label is not used). A
line that is not UTF-8, not valid JSON, matches no format, or has fewer than two candidates is reported
as ``line N: <reason>`` and skipped; it never stops the run. Each line is decoded on its own, so a bad
byte spoils only its line. A ``.gz`` input that is cut short or corrupt has every complete line before
the damage ranked and written, then raises :class:`PartialInputError` naming the last line read; run
again on the complete file to rank the rest.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blender_core.base.validation import check_choice
from blender_core.batch.output import Key, check_errors_path, check_output_path, read_done, read_written
from blender_core.batch.resume import InputChangedError, check_input_unchanged, line_fingerprint
from blender_core.data.lines import DataFormatError, DataReadError, decode_line, iter_raw_lines
from blender_core.data.records import CandidateSet, Pair, parse_record
from blender_core.ranking.interface import Ranker
from blender_core.ranking.strategies import STRATEGIES

__all__ = [
    "BatchRankReport",
    "InputChangedError",
    "LineError",
    "PartialInputError",
    "rank_file",
    "read_done",
]

logger = logging.getLogger(__name__)


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
        changed: input lines of skipped records with an id whose line changed since it was ranked (their
            earlier ranking was kept).
    """

    written: int
    skipped: int
    errors: tuple[LineError, ...]
    pairs: int
    elapsed_s: float
    changed: tuple[int, ...] = ()


class PartialInputError(DataReadError):
    """The input could not be read to its end (a cut or corrupt ``.gz``); every complete line before the
    damage was ranked and written. ``report`` says what the run did; rerun on the complete file to resume."""

    def __init__(self, cause: DataReadError, out: Path, report: BatchRankReport) -> None:
        super().__init__(cause.path, cause.last_line, cause.reason)
        self.report = report
        done = (
            f"Lines 1-{cause.last_line} were ranked into {out}" if cause.last_line else "Nothing was ranked"
        )
        self.args = (
            f"{cause}. {done}; restore the complete file and run again with the same output to rank the rest",
        )


@dataclass(frozen=True)
class _Item:
    """One parsed input record waiting in a chunk."""

    key: Key
    line: int
    line_hash: str
    prompt: str
    texts: tuple[str, ...]
    models: tuple[str, ...] | None
    is_pair: bool


def _count_lines(path: str | Path) -> int:
    """Non-empty lines of the input, for the progress bar's total (those before any damage)."""
    n = 0
    with contextlib.suppress(DataReadError):
        for _, raw in iter_raw_lines(path):
            n += bool(raw.strip())
    return n


def _parse_line(
    path: str | Path, lineno: int, raw: bytes, score_key: str | None
) -> tuple[_Item | None, str | None]:
    where = f"{path}:{lineno}"
    try:
        line = decode_line(raw, where)
    except DataFormatError as exc:
        return None, str(exc).removeprefix(f"{where}: ")
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
    digest = line_fingerprint(raw)
    if isinstance(rec, Pair):
        return _Item(key, lineno, digest, rec.prompt, (rec.a, rec.b), None, True), None
    assert isinstance(rec, CandidateSet)
    if len(rec.texts) < 2:
        return None, f"{len(rec.texts)} candidate(s); ranking needs at least 2"
    return _Item(key, lineno, digest, rec.prompt, rec.texts, rec.models, False), None


def _record(item: _Item, scores: list[float], ranks: list[int], best: int) -> dict[str, Any]:
    out: dict[str, Any] = {item.key[0]: item.key[1]}
    if item.key[0] == "id":
        out["line"] = item.line
    out.update(
        line_hash=item.line_hash,
        prompt=item.prompt,
        scores=scores,
        ranks=ranks,
        best=best,
        best_text=item.texts[best],
    )
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
        out_path: the output JSON lines file (plain text); records already in it are skipped. A missing
            folder is created.
        strategy: ``full`` (n(n-1) comparisons, scores for every candidate), ``bubble``, ``knockout``
            (2(n-1), for the best one) or ``sort``.
        chunk_size: records ranked together (and written, then flushed, together).
        score_key: MixInstruct only: which score of the candidates' ``scores`` mapping the data uses
            (parsing needs it; ranking ignores the scores).
        errors_path: when given, each skipped line of this run is also written there as
            ``{"line", "error", "text"}`` (the raw line, to fix and rank again; bytes that are not UTF-8
            appear as ``\\xNN``).
        show_progress: a tqdm bar over input records.
        on_error: called with each skipped line as it is found (e.g. to print it).

    Returns:
        A :class:`BatchRankReport`.

    Raises:
        FileNotFoundError: when the input does not exist.
        ValueError: on an unknown strategy or chunk size, or an output (or errors file) that cannot be
            written: a folder, the input itself, a gzipped output, no permission.
        InputChangedError: when the output holds records of another version of the input (nothing is
            ranked or written).
        PartialInputError: when the input cannot be read to its end, after ranking and writing every
            complete line before the damage.
    """
    start = time.perf_counter()
    check_choice(strategy, STRATEGIES, "strategy")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    inp = Path(input_path)
    if not inp.is_file():
        raise FileNotFoundError(f"input file {str(inp)!r} does not exist")
    out = check_output_path(out_path, inp)
    if errors_path is not None:
        check_errors_path(errors_path, inp, out)
    written = read_written(out)
    check_input_unchanged(inp, out, written)
    if written:
        logger.info("%s already has %d records; they are skipped", out, len(written))
    out.parent.mkdir(parents=True, exist_ok=True)

    errors: list[LineError] = []
    seen: dict[Key, int] = {}
    changed: list[int] = []
    chunk: list[tuple[_Item, bytes]] = []
    counts = {"written": 0, "skipped": 0, "pairs": 0}
    cut: DataReadError | None = None
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(out.open("a", encoding="utf-8"))
        # rewritten by each run: a run reports every bad line of the input again
        err_sink = stack.enter_context(Path(errors_path).open("w", encoding="utf-8")) if errors_path else None

        def skip(lineno: int, reason: str, raw: bytes) -> None:
            error = LineError(lineno, reason)
            errors.append(error)
            logger.info("skipped %s", error)
            if on_error is not None:
                on_error(error)
            if err_sink is not None:
                text = raw.decode("utf-8", "backslashreplace")
                err_sink.write(
                    json.dumps({"line": lineno, "error": reason, "text": text}, ensure_ascii=False) + "\n"
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
        try:
            for lineno, raw in iter_raw_lines(inp):
                if not raw.strip():
                    continue
                bar.update(1)
                item, reason = _parse_line(inp, lineno, raw, score_key)
                if item is None:
                    skip(lineno, reason or "unreadable", raw)
                elif item.key in seen:
                    skip(lineno, f"{item.key[0]} {item.key[1]!r} already used by line {seen[item.key]}", raw)
                elif item.key in written:  # resume: ranked by an earlier run
                    seen[item.key] = lineno
                    counts["skipped"] += 1
                    if written[item.key].line_hash not in (None, item.line_hash):
                        changed.append(lineno)  # only an id'd record gets here: line keys were checked
                else:
                    seen[item.key] = lineno
                    chunk.append((item, raw))
                    if len(chunk) >= chunk_size:
                        flush()
        except DataReadError as exc:
            cut = exc
        if chunk:
            flush()
    if changed:
        logger.warning(
            "%s: %d records with an id changed since %s ranked them (first: line %d); their earlier rankings "
            "are kept. To rank the new text, delete those records from %s or rank into a new output file",
            inp,
            len(changed),
            out,
            changed[0],
            out,
        )
    report = BatchRankReport(
        counts["written"],
        counts["skipped"],
        tuple(sorted(errors, key=lambda e: e.line)),
        counts["pairs"],
        time.perf_counter() - start,
        tuple(changed),
    )
    if cut is not None:
        raise PartialInputError(cut, out, report)
    return report


def _rank_chunk(
    ranker: Ranker, items: list[_Item], strategy: str
) -> list[tuple[list[float], list[int], int] | str]:
    """Rank a chunk in one call; when that fails, rank its records one by one so only bad ones are lost."""
    try:
        rankings = ranker.rank(
            [it.prompt for it in items], [list(it.texts) for it in items], strategy=strategy
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        if len(items) == 1:
            return [f"ranking failed: {exc}"]
        logger.warning("ranking a chunk of %d records failed (%s); ranking them one by one", len(items), exc)
        return [r for it in items for r in _rank_chunk(ranker, [it], strategy)]
    return [([float(s) for s in r.scores], [int(k) for k in r.ranks], int(r.best)) for r in rankings]
