"""Token ids and labels of fuser examples: the GenFuser format for seq2seq, the chat prompt for causal LMs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from blender_core.fusion.causal import fusion_prompt
from blender_core.fusion.seq2seq import build_fuser_input
from blender_core.training.fuser.config import FuserTrainConfig
from blender_core.training.fuser.examples import FuserExample

IGNORE_INDEX = -100  # label of the positions that carry no loss


def encode_seq2seq(
    tokenizer: PreTrainedTokenizerBase, example: FuserExample, config: FuserTrainConfig
) -> dict[str, list[int]]:
    """Source in the published GenFuser format (capped, no special tokens); target ids ending in ``</s>``."""
    source = build_fuser_input(
        example.instruction, "", example.candidates[: config.top_k], tokenizer, config.candidate_maxlength
    )
    input_ids = tokenizer(
        source, max_length=config.max_source_length, truncation=True, add_special_tokens=False
    )["input_ids"]
    labels = tokenizer(example.target, max_length=config.max_target_length, truncation=True)["input_ids"]
    return {"input_ids": list(input_ids), "labels": list(labels)}


def encode_causal(
    tokenizer: PreTrainedTokenizerBase, example: FuserExample, config: FuserTrainConfig
) -> dict[str, list[int]]:
    """Chat prompt + target + end-of-turn; the loss is on the answer tokens only (prompt labels ignored)."""
    prompt = fusion_prompt(
        tokenizer,
        example.instruction,
        [c for c in example.candidates if c.strip()][: config.top_k],
        candidate_maxlength=config.candidate_maxlength,
    )
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    prompt_ids = prompt_ids[-config.max_source_length :]  # keep the end: the opened assistant turn
    answer = list(tokenizer(example.target, add_special_tokens=False)["input_ids"])[
        : config.max_target_length
    ]
    eos = tokenizer.eos_token_id
    if eos is not None:
        answer.append(int(eos))  # type: ignore[arg-type]
    return {"input_ids": prompt_ids + answer, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer}


class Collator:
    """Pads ``input_ids`` (with ``pad_id``) and ``labels`` (with -100) on the right; builds the attention mask."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = len(features)
        src = max(len(f["input_ids"]) for f in features)
        tgt = max(len(f["labels"]) for f in features)
        input_ids = torch.full((n, src), self.pad_id, dtype=torch.long)  # (batch, src)
        attention_mask = torch.zeros((n, src), dtype=torch.long)
        labels = torch.full((n, tgt), IGNORE_INDEX, dtype=torch.long)  # (batch, tgt)
        for i, f in enumerate(features):
            input_ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            attention_mask[i, : len(f["input_ids"])] = 1
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class EncodedDataset(torch.utils.data.Dataset):
    """Examples encoded once, up front."""

    def __init__(self, features: list[dict[str, list[int]]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]
