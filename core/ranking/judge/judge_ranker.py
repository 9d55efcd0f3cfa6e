"""JudgeRanker: a pairwise ranker that asks a chat model which of two answers is better (LLM-as-a-judge).

Each comparison is one judge call with the MT-Bench pairwise prompt (:mod:`.prompts`), candidate i
as assistant A and j as B; its verdict (:mod:`.verdict`) is M[i, j] = +1 (A wins), -1 (B wins) or 0
(tie). The strategies ask both orders of every pair they compare, so they see the both-order margin
M[i, j] - M[j, i], which cancels a judge's position bias exactly as with the PairRM ranker; ``knockout`` and
``bubble`` cost 2(n-1) calls, ``full`` n(n-1).

Nothing a judge does stops a ranking: a reply without a verdict, a call that fails, times out or is skipped
(the judge holds too many stuck calls) counts as a tie and is reported in ``Ranking.issues``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from blender_core.base.results import Ranking
from blender_core.base.threads import BackendThreads
from blender_core.base.validation import check_candidate_lists, check_choice, check_prompts, positive_int
from blender_core.ranking import strategies
from blender_core.ranking.aggregation import AGGREGATIONS
from blender_core.ranking.interface import BaseRanker
from blender_core.ranking.judge.calls import AsyncCall, Blocking, acall_all, call_all
from blender_core.ranking.judge.chat import JudgeChat, Message, as_judge_chat
from blender_core.ranking.judge.prompts import MT_BENCH_PAIR, JudgePrompt, judge_messages
from blender_core.ranking.judge.session import Comparison, JudgeSession


class JudgeRanker(BaseRanker):
    """Rank candidates by asking an LLM judge about pairs of them, both orders, concurrently.

    Within one ``rank`` call a comparison (the same prompt, the same two texts in the same slots) is asked
    once, however many prompts or rounds need it; two identical texts are a tie without a call.

    Example:
        >>> judge = JudgeRanker(lambda messages: "B is more precise. [[B]]")
        >>> judge.rank(["2+2?"], [["4", "four"]])[0].scores.tolist()  # always B: position bias cancels
        [0.0, 0.0]
    """

    def __init__(
        self,
        chat: JudgeChat | Callable[[list[Message]], Any],
        *,
        prompt: JudgePrompt = MT_BENCH_PAIR,
        max_concurrency: int = 8,
        timeout: float | None = 60.0,
        max_stuck_calls: int = 8,
        name: str | None = None,
    ) -> None:
        """Args:
        chat: the judge: a :class:`~blender_core.ranking.judge.chat.JudgeChat`, or a function of the
            messages returning a ``ChatReply`` or a ``str`` (wrapped in ``CallableChat``).
        prompt: the pairwise prompt (default: MT-Bench's).
        max_concurrency: judge calls in flight at once, across the prompts of a call.
        timeout: seconds each judge call may take (None: no limit); past it the call is a tie.
        max_stuck_calls: calls still running past their timeout before the judge is skipped at once; the
            threads a hung judge holds stay within it (at least ``max_concurrency``: every call in flight
            may hang).
        name: shown in metadata and logs (default ``judge:<the chat's name>``).
        """
        self.chat = as_judge_chat(chat)
        if not isinstance(prompt, JudgePrompt):
            raise TypeError(f"prompt must be a JudgePrompt, got {type(prompt).__name__}")
        self.prompt = prompt
        self.max_concurrency = positive_int(max_concurrency, "JudgeRanker: max_concurrency")
        self.timeout = _check_timeout(timeout)
        self.max_stuck_calls = positive_int(max_stuck_calls, "JudgeRanker: max_stuck_calls")
        if self.max_stuck_calls < self.max_concurrency:
            # every call in flight may hang at once: a lower bound could not hold
            raise ValueError(
                f"JudgeRanker: max_stuck_calls ({max_stuck_calls}) must be >= max_concurrency "
                f"({max_concurrency}): all the calls in flight may hang together; raise max_stuck_calls or "
                "lower max_concurrency"
            )
        self.name = name or f"judge:{getattr(self.chat, 'name', None) or type(self.chat).__name__}"
        self._threads = BackendThreads(self.max_stuck_calls, thread_prefix="blender-judge")

    def messages(self, question: str, answer_a: str, answer_b: str) -> list[Message]:
        """The messages of one judge call (``answer_a`` as assistant A)."""
        return judge_messages(self.prompt, question, answer_a, answer_b)

    def rank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        aggregation: str = "max_logits",
        show_progress: bool = False,
        seed: int | None = None,
    ) -> list[Ranking]:
        """Rank each prompt's candidates by judge calls (their number may differ per prompt).

        Args:
            strategy: ``full`` (n(n-1) calls), ``knockout`` / ``bubble`` (2(n-1), for the best), ``sort``
                (about 2 n log2 n, a full order); see :mod:`blender_core.ranking.strategies`.
            aggregation: ``max_logits`` or ``max_wins``; used by ``full``.
            show_progress: a progress bar over the comparisons.
            seed: the ``bubble`` order's random seed.

        Returns:
            one :class:`Ranking` per prompt, with the judge's summed token ``usage`` and its ``issues``.
        """
        session = self._session(prompts, candidates, strategy, aggregation)
        rounds = session.rounds(seed)
        with tqdm(disable=not show_progress, desc=f"judge ({strategy})", unit="cmp") as bar:
            try:
                asked = next(rounds)
                while True:
                    todo = session.todo(asked)
                    calls = {c: self._call(c) for c in todo}
                    outcomes = call_all(
                        calls,
                        name=self.name,
                        timeout=self.timeout,
                        max_concurrency=self.max_concurrency,
                        threads=self._threads,
                    )
                    bar.update(len(asked))
                    asked = rounds.send(session.answer(asked, outcomes))
            except StopIteration as stop:
                return session.rankings(*stop.value)

    async def arank(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        strategy: str = "full",
        aggregation: str = "max_logits",
        show_progress: bool = False,
        seed: int | None = None,
    ) -> list[Ranking]:
        """Async :meth:`rank`: the judge's ``acomplete`` calls run concurrently on the event loop (its
        ``complete`` in daemon threads when the chat sets ``blocking_async``)."""
        session = self._session(prompts, candidates, strategy, aggregation)
        rounds = session.rounds(seed)
        with tqdm(disable=not show_progress, desc=f"judge ({strategy})", unit="cmp") as bar:
            try:
                asked = next(rounds)
                while True:
                    todo = session.todo(asked)
                    calls = {c: self._acall(c) for c in todo}
                    outcomes = await acall_all(
                        calls,
                        name=self.name,
                        timeout=self.timeout,
                        max_concurrency=self.max_concurrency,
                        threads=self._threads,
                    )
                    bar.update(len(asked))
                    asked = rounds.send(session.answer(asked, outcomes))
            except StopIteration as stop:
                return session.rankings(*stop.value)

    # ---------------------------------------------------------------- helpers
    def _session(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], strategy: str, aggregation: str
    ) -> JudgeSession:
        p = check_prompts(prompts, "rank")
        cands = check_candidate_lists(p, candidates, "rank", 1)
        check_choice(strategy, strategies.STRATEGIES, "strategy")
        check_choice(aggregation, AGGREGATIONS, "aggregation")
        return JudgeSession(p, cands, strategy, aggregation)

    def _call(self, comparison: Comparison) -> Callable[[], Any]:
        messages = self.messages(*comparison)
        return lambda: self.chat.complete(messages)

    def _acall(self, comparison: Comparison) -> AsyncCall:
        messages = self.messages(*comparison)
        if getattr(self.chat, "blocking_async", False):
            return Blocking(lambda: self.chat.complete(messages))
        return lambda: self.chat.acomplete(messages)


def _check_timeout(timeout: Any) -> float | None:
    """``timeout`` if it is None or a positive number, else a ``ValueError`` naming it."""
    if timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        return timeout
    raise ValueError(f"JudgeRanker: timeout must be a positive number of seconds or None, got {timeout!r}")
