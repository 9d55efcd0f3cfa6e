"""Fusers: the seq2seq GenFuser of the paper and LLM fusers over any causal LM or chat model."""

from __future__ import annotations

from .base import FUSION_SYSTEM_PROMPT, BaseFuser, fusion_messages

__all__ = ["FUSION_SYSTEM_PROMPT", "BaseFuser", "fusion_messages"]
