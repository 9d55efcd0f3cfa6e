"""Fusion: the fuser interface and its implementations, the seq2seq GenFuser of the paper
(``gen_fuser_3b`` format) and the LLM fuser over any causal LM with a chat template, both on one
transformers generation base, plus ``load_fuser``.

May import: blender_core.base, blender_core.local_models.
"""

from __future__ import annotations

from blender_core.fusion.auto import load_fuser
from blender_core.fusion.base import FUSION_SYSTEM_PROMPT, BaseFuser, fusion_messages
from blender_core.fusion.causal import LLMFuser
from blender_core.fusion.generation import HFGenerationFuser
from blender_core.fusion.seq2seq import GenFuser

__all__ = [
    "FUSION_SYSTEM_PROMPT",
    "BaseFuser",
    "GenFuser",
    "HFGenerationFuser",
    "LLMFuser",
    "fusion_messages",
    "load_fuser",
]
