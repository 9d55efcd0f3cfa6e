"""Tiny encoders and data files for the training / evaluation tests (built offline in milliseconds)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel, BertTokenizer

WORDS = "the a answer question good great fine bad awful yes no hello world write poem python code sea is it".split()


def make_tiny_encoder(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with a whole-word vocabulary, saved as an encoder folder."""
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789.,?!"]
    tokenizer = BertTokenizer(vocab={p: i for i, p in enumerate(dict.fromkeys(pieces))})
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, pad_token_id=0,
    )
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def answer(quality: int, rng: random.Random) -> str:
    """A text whose quality is visible in its words: 'great' answers are better than 'awful' ones."""
    word = ["awful", "bad", "fine", "good", "great"][quality]
    return " ".join([word] * rng.randint(2, 4) + rng.sample(WORDS[:5], 2))


def write_gz(path: Path, rows: list[dict[str, Any]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def make_candidate_file(path: Path, n: int = 12, seed: int = 0) -> Path:
    """AlpacaEval-style candidate sets: ``{instruction, candidates: [{model, output, pref}]}``."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        cands = []
        for m, q in enumerate(rng.sample(range(5), 4)):
            cands.append({"model": f"m{m}", "output": answer(q, rng), "pref": 1.0 + q / 4})
        rows.append({"idx": k, "instruction": f"write a poem {k}", "candidates": cands})
    return write_gz(path, rows)


def make_pair_file(path: Path, n: int = 10, seed: int = 1) -> Path:
    """Pairs ``{prompt, a, b, label}``: the better-worded answer wins; every fifth pair a tie."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        qa, qb = rng.sample(range(5), 2)
        label = 2 if k % 5 == 4 else (0 if qa > qb else 1)
        rows.append({"id": f"p{k}", "source": "tiny" if k % 2 else "other", "prompt": f"question {k}",
                     "a": answer(qa, rng), "b": answer(qb, rng), "label": label})
    return write_gz(path, rows)
