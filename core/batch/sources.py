"""The inputs of a batch job, read as numbered lines of bytes: JSON lines (plain or ``.gz``) and Parquet.

Every engine reads its input through :class:`FileInput` (or another :class:`Input`, such as the rows of a
Ray Dataset), one ``(line number, bytes)`` at a time, so that a bad line, a cut file and a resume key mean
the same thing whatever the format:

- JSON lines: the file's lines (:func:`~blender_core.data.lines.iter_raw_lines`), numbered from 1, blank
  lines counted; a cut or corrupt ``.gz`` yields every complete line, then raises
  :class:`~blender_core.data.lines.DataReadError`.
- Parquet (``.parquet`` / ``.pq``): one record per row, numbered from 1 (its "line"), given to the parser as
  the row's JSON; a null value is a missing field (a Parquet file written from records of several
  shapes has every column on every row). A file that cannot be read past some row raises
  ``DataReadError`` naming the last row read. Needs ``pyarrow`` (``pip install "blender-llm[ray]"``).
- A ``ray.data.Dataset`` (:class:`DatasetInput`): row ``n``, in the Dataset's order, is line ``n``, read as a
  Parquet row is. Ray itself is not imported here: the Dataset brings it.

:func:`as_inputs` turns what a job is given (a path, an ``Input``, a Dataset, or a list of them) into its inputs.

Example:
    >>> row_to_line({"prompt": "2+2?", "candidates": ["4", "5"], "id": None})
    b'{"prompt":"2+2?","candidates":["4","5"]}'
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from blender_core.data.lines import MAX_LINE_BYTES, DataReadError, LongLine, iter_raw_lines

PARQUET_SUFFIXES = (".parquet", ".pq")
_ROWS_PER_READ = 1024  # rows decoded from Parquet at a time: small enough to keep memory flat


class Input(Protocol):
    """One input of a batch job: a name for messages (and for the output's ``file`` field when a job reads
    several) and its numbered lines."""

    @property
    def name(self) -> str:
        """How messages name it (and the output's ``file`` field, when a job reads several inputs)."""
        ...

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """``(line number, bytes)`` for every line, blank ones too; ``DataReadError`` where it cannot go on."""
        ...

    def count(self) -> int | None:
        """How many records it holds, for a progress bar (None: unknown without reading it all)."""
        ...


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` names a Parquet file (by its suffix)."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def _plain(value: Any) -> Any:
    """A value JSON can write: numpy arrays and scalars (as Ray Data returns them) as Python ones."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def row_to_line(row: Mapping[str, Any], max_bytes: int = MAX_LINE_BYTES) -> bytes:
    """One table row as the JSON line the parser reads; a null value is left out (a missing field). A row longer
    than ``max_bytes`` as JSON is a :class:`~blender_core.data.lines.LongLine`, as a line of a file would be (an
    Arrow row is in memory already: the limit keeps the rule the same for every format)."""
    obj = {str(k): v for k, v in row.items() if v is not None}
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_plain)
    line = text.encode("utf-8", "backslashreplace")  # a lone surrogate stays its escape, for the parser to report
    return line if len(line) <= max_bytes else LongLine(line, len(line), max_bytes)


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            'reading Parquet needs pyarrow, which is not installed: pip install "blender-llm[ray]"'
        ) from exc
    return pq


def iter_parquet_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(row number, row as JSON bytes)`` for every row of a Parquet file (see the module docstring).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ImportError: when pyarrow is not installed (naming the extra to install).
        DataReadError: when the file cannot be read past some row, after every row before it was yielded.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    pq = _pyarrow_parquet()
    row = 0
    try:
        reader = pq.ParquetFile(p)
        for batch in reader.iter_batches(batch_size=_ROWS_PER_READ):
            for record in batch.to_pylist():
                row += 1
                yield row, row_to_line(record)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataReadError(
            path, row, f"the Parquet file is corrupt or cut short ({type(exc).__name__}: {exc})"
        ) from exc


@dataclass(frozen=True)
class FileInput:
    """An input file: JSON lines (``.gz`` too) or Parquet, chosen by its suffix.

    Attributes:
        path: the file.
        name: how messages (and the output's ``file`` field, when a job reads several inputs) name it;
            the path as given.
    """

    path: Path
    name: str

    @classmethod
    def of(cls, path: str | Path) -> FileInput:
        """The input for ``path``, named as given."""
        return cls(Path(path), str(path))

    def lines(self) -> Iterator[tuple[int, bytes]]:
        if is_parquet(self.path):
            return iter_parquet_lines(self.path)
        return iter_raw_lines(self.path)

    def count(self) -> int | None:
        if is_parquet(self.path):
            try:
                return int(_pyarrow_parquet().ParquetFile(self.path).metadata.num_rows)
            except (OSError, ValueError):
                return None
        n = 0
        with contextlib.suppress(DataReadError):
            for _, raw in iter_raw_lines(self.path):
                n += bool(raw.strip())
        return n


def _same(batch: Any) -> Any:
    """The identity on a batch (a derived Dataset, whose settings may be changed without touching the caller's)."""
    return batch


@dataclass(frozen=True)
class DatasetInput:
    """The rows of a ``ray.data.Dataset`` as an input: row ``n`` (from 1, in the Dataset's order) is line ``n``,
    given to the parser as its JSON (a null is a missing field, as for Parquet)."""

    dataset: Any
    name: str = "dataset"

    def lines(self) -> Iterator[tuple[int, bytes]]:
        view = self.dataset.map_batches(_same, batch_format="pyarrow")
        view.context.execution_options.preserve_order = True  # row numbers must be the same every run
        view.context.enable_progress_bars = False
        for n, row in enumerate(view.iter_rows(), start=1):
            yield n, row_to_line(row)

    def count(self) -> int | None:
        return None


def as_inputs(source: Any) -> list[Input]:
    """The inputs of a job: a path, an :class:`Input`, a ``ray.data.Dataset``, or a list of them.

    Raises:
        TypeError: for anything else.
        ValueError: for no input, or an input given twice (inputs are told apart by name).
    """
    one = isinstance(source, (str, Path)) or hasattr(source, "lines") or hasattr(source, "map_batches")
    many: Iterable[Any] = [source] if one or not isinstance(source, Iterable) else source
    inputs: list[Input] = []
    datasets = 0
    for s in many:
        if isinstance(s, (str, Path)):
            inputs.append(FileInput.of(s))
        elif hasattr(s, "lines") and hasattr(s, "name"):
            inputs.append(s)
        elif hasattr(s, "map_batches") and hasattr(s, "iter_rows"):
            datasets += 1
            inputs.append(DatasetInput(s, "dataset" if datasets == 1 else f"dataset{datasets}"))
        else:
            raise TypeError(
                f"an input must be a path, a ray.data.Dataset or a list of them; got {type(s).__name__}"
            )
    if not inputs:
        raise ValueError("no input given; pass at least one file")
    names = [s.name for s in inputs]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"the input {repeated[0]!r} is given more than once; pass each input once")
    return inputs
