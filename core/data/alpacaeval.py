"""AlpacaEval pool files: instructions with the outputs of many models, their judge preferences and a reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blender_core.data.records import iter_jsonl


@dataclass(frozen=True)
class EvalRecord:
    """One instruction of an AlpacaEval pool file: candidates with their models and judge preferences."""

    idx: int
    instruction: str
    reference: str
    models: tuple[str, ...]
    outputs: tuple[str, ...]
    prefs: tuple[float, ...]


def load_alpacaeval(path: str | Path) -> list[EvalRecord]:
    """Read an AlpacaEval pool file (``{idx, instruction, reference, candidates: [{model, output, pref}]}``)."""
    records = []
    for n, row in iter_jsonl(path):
        try:
            cands = row["candidates"]
            records.append(
                EvalRecord(
                    idx=int(row.get("idx", n - 1)),
                    instruction=str(row["instruction"]),
                    reference=str(row["reference"]),
                    models=tuple(str(c["model"]) for c in cands),
                    outputs=tuple(str(c["output"]) for c in cands),
                    prefs=tuple(float(c["pref"]) for c in cands),
                )
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}:{n}: not an AlpacaEval pool record (needs instruction, reference and candidates "
                f"[{{model, output, pref}}]); missing {exc}"
            ) from exc
    if not records:
        raise ValueError(f"{path} holds no records")
    return records
