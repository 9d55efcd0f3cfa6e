"""What the tiny checkpoints share: generated training lines, a unigram sentencepiece model trained on
them, the shape of the tiny Llama, and a wider-than-default weight init."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch

# The tiny Llama of the causal fuser and the reward models: hidden 32, 2 layers, grouped-query attention.
TINY_LLAMA: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def random_lines(
    words: Sequence[str], n_lines: int, seed: int, endings: Sequence[str], *, numbers: bool = False
) -> list[str]:
    """``n_lines`` lines of 4 to 16 random ``words``, each closed by one of ``endings``; with ``numbers``,
    half of them get a number (0 to 999) at a random place."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        chosen = [rng.choice(words) for _ in range(rng.randint(4, 16))]
        if numbers and rng.random() < 0.5:
            chosen.insert(rng.randrange(len(chosen)), str(rng.randint(0, 999)))
        lines.append(" ".join(chosen) + rng.choice(endings))
    return lines


def train_unigram(lines: Iterable[str], vocab_size: int, **options: Any) -> bytes:
    """A unigram sentencepiece model trained on ``lines``, as bytes; ``options`` are the trainer's (the
    special pieces and their ids, ``character_coverage``, ...)."""
    import sentencepiece as spm  # a core dependency, imported here to keep import time low

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return buf.getvalue()


def widen_init(model: torch.nn.Module) -> None:
    """Draw the weight matrices wider than the default init (embeddings N(0, 1), the others N(0, 0.4)), so
    that a tiny random model's outputs vary clearly with its input."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 1.0 if "embed" in name else 0.4)
