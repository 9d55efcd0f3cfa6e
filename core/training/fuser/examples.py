"""Fuser training examples: (instruction, top-K candidates ranked by a ranker → reference answer)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from blender_core.data.alpacaeval import EvalRecord, RankFn, load_alpacaeval, pref_rank_fn
from blender_core.data.lines import iter_jsonl

# Orders (best first) of each instruction's candidates.


@dataclass(frozen=True)
class FuserExample:
    """One training example: the instruction, its top-K candidates (best first) and the target answer."""

    instruction: str
    candidates: tuple[str, ...]
    target: str
    id: str = ""


def build_examples(
    records: Sequence[EvalRecord],
    rank_fn: RankFn,
    *,
    top_k: int = 3,
    chunk_size: int = 8,
    progress: bool = False,
) -> list[FuserExample]:
    """Rank each record's candidates and keep the top ``top_k`` non-empty ones; the target is its reference.

    Records without a reference or with no non-empty candidate are skipped.
    """
    usable = [r for r in records if r.reference.strip() and any(o.strip() for o in r.outputs)]
    examples: list[FuserExample] = []
    bar = tqdm(total=len(usable), desc="rank", unit="instr", disable=not progress)
    for start in range(0, len(usable), chunk_size):
        chunk = usable[start : start + chunk_size]
        orders = rank_fn([r.instruction for r in chunk], [list(r.outputs) for r in chunk])
        for r, order in zip(chunk, orders, strict=True):
            top = [r.outputs[i] for i in order if r.outputs[i].strip()][:top_k]
            examples.append(FuserExample(r.instruction, tuple(top), r.reference, id=str(r.idx)))
        bar.update(len(chunk))
    bar.close()
    return examples


def split_examples(
    examples: Sequence[FuserExample], dev_fraction: float, seed: int = 0
) -> tuple[list[FuserExample], list[FuserExample]]:
    """Split by a hash of the instruction (the same instruction is on the same side in every file)."""
    if not 0 <= dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    train: list[FuserExample] = []
    dev: list[FuserExample] = []
    for ex in examples:
        h = hashlib.sha1(f"{seed}:{ex.instruction}".encode()).digest()
        (dev if int.from_bytes(h[:4], "big") / 2**32 < dev_fraction else train).append(ex)
    return train, dev


def write_examples(path: str | Path, examples: Sequence[FuserExample]) -> Path:
    """Write examples as gzipped JSON lines (reusable with ``train-fuser --examples``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(p, "wt", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps({**asdict(ex), "candidates": list(ex.candidates)}, ensure_ascii=False) + "\n")
    return p


def read_examples(path: str | Path) -> list[FuserExample]:
    """Read examples written by :func:`write_examples` (``{instruction, candidates, target, id?}`` per line)."""
    out = []
    for n, row in iter_jsonl(path):
        try:
            out.append(
                FuserExample(
                    str(row["instruction"]),
                    tuple(map(str, row["candidates"])),
                    str(row["target"]),
                    id=str(row.get("id", n)),
                )
            )
        except KeyError as exc:
            raise ValueError(
                f"{path}:{n}: a fuser example needs instruction, candidates and target; missing {exc}"
            ) from exc
    return out


def examples_from_alpacaeval(
    paths: Sequence[str | Path], rank_fn: RankFn | None, *, top_k: int = 3, progress: bool = False
) -> list[FuserExample]:
    """Examples from AlpacaEval pool files, ranked by ``rank_fn`` (None: by the data's ``pref``)."""
    examples: list[FuserExample] = []
    for path in paths:  # per file: the pools share instructions, each with its own candidates and prefs
        records = load_alpacaeval(path)
        examples += build_examples(records, rank_fn or pref_rank_fn(records), top_k=top_k, progress=progress)
    return examples
