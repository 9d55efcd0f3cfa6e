"""How ``eval-ranker`` and ``eval-fusion`` turn ``--judge SPEC`` into an LLM judge: a
:class:`~blender_core.ranking.JudgeRanker` over a local chat model (:class:`~blender_core.fusion.chat.LocalChat`
wrapped in a ``CallableChat``), and the judge options both commands share.

The default prompt is :data:`~blender_core.ranking.judge.prompts.VERDICT_ONLY_PAIR`: an explanation first
(MT-Bench's way) costs a few hundred generated tokens per comparison, which a small model on CPU cannot
afford (SmolLM2-135M generates about 15 tokens a second on two cores).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from blender_core.app.commands._command import choice

if TYPE_CHECKING:
    from blender_core.fusion.chat import LocalChat
    from blender_core.ranking import ChatReply, JudgePrompt, JudgeRanker
    from blender_core.ranking.judge.chat import Message

#: the --judge-prompt choices (the prompts themselves are imported when a judge is loaded: see judge_prompt)
JUDGE_PROMPT_NAMES = ("verdict", "mt-bench")
# new tokens per reply: the verdict with a few words before it / MT-Bench's short explanation and verdict
DEFAULT_MAX_NEW_TOKENS = {"verdict": 16, "mt-bench": 256}
LOCAL_NAMES = ("smollm2", "builtin:smollm2")

# The options both commands take (typer needs them on each command's signature).
JudgeSpec = Annotated[
    str | None,
    typer.Option(
        "--judge",
        help="An LLM judge: smollm2 (the local SmolLM2-135M-Instruct) or a local chat-model folder.",
    ),
]
JudgePromptName = Annotated[
    str,
    choice(
        JUDGE_PROMPT_NAMES,
        "--judge-prompt",
        help="verdict (MT-Bench's pairwise prompt asking for [[A]]/[[B]]/[[C]] only) or mt-bench (explanation first).",
    ),
]
JudgeMaxNewTokens = Annotated[
    int | None,
    typer.Option(
        "--judge-max-new-tokens", help="Tokens per judge reply (default: 16 verdict, 256 mt-bench)."
    ),
]
JudgeTimeout = Annotated[
    float,
    typer.Option(
        "--judge-timeout", help="Seconds per judge call; a call past it counts as a tie and is reported."
    ),
]
JudgeConcurrency = Annotated[
    int,
    typer.Option(
        "--judge-concurrency",
        help="Judge calls at once (1 on CPU: concurrent generations share the cores and all slow down).",
    ),
]


def judge_from_option(
    spec: str,
    *,
    device: str | None = None,
    prompt: str = "verdict",
    max_new_tokens: int | None = None,
    timeout: float = 120.0,
    concurrency: int = 1,
) -> tuple[JudgeRanker, dict[str, Any]]:
    """The judge named on the command line and its settings for the report. A judge that cannot be loaded
    exits with its error message and status 1, as a ranker does."""
    if prompt not in JUDGE_PROMPT_NAMES:
        raise typer.BadParameter(
            f"unknown judge prompt {prompt!r}; choose one of {', '.join(JUDGE_PROMPT_NAMES)}",
            param_hint="'--judge-prompt'",
        )
    from blender_core.app.local_chat import load_chat_model
    from blender_core.fusion.chat import LocalChat
    from blender_core.ranking import CallableChat, JudgeRanker

    tokens = DEFAULT_MAX_NEW_TOKENS[prompt] if max_new_tokens is None else max_new_tokens
    try:
        model, tokenizer, name = load_chat_model(None if spec in LOCAL_NAMES else spec, device=device)
        # max_time: a generation past the call's timeout stops, instead of running on as a stuck call
        chat = LocalChat(
            model, tokenizer, max_new_tokens=tokens, generate_kwargs={"max_time": timeout}, name=name
        )
        judge = JudgeRanker(
            CallableChat(_replies(chat), name=name), prompt=judge_prompt(prompt),
            max_concurrency=concurrency, max_stuck_calls=max(8, concurrency), timeout=timeout,
        )  # fmt: skip
    except (OSError, ValueError, ImportError) as exc:
        typer.echo(f"error: could not load the judge {spec!r}: {exc}", err=True)
        raise typer.Exit(1) from exc
    settings = {
        "name": judge.name, "spec": spec, "prompt": prompt, "max_new_tokens": tokens, "timeout_s": timeout,
        "concurrency": concurrency,
    }  # fmt: skip
    return judge, settings


def judge_prompt(name: str) -> JudgePrompt:
    """The judge prompt a --judge-prompt name stands for."""
    from blender_core.ranking import MT_BENCH_PAIR
    from blender_core.ranking.judge.prompts import VERDICT_ONLY_PAIR

    return {"verdict": VERDICT_ONLY_PAIR, "mt-bench": MT_BENCH_PAIR}[name]


def _replies(chat: LocalChat) -> Callable[[list[Message]], ChatReply]:
    """The local chat's ``complete`` as a judge call returning a ``ChatReply``."""
    from blender_core.ranking import ChatReply

    def complete(messages: list[Message]) -> ChatReply:
        text, usage = chat.complete(messages)
        return ChatReply(text, usage)

    return complete
