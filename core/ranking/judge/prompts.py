"""The LLM judge's pairwise prompt: MT-Bench's "pair-v2" judge prompt (Zheng et al. 2023, *Judging
LLM-as-a-Judge with MT-Bench and Chatbot Arena*; FastChat ``llm_judge/data/judge_prompts.jsonl``), a
system prompt and the question with the two answers, asking for ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie).

Example:
    >>> [m["role"] for m in judge_messages(MT_BENCH_PAIR, "2+2?", "4", "5")]
    ['system', 'user']
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from blender_core.ranking.judge.chat import Message

MT_BENCH_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's "
    "instructions and answers the user's question better. Your evaluation should consider factors such as "
    "the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Begin "
    "your evaluation by comparing the two responses and provide a short explanation. Avoid any position "
    "biases and ensure that the order in which the responses were presented does not influence your "
    "decision. Do not allow the length of the responses to influence your evaluation. Do not favor certain "
    "names of the assistants. Be as objective as possible. After providing your explanation, output your "
    'final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if '
    'assistant B is better, and "[[C]]" for a tie.'
)

MT_BENCH_TEMPLATE = (
    "[User Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)

_FIELDS = frozenset({"question", "answer_a", "answer_b"})


@dataclass(frozen=True)
class JudgePrompt:
    """A pairwise judge prompt: the system message and the user message's template.

    Attributes:
        system: the judge's instructions (it must ask for ``[[A]]``, ``[[B]]`` or ``[[C]]``); "" sends no
            system message (for models without one).
        template: the user message, with the fields ``{question}``, ``{answer_a}`` and ``{answer_b}``, each
            exactly once (literal braces doubled: ``{{``); the texts filled in are never parsed as fields.
    """

    # MT-Bench's wording: the prompt its agreement with human experts was measured with
    system: str = MT_BENCH_SYSTEM
    # the answers in explicit start/end markers, so an answer cannot pose as the other's end
    template: str = MT_BENCH_TEMPLATE

    def __post_init__(self) -> None:
        if not isinstance(self.system, str) or not isinstance(self.template, str):
            raise TypeError(
                f"JudgePrompt takes two str (system, template), got {type(self.system).__name__} and "
                f"{type(self.template).__name__}"
            )
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError as exc:
            raise ValueError(
                f"JudgePrompt.template is not a valid format string ({exc}); double literal braces: {{{{ }}}}"
            ) from exc
        if sorted(fields) != sorted(_FIELDS):
            raise ValueError(
                f"JudgePrompt.template must use each of {{question}}, {{answer_a}}, {{answer_b}} exactly once "
                f"and no other field, got {fields}"
            )


#: the default prompt: MT-Bench's pairwise judge
MT_BENCH_PAIR = JudgePrompt()


def judge_messages(prompt: JudgePrompt, question: str, answer_a: str, answer_b: str) -> list[Message]:
    """The messages asking the judge whether ``answer_a`` (assistant A) or ``answer_b`` (B) answers better."""
    user = prompt.template.format(question=question, answer_a=answer_a, answer_b=answer_b)
    system = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return [*system, {"role": "user", "content": user}]


VERDICT_ONLY_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant that follows the user's instructions and "
    "answers the user's question better. Do not let the order, the length or the names of the responses "
    'influence your decision. Reply with your final verdict only, strictly in this format: "[[A]]" if '
    'assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)

#: MT-Bench's pairwise prompt without the explanation, for small or slow judges: the verdict tag alone, asked
#: again after the answers, where a small model still attends to it
VERDICT_ONLY_PAIR = JudgePrompt(
    system=VERDICT_ONLY_SYSTEM,
    template=MT_BENCH_TEMPLATE
    + '\n\nWhich assistant answered better? Reply with "[[A]]", "[[B]]" or "[[C]]" only.',
)
