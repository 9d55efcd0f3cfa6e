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

Input lines may be in any format of :mod:`blender_core.data`; a Parquet input (``.parquet``) is read row by
row, a row standing for a line (:mod:`blender_core.batch.sources`). A pair (``{prompt, a, b, label}``) is
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

from tqdm.auto import tqdm

from blender_core.base.validation import check_choice
from blender_core.batch.output import check_errors_path, check_output_path, read_done
from blender_core.batch.plan import (
    Item,
    LineError,
    Scan,
    error_line,
    rank_chunk,
    ranked_record,
    read_output,
    warn_changed,
)
from blender_core.batch.resume import InputChangedError, check_unchanged
from blender_core.batch.sources import FileInput
from blender_core.data.lines import DataReadError
from blender_core.ranking.interface import Ranker
from blender_core.ranking.strategies import STRATEGIES

__all__ = [
    "BatchRankReport",
    "InputChangedError",
    "LineError",
    "PartialInputError",
    "check_chunk_size",
    "rank_file",
    "read_done",
]

logger = logging.getLogger(__name__)


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


def check_chunk_size(chunk_size: int, name: str = "chunk_size") -> None:
    """A ``ValueError`` unless ``chunk_size`` is a positive int."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{name} must be a positive int, got {chunk_size!r}")


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
        input_path: JSON lines (``.gz`` too) in any format of :mod:`blender_core.data`, or Parquet.
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
        ImportError: for a Parquet input without pyarrow installed.
        ValueError: on an unknown strategy or chunk size, or an output (or errors file) that cannot be
            written: a folder, the input itself, a gzipped output, no permission.
        InputChangedError: when the output holds records of another version of the input (nothing is
            ranked or written).
        PartialInputError: when the input cannot be read to its end, after ranking and writing every
            complete line before the damage.
    """
    start = time.perf_counter()
    check_choice(strategy, STRATEGIES, "strategy")
    check_chunk_size(chunk_size)
    inp = Path(input_path)
    if not inp.is_file():
        raise FileNotFoundError(f"input file {str(inp)!r} does not exist")
    out = check_output_path(out_path, inp)
    if errors_path is not None:
        check_errors_path(errors_path, inp, out)
    source = FileInput.of(inp)
    written = read_output(out, several=False)
    check_unchanged([source], out, written)
    if written:
        logger.info("%s already has %d records; they are skipped", out, len(written))
    out.parent.mkdir(parents=True, exist_ok=True)

    errors: list[LineError] = []
    changed: list[int] = []
    chunk: list[tuple[Item, bytes]] = []
    counts = {"written": 0, "skipped": 0, "pairs": 0}
    scan = Scan([source], written, score_key)
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(out.open("a", encoding="utf-8"))
        # rewritten by each run: a run reports every bad line of the input again
        err_sink = stack.enter_context(Path(errors_path).open("w", encoding="utf-8")) if errors_path else None

        def skip(error: LineError, raw: bytes) -> None:
            errors.append(error)
            logger.info("skipped %s", error)
            if on_error is not None:
                on_error(error)
            if err_sink is not None:
                err_sink.write(error_line(error, raw))
                err_sink.flush()

        def flush() -> None:
            results = rank_chunk(ranker, [item for item, _ in chunk], strategy)
            for (item, raw), result in zip(chunk, results, strict=True):
                if isinstance(result, str):
                    skip(LineError(item.line, result), raw)
                    continue
                sink.write(json.dumps(ranked_record(item, *result), ensure_ascii=False) + "\n")
                counts["written"] += 1
                counts["pairs"] += item.is_pair
            sink.flush()
            chunk.clear()

        total = source.count() if show_progress else None
        bar = stack.enter_context(tqdm(total=total, desc="rank", unit="rec", disable=not show_progress))
        for entry in scan:
            bar.update(1)
            if entry.error is not None:
                skip(entry.error, entry.raw)
            elif entry.done:
                counts["skipped"] += 1
                if entry.changed:
                    changed.append(entry.line)
            else:
                assert entry.item is not None
                chunk.append((entry.item, entry.raw))
                if len(chunk) >= chunk_size:
                    flush()
        if chunk:
            flush()
    warn_changed(str(inp), out, changed)
    report = BatchRankReport(
        counts["written"],
        counts["skipped"],
        tuple(sorted(errors, key=lambda e: e.line)),
        counts["pairs"],
        time.perf_counter() - start,
        tuple(changed),
    )
    if scan.cuts:
        raise PartialInputError(scan.cuts[0], out, report)
    return report
