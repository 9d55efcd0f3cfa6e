"""AlpacaEval pool files: instructions with the outputs of many models, their judge preferences and a reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from blender_core.data.lines import iter_jsonl

#: orders (best first) of each instruction's candidates: how a ranker, a rule or the labels choose
RankFn: TypeAlias = Callable[[list[str], list[list[str]]], list[list[int]]]


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


def pref_rank_fn(records: Sequence[EvalRecord]) -> RankFn:
    """Orders by the data's judge preference (``pref``) of the instructions of ``records`` (uses the labels:
    a reference point, not a ranker)."""
    by_instruction = {r.instruction: r for r in records}

    def rank(instructions: list[str], candidates: list[list[str]]) -> list[list[int]]:
        orders = []
        for instruction in instructions:
            prefs = by_instruction[instruction].prefs
            orders.append(sorted(range(len(prefs)), key=lambda j: (-prefs[j], j)))
        return orders

    return rank
