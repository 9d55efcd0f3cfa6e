"""The LLM-judge ranker: a chat model judges each comparison (:class:`JudgeRanker`, :mod:`.judge_ranker`).
:mod:`.chat` is what a judge must offer (:class:`JudgeChat`, or plain functions in :class:`CallableChat`),
:mod:`.prompts` the MT-Bench pairwise prompts, :mod:`.verdict` reads a reply's verdict, :mod:`.calls` runs a
batch of calls through the shared scheduler and :mod:`.session` drives the strategies over them.

Like every ranker kind it imports no other kind; of ``blender_core.ranking`` it uses the shared modules only
(interface, strategies, aggregation), never the registry, which imports the kinds.

May import: blender_core.base, blender_core.ranking.
"""

from __future__ import annotations

from blender_core.ranking.judge.chat import CallableChat, ChatReply, JudgeChat
from blender_core.ranking.judge.judge_ranker import JudgeRanker
from blender_core.ranking.judge.prompts import MT_BENCH_PAIR, JudgePrompt

__all__ = ["MT_BENCH_PAIR", "CallableChat", "ChatReply", "JudgeChat", "JudgePrompt", "JudgeRanker"]
