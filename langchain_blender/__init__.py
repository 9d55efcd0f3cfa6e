"""LangChain adapters for blender-llm: a chat model that ensembles chat models, a PairRanker document
compressor, the ranker as an LCEL step, and best-response selection for agents and LangGraph nodes.

Names load on first use, so ``import langchain_blender`` stays light (the ranker's torch comes with the
first adapter you touch) and needs only ``langchain-core``; the agent middleware also needs ``langchain``
(``pip install "blender-llm[agents]"``).

May import: blender_core.base, blender_core.ranking, blender_core.ranking.judge, blender_core.fusion,
blender_core.ensemble.

Example:
    >>> from langchain_blender import BlenderLLM  # doctest: +SKIP
    >>> llm = BlenderLLM(backends=[model_a, model_b, model_c], top_k=2)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chat_model import BlenderLLM
    from .compressor import PairRankerCompressor
    from .fusers import ChatModelFuser
    from .judge import judge_ranker
    from .middleware import BestOfModelsMiddleware
    from .runnables import PairRankerRunnable
    from .selection import achoose_best_message, choose_best_message
    from .tool_calls import canonical_tool_calls

_EXPORTS = {
    "BlenderLLM": "chat_model",
    "ChatModelFuser": "fusers",
    "PairRankerCompressor": "compressor",
    "PairRankerRunnable": "runnables",
    "BestOfModelsMiddleware": "middleware",
    "choose_best_message": "selection",
    "achoose_best_message": "selection",
    "canonical_tool_calls": "tool_calls",
    "judge_ranker": "judge",
}

__all__ = [
    "BestOfModelsMiddleware",
    "BlenderLLM",
    "ChatModelFuser",
    "PairRankerCompressor",
    "PairRankerRunnable",
    "achoose_best_message",
    "canonical_tool_calls",
    "choose_best_message",
    "judge_ranker",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_blender' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
