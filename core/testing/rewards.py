"""Tiny random reward models, built offline (for tests and benchmarks).

:func:`make_tiny_reward_model` writes a Llama- or Qwen2-architecture ``*ForSequenceClassification`` with
one output (a reward) and a chat tokenizer, with ``save_pretrained``, so that
``AutoModelForSequenceClassification.from_pretrained`` and
:meth:`~blender_core.ranking.reward.RewardModelRanker.from_pretrained` load it as they would a hub model.
Its rewards are random; what it exercises is the path (chat template, padding, batching, loading).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from blender_core.testing._common import TINY_LLAMA, widen_init
from blender_core.testing.fusers import TINY_CHAT_TEMPLATE, build_tiny_chat_tokenizer

RewardArch = Literal["llama", "qwen2"]
REWARD_ARCHS: tuple[str, ...] = ("llama", "qwen2")

TINY_BOS = "<|begin_of_text|>"
# Llama 3's style: the template writes the BOS (and so does the tokenizer, unless told not to).
TINY_LLAMA_CHAT_TEMPLATE = "{{ bos_token }}" + TINY_CHAT_TEMPLATE
# Qwen2's style: no BOS, a default system turn when the conversation has none, then ChatML turns.
TINY_QWEN2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}" + TINY_CHAT_TEMPLATE
)


def make_tiny_reward_model(
    path: str | Path,
    *,
    arch: RewardArch = "llama",
    seed: int = 0,
    chat_template: bool = True,
    pad_token: bool = True,
    **config_overrides: Any,
) -> Path:
    """Write a random reward model (hidden 32, 2 layers, ``num_labels=1``) and its tokenizer; return the folder.

    Args:
        path: the folder to write (created if needed).
        arch: ``"llama"`` (``LlamaForSequenceClassification``, with a BOS that both the template and the
            tokenizer add, as Llama 3's) or ``"qwen2"`` (``Qwen2ForSequenceClassification``, no BOS and a
            Qwen-style default system turn in its template).
        seed: seeds the tokenizer and the weights.
        chat_template: save the tokenizer with a chat template (False: a model that has none).
        pad_token: give the tokenizer and the config a pad token (False: neither has one, as in many
            causal LMs, so the ranker must fall back to the eos token).
        config_overrides: fields of the model config to change (``num_labels``, ``max_position_embeddings``, ...).

    Example:
        >>> folder = make_tiny_reward_model(tmp_path / "rm", arch="qwen2")  # doctest: +SKIP
        >>> AutoModelForSequenceClassification.from_pretrained(folder).config.num_labels  # doctest: +SKIP
        1
    """
    from transformers import (
        LlamaConfig,
        LlamaForSequenceClassification,
        Qwen2Config,
        Qwen2ForSequenceClassification,
    )

    if arch not in REWARD_ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(map(repr, REWARD_ARCHS))}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(arch, seed, chat_template=chat_template, pad_token=pad_token)
    cfg_kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        **TINY_LLAMA,
        "max_position_embeddings": 512,
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id if pad_token else None,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "tie_word_embeddings": False,
    }
    cfg_kwargs.update(config_overrides)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model: torch.nn.Module = Qwen2ForSequenceClassification(Qwen2Config(**cfg_kwargs))
    else:
        model = LlamaForSequenceClassification(LlamaConfig(**cfg_kwargs))
    widen_init(model)  # so that rewards differ clearly between texts
    model.eval().save_pretrained(root)  # type: ignore[operator]
    tokenizer.save_pretrained(root)
    return root


def _tokenizer(arch: str, seed: int, *, chat_template: bool, pad_token: bool) -> Any:
    """The tiny chat tokenizer; for Llama with a BOS that the tokenizer adds and the template writes."""
    from tokenizers import processors

    tokenizer = build_tiny_chat_tokenizer(seed=seed)
    if arch == "llama":
        tokenizer.add_special_tokens({"bos_token": TINY_BOS})
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{TINY_BOS} $A",
            pair=f"{TINY_BOS} $A $B",
            special_tokens=[(TINY_BOS, tokenizer.bos_token_id)],
        )
    template = TINY_LLAMA_CHAT_TEMPLATE if arch == "llama" else TINY_QWEN2_CHAT_TEMPLATE
    tokenizer.chat_template = template if chat_template else None
    if not pad_token:
        tokenizer.pad_token = None
    return tokenizer
