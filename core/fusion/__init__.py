"""Fusion: the fuser interface and its implementations, the seq2seq GenFuser of the paper
(``gen_fuser_3b`` format) and the LLM fuser over any causal LM with a chat template, plus ``load_fuser``.

May import: blender_core.base, blender_core.local_models.
"""

from __future__ import annotations

from blender_core.fusion.base import FUSION_SYSTEM_PROMPT, BaseFuser, fusion_messages

__all__ = ["FUSION_SYSTEM_PROMPT", "BaseFuser", "fusion_messages"]
