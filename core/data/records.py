"""Readers for ranking data: labelled pairs and scored candidate sets, from JSON lines (plain or gzipped).

Every reader returns records of two kinds:

- :class:`Pair`: one prompt, two answers and a label (0 = ``a`` better, 1 = ``b`` better, 2 = tie);
- :class:`CandidateSet`: one prompt, several answers and a score per answer (higher is better).

Formats recognised per line (see :func:`parse_record`):

1. **pairs**: ``{"prompt", "a", "b", "label", "source"?, "id"?}`` (``../shared/data/pairs``, the
   AlpacaEval ``.dev.pairs`` files);
2. **candidate sets with ``pref``**: ``{"instruction", "input"?, "candidates": [{"model", "output",
   "pref"}]}`` (the AlpacaEval pools);
3. **MixInstruct** (the paper's data): ``{"instruction", "input", "candidates": [{"model", "text",
   "scores": {"bleu": …, "bertscore": …}}]}``; ``score_key`` says which score ranks the candidates (a
   leading ``-`` means lower is better);
4. **pairwise-labelled candidate sets** (``pandalm.cands``): ``{"prompt", "candidates": {model: text},
   "pairs": [{"a", "b", "label"}]}``; a candidate's score is ``1 + (wins + ties / 2) / comparisons``;
5. **general**: ``{"prompt", "candidates": [str, …], "scores": [float, …]?, "models": [str, …]?,
   "id"?, "source"?}``, or ``"candidates": {model: text, …}`` (the models as keys, in their order).
   Without ``scores`` a set can be ranked but not trained or evaluated on.

The source text given to the ranker is ``instruction + input`` with no separator (the reference's
convention) where a record has both.

Files are read through :mod:`blender_core.data.lines` (bytes first, one line at a time; a bad byte or a
cut ``.gz`` is an error of a line, named by its number).

Example:
    >>> import io, json
    >>> line = json.dumps({"prompt": "2+2?", "candidates": ["4", "5"], "scores": [1.0, 0.0]})
    >>> parse_record(json.loads(line), where="demo:1")
    CandidateSet(prompt='2+2?', texts=('4', '5'), scores=(1.0, 0.0), models=None, id='demo:1', source='demo')
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_core.data.lines import DataFormatError, iter_jsonl

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """Two answers to one prompt with a label: 0 = ``a`` better, 1 = ``b`` better, 2 = tie."""

    prompt: str
    a: str
    b: str
    label: int
    id: str = ""
    source: str = ""


@dataclass(frozen=True)
class CandidateSet:
    """Answers to one prompt; ``scores`` (higher is better) may be ``None`` for sets that are only ranked."""

    prompt: str
    texts: tuple[str, ...]
    scores: tuple[float, ...] | None = None
    models: tuple[str, ...] | None = None
    id: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.scores is not None and len(self.scores) != len(self.texts):
            raise ValueError(f"candidate set {self.id!r} has {len(self.texts)} texts but {len(self.scores)} scores")
        if self.models is not None and len(self.models) != len(self.texts):
            raise ValueError(f"candidate set {self.id!r} has {len(self.texts)} texts but {len(self.models)} models")


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _source_text(obj: dict[str, Any], where: str) -> str:
    if "prompt" in obj:
        return _text(obj, "prompt", where)
    if "instruction" in obj:
        inp = obj.get("input") or ""
        if not isinstance(inp, str):
            raise DataFormatError(f"{where}: field 'input' must be a string, got {type(inp).__name__}")
        return _text(obj, "instruction", where) + inp
    raise DataFormatError(f"{where}: no 'prompt' nor 'instruction' field; found {sorted(obj)}")


def _score(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataFormatError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _default_source(where: str) -> str:
    name = where.rsplit(":", 1)[0]
    base = Path(name).name
    for suffix in (".gz", ".jsonl", ".json"):
        base = base.removesuffix(suffix)
    return base


def _pair(obj: dict[str, Any], where: str) -> Pair:
    label = obj.get("label")
    if label not in (0, 1, 2) or isinstance(label, bool):
        raise DataFormatError(f"{where}: pair label must be 0 (a better), 1 (b better) or 2 (tie), got {label!r}")
    return Pair(
        prompt=_source_text(obj, where),
        a=_text(obj, "a", where),
        b=_text(obj, "b", where),
        label=int(label),
        id=str(obj.get("id", where)),
        source=str(obj.get("source") or _default_source(where)),
    )


def _scored_from_pairs(obj: dict[str, Any], where: str) -> CandidateSet:
    cands = obj["candidates"]
    models = list(cands)
    wins = dict.fromkeys(models, 0.0)
    games = dict.fromkeys(models, 0)
    for k, p in enumerate(obj["pairs"]):
        if not isinstance(p, dict) or p.get("a") not in cands or p.get("b") not in cands:
            raise DataFormatError(f"{where}: pairs[{k}] must name two models of 'candidates' in 'a' and 'b'")
        label = p.get("label")
        if label not in (0, 1, 2):
            raise DataFormatError(f"{where}: pairs[{k}] label must be 0, 1 or 2, got {label!r}")
        games[p["a"]] += 1
        games[p["b"]] += 1
        wins[p["a"]] += {0: 1.0, 1: 0.0, 2: 0.5}[label]
        wins[p["b"]] += {0: 0.0, 1: 1.0, 2: 0.5}[label]
    judged = [m for m in models if games[m] > 0]
    return CandidateSet(
        prompt=_source_text(obj, where),
        texts=tuple(_text(cands, m, f"{where} candidates") for m in judged),
        scores=tuple(1.0 + wins[m] / games[m] for m in judged),
        models=tuple(judged),
        id=str(obj.get("id", where)),
        source=str(obj.get("source") or _default_source(where)),
    )


def _unjudged(c: dict[str, Any], score_key: str | None) -> bool:
    """A candidate whose chosen score is present but null (e.g. an answer the judge never rated)."""
    if score_key is None:
        return "pref" in c and c["pref"] is None
    key = score_key.lstrip("-")
    scores = c.get("scores")
    if isinstance(scores, dict) and key in scores:
        return scores[key] is None
    return key in c and c[key] is None


def _kind(value: Any) -> str:
    """How an error names what it got: ``None`` for null, else the type's name."""
    return "None" if value is None else type(value).__name__


def _check_candidate_kinds(cands: list[Any], where: str) -> None:
    """Candidates are all strings (general format) or all objects, as the first one is; name the first that is not."""
    first = cands[0]
    if not isinstance(first, (str, dict)):
        raise DataFormatError(f"{where}: candidates[0] must be an object or a string, got {_kind(first)}")
    kind, name = (str, "a str") if isinstance(first, str) else (dict, "an object")
    for i, c in enumerate(cands):
        if not isinstance(c, kind):
            raise DataFormatError(
                f"{where}: candidates[{i}] must be {name}, like candidates[0], got {_kind(c)}"
            )


def _candidate_set(obj: dict[str, Any], where: str, score_key: str | None) -> CandidateSet:
    cands = obj["candidates"]
    ident = str(obj.get("id", obj.get("idx", where)))
    source = str(obj.get("source") or _default_source(where))
    prompt = _source_text(obj, where)
    if isinstance(cands, dict) and "pairs" in obj:
        return _scored_from_pairs(obj, where)
    if isinstance(cands, dict):  # {model: text}: the general format with the models as keys
        if "models" in obj:
            raise DataFormatError(
                f"{where}: 'candidates' is a {{model: text}} mapping and 'models' is given too; name the "
                "models in one place"
            )
        obj = {**obj, "candidates": list(cands.values()), "models": list(cands)}
        cands = obj["candidates"]
    if not isinstance(cands, list):
        raise DataFormatError(
            f"{where}: 'candidates' must be a list (or a {{model: text}} mapping), got {type(cands).__name__}"
        )
    if not cands:
        raise DataFormatError(f"{where}: 'candidates' is empty; give the answers to rank")
    _check_candidate_kinds(cands, where)
    if isinstance(cands[0], str):  # general format
        scores = obj.get("scores")
        models = obj.get("models")
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(cands):
                raise DataFormatError(f"{where}: 'scores' must be a list of {len(cands)} numbers (one per candidate)")
            scores = tuple(_score(s, f"scores[{i}]", where) for i, s in enumerate(scores))
        if models is not None and (not isinstance(models, list) or len(models) != len(cands)):
            raise DataFormatError(f"{where}: 'models' must be a list of {len(cands)} names (one per candidate)")
        return CandidateSet(prompt, tuple(cands), scores, tuple(map(str, models)) if models else None, ident, source)
    texts, scores_l, models_l = [], [], []
    for i, c in enumerate(cands):
        if _unjudged(c, score_key):
            logger.info("%s: candidates[%d] has a null score (unjudged); it is left out", where, i)
            continue
        text_key = "output" if "output" in c else "text"
        texts.append(_text(c, text_key, f"{where} candidates[{i}]"))
        models_l.append(str(c.get("model", i)))
        if "pref" in c and score_key is None:
            scores_l.append(_score(c["pref"], f"candidates[{i}].pref", where))
        elif "scores" in c:
            if score_key is None:
                raise DataFormatError(
                    f"{where}: candidates carry a 'scores' mapping ({', '.join(sorted(c['scores']))}); "
                    "choose the one that ranks them with score_key (CLI: --score-key NAME, '-NAME' if lower is better)"
                )
            key, sign = (score_key[1:], -1.0) if score_key.startswith("-") else (score_key, 1.0)
            if key not in c["scores"]:
                raise DataFormatError(
                    f"{where}: candidates[{i}].scores has no {key!r}; it has {', '.join(sorted(c['scores']))}"
                )
            scores_l.append(sign * _score(c["scores"][key], f"candidates[{i}].scores.{key}", where))
        elif score_key is not None and score_key.lstrip("-") in c:
            key, sign = (score_key[1:], -1.0) if score_key.startswith("-") else (score_key, 1.0)
            scores_l.append(sign * _score(c[key], f"candidates[{i}].{key}", where))
    if not texts:
        raise DataFormatError(f"{where}: no candidate has a score")
    if scores_l and len(scores_l) != len(texts):
        raise DataFormatError(f"{where}: only {len(scores_l)} of {len(texts)} candidates have a score")
    return CandidateSet(prompt, tuple(texts), tuple(scores_l) or None, tuple(models_l), ident, source)


def parse_record(obj: dict[str, Any], *, where: str = "<record>", score_key: str | None = None) -> Pair | CandidateSet:
    """Turn one JSON object into a :class:`Pair` or a :class:`CandidateSet` (formats in the module docstring).

    Args:
        obj: the decoded JSON line.
        where: ``file:line``, used in error messages and as the default ``id`` / ``source``.
        score_key: for MixInstruct-style ``scores`` mappings, the score that ranks candidates
            (``-name`` when lower is better); it also overrides ``pref`` when given.
    """
    if "candidates" in obj:
        return _candidate_set(obj, where, score_key)
    if "a" in obj and "b" in obj:
        return _pair(obj, where)
    raise DataFormatError(
        f"{where}: not a pair ({{prompt, a, b, label}}) nor a candidate set ({{prompt|instruction, candidates}}); "
        f"the line has fields {sorted(obj)}"
    )


def read_records(path: str | Path, *, score_key: str | None = None) -> list[Pair | CandidateSet]:
    """Read every line of a ``.jsonl`` / ``.jsonl.gz`` file (any mix of the formats above)."""
    return [parse_record(obj, where=f"{path}:{n}", score_key=score_key) for n, obj in iter_jsonl(path)]


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a pairs file; an error names the first line that is not a pair."""
    out = []
    for rec in read_records(path):
        if not isinstance(rec, Pair):
            raise DataFormatError(f"{path}: expected pairs ({{prompt, a, b, label}}), found a candidate set ({rec.id})")
        out.append(rec)
    return out


def read_candidate_sets(path: str | Path, *, score_key: str | None = None) -> list[CandidateSet]:
    """Read a candidate-set file (any of formats 2-5); an error names the first line that is a pair."""
    out = []
    for rec in read_records(path, score_key=score_key):
        if not isinstance(rec, CandidateSet):
            raise DataFormatError(f"{path}: expected candidate sets, found a pair ({rec.id})")
        out.append(rec)
    return out


def write_jsonl(path: str | Path, records: Sequence[Pair | CandidateSet]) -> None:
    """Write records in the pairs / general format (gzipped when the name ends in ``.gz``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in records:
        if isinstance(r, Pair):
            obj: dict[str, Any] = {"id": r.id, "source": r.source, "prompt": r.prompt, "a": r.a, "b": r.b, "label": r.label}
        else:
            obj = {"id": r.id, "source": r.source, "prompt": r.prompt, "candidates": list(r.texts)}
            if r.scores is not None:
                obj["scores"] = list(r.scores)
            if r.models is not None:
                obj["models"] = list(r.models)
        lines.append(json.dumps(obj, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if p.suffix == ".gz":
        with gzip.open(p, "wb") as f:
            f.write(data)
    else:
        p.write_bytes(data)


def prompt_in_holdout(prompt: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``prompt`` falls in a held-out ``fraction`` of prompts, decided by a hash of its text.

    The same prompt is on the same side in every file (e.g. one instruction answered by several model
    pools), so a split by prompt never leaks an instruction from training into evaluation.
    """
    import hashlib

    h = hashlib.blake2b(f"{seed}\x00{prompt.strip()}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big") / 2**64 < fraction


def split_by_prompt(
    records: Sequence[Pair | CandidateSet], fraction: float, seed: int = 0
) -> tuple[list[Pair | CandidateSet], list[Pair | CandidateSet]]:
    """Split records into (kept, held out) so that about ``fraction`` of the distinct prompts are held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    kept: list[Pair | CandidateSet] = []
    held: list[Pair | CandidateSet] = []
    for r in records:
        (held if prompt_in_holdout(r.prompt, fraction, seed) else kept).append(r)
    return kept, held
