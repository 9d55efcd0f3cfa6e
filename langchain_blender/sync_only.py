"""Which LangChain models have no async path of their own.

A chat model that implements only ``_generate`` (as many community integrations do), or a
``RunnableLambda`` without an async function, is awaited by LangChain through ``run_in_executor``: the
event loop's shared default executor, a small pool (``min(32, cores + 4)`` workers) that the ranking, other
libraries and the rest of the application use too. A hung call keeps one of its workers past any timeout,
and once all are kept nothing handed to that pool runs again. The ensemble calls such models through their
sync method in its own daemon threads instead, where a stuck call is counted and bounded
(``max_stuck_calls``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableLambda, RunnableSequence
from langchain_core.runnables.base import RunnableBindingBase


def runs_in_executor(runnable: Runnable[Any, Any]) -> bool:
    """Whether awaiting ``runnable`` runs its model call in the event loop's shared default executor: a chat
    model without its own ``_agenerate``, a ``RunnableLambda`` without ``afunc``, or a binding (``bind``,
    ``bind_tools``, ``with_retry``) or chain holding one."""
    while isinstance(runnable, RunnableBindingBase):
        runnable = runnable.bound
    if isinstance(runnable, RunnableSequence):
        return any(runs_in_executor(step) for step in runnable.steps)
    if isinstance(runnable, BaseChatModel):
        return type(runnable)._agenerate is BaseChatModel._agenerate
    if isinstance(runnable, RunnableLambda):
        return getattr(runnable, "afunc", None) is None
    return False


def takes_seed(runnable: Runnable[Any, Any]) -> bool:
    """Whether a chat model (or a binding of one) takes a ``seed`` (it declares one, as ChatOpenAI and
    ChatOllama do): a sample's seed is passed to it; other models sample with their own settings."""
    while isinstance(runnable, RunnableBindingBase):
        runnable = runnable.bound
    return isinstance(runnable, BaseChatModel) and "seed" in type(runnable).model_fields
