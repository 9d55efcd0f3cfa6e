"""The settings an output was written with, recorded beside it in ``OUT.settings.json``.

Every output of a batch job (``rank`` and ``label-pairs``, in this process or on Ray) records the settings that
produce its rows: the command (``job``); the ranker: its spec (``ranker``), the ``revision`` it was loaded at when
one was given (None: a folder, a built-in, an object, or a hub id at its default branch), and every other loading
option that changes scores (``ranker_options``: ``dtype``, a reward model's truncation ``max_length``…; PairRM's
truncation limits are part of its checkpoint, pinned by the spec and revision); the ``strategy`` (the tournaments'
scores are not an order); MixInstruct's ``score_key``; and for ``label-pairs`` the pair policy (``pairs``) and
``margin``. What changes no row is not recorded: the engine, device, batch, chunk and shard sizes, threads.

Why a file beside the output: the output must stay the rows a job writes, and nothing else, so that TRL, pandas or
``jq`` read it unchanged; and ``OUT.parts/`` goes when a run ends, while the record must stay as long as the output.
It is written atomically (a temporary file renamed over it) under the output's lock, once every check has passed and
before the first row.

A run whose settings differ from those an output records is refused before anything is loaded, ranked or written
(:class:`SettingsMismatchError`, naming each setting that differs, with the recorded and the new value): start over
(``overwrite=True``, the CLI's ``--overwrite``) or write to another output. An output written before outputs recorded
their settings (no ``OUT.settings.json``) still resumes: its settings are unknown, a warning says so once, and the
current ones are recorded from then on.

Example:
    >>> row_options({"device": "cuda", "batch_size": 64, "revision": "v1.2", "dtype": "bfloat16"})
    (('dtype', 'bfloat16'), ('revision', 'v1.2'))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blender_core.batch.output import empty_path
from blender_core.batch.parts import replace_file

logger = logging.getLogger(__name__)

#: the version of the record's layout, written with it
FORMAT = 1

#: loading options that change no score: where and how fast the ranker runs, and where it is fetched from
RUNTIME_OPTIONS = frozenset({"device", "batch_size", "cache_dir", "local_files_only", "token", "cache_size"})


class SettingsMismatchError(ValueError):
    """The output was written with other settings than this run's; nothing was loaded, ranked or written.

    Attributes:
        out: the output.
        path: its settings file.
        differences: (setting, recorded value, this run's value) for each setting that differs.
    """

    def __init__(self, out: Path, differences: list[tuple[str, Any, Any]]) -> None:
        self.out = out
        self.path = settings_path(out)
        self.differences = tuple(differences)
        said = ", ".join(f"{name} {show(old)} (this run: {show(new)})" for name, old, new in differences)
        super().__init__(
            f"{out} was written with other settings: {said}. Nothing was ranked or written. Run with the settings "
            f"it records ({self.path}), start over with overwrite=True (which deletes it, its errors file and its "
            "parts), or write to another output"
        )


def show(value: Any) -> str:
    """A recorded value as a message shows it (as JSON: ``"knockout"``, ``0.5``, ``null``)."""
    return json.dumps(value, ensure_ascii=False)


def settings_path(out: str | Path) -> Path:
    """Where ``out`` records its settings: ``OUT.settings.json`` beside it."""
    p = Path(out)
    return p.with_name(p.name + ".settings.json")


def row_options(options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """The loading options that change a ranker's scores (all but :data:`RUNTIME_OPTIONS`), sorted, each value as
    JSON holds it (anything else, such as a ``torch.dtype``, as its text)."""
    kept = []
    for name, value in sorted((options or {}).items()):
        if name in RUNTIME_OPTIONS:
            continue
        plain = value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
        kept.append((name, plain))
    return tuple(kept)


def read_settings(out: str | Path) -> dict[str, Any] | None:
    """The settings ``out`` records (None when it records none).

    Raises:
        ValueError: when its settings file cannot be read as a record (edited by hand).
    """
    path = settings_path(out)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); restore it, or delete it to resume {out} as an output "
                         "of unknown settings") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds no record of settings; restore it, or delete it to resume {out} as an "
                         "output of unknown settings")
    return record


def _has_data(out: Path) -> bool:
    """Whether ``out`` holds anything a run with other settings would mix with: rows, or remembered records."""
    return any(p.is_file() and p.stat().st_size > 0 for p in (out, empty_path(out)))


def check_settings(out: str | Path, record: Mapping[str, Any]) -> bool:
    """Check that ``out`` may take rows made with the settings ``record``; whether they must be (re)written.

    An output that holds nothing takes any settings; one that records none (written before outputs recorded their
    settings) is resumed as is, with a warning. A setting the record lacks (added by a later version) is taken as
    this run's.

    Raises:
        SettingsMismatchError: when ``out`` holds rows or remembered records made with other settings.
    """
    out = Path(out)
    recorded = read_settings(out)
    if not _has_data(out):
        return recorded is None or {k: v for k, v in recorded.items() if k != "format"} != dict(record)
    if recorded is None:
        logger.warning(
            "%s records no settings (it was written before outputs recorded them), so whether its records were "
            "made with this run's settings is unknown; resuming it, and recording this run's settings in %s",
            out,
            settings_path(out),
        )
        return True
    differences = [(k, recorded[k], v) for k, v in record.items() if k in recorded and recorded[k] != v]
    if differences:
        raise SettingsMismatchError(out, differences)
    return any(k not in recorded for k in record)


def write_settings(out: str | Path, record: Mapping[str, Any]) -> None:
    """Record ``record`` as the settings of ``out`` (atomically)."""
    text = json.dumps({"format": FORMAT, **record}, ensure_ascii=False, indent=2) + "\n"
    replace_file(settings_path(out), text.encode("utf-8"))
