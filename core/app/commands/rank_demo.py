"""``blender-llm rank-examples``: rank a few built-in candidate sets and print the rankings."""

from __future__ import annotations

import time

import typer

from blender_core.app.commands._ranker import DEFAULT_STRATEGY, Device, Model, Strategy
from blender_core.app.commands._threads import NumThreads, set_torch_threads

EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "What is the capital of France?",
        (
            "The capital of France is Paris.",
            "Paris.",
            "France's capital is Lyon.",
            "I am not sure, maybe Marseille or Paris.",
        ),
    ),
    (
        "Write a haiku about autumn leaves.",
        (
            "Crimson leaves drifting\nwhispers on the cooling wind\nthe year exhales slow",
            "Leaves are red. They fall.",
            "Autumn is a season that comes after summer and before winter.",
        ),
    ),
    (
        "Give me a Python one-liner that reverses a string s.",
        (
            "s[::-1]",
            "Use ''.join(reversed(s)) or simply s[::-1].",
            "Python cannot reverse strings.",
            "for c in s: print(c)",
            "reversed = s.reverse()",
        ),
    ),
)


def register(app: typer.Typer) -> None:
    @app.command("rank-examples")
    def rank_examples(
        model: Model = None,
        strategy: Strategy = DEFAULT_STRATEGY,
        device: Device = None,
        num_threads: NumThreads = 0,
    ) -> None:
        """Rank a few built-in candidate sets with a ranker and print the rankings."""
        from blender_core.app.commands._ranker import device_of, ranker_from_option

        set_torch_threads(num_threads)
        start = time.perf_counter()
        ranker, shown = ranker_from_option(model, device=device)
        typer.echo(f"ranker: {shown} (loaded in {time.perf_counter() - start:.1f} s, {device_of(ranker)})")
        prompts = [p for p, _ in EXAMPLES]
        candidates = [list(c) for _, c in EXAMPLES]
        start = time.perf_counter()
        rankings = ranker.rank(prompts, candidates, strategy=strategy)
        for prompt, cands, ranking in zip(prompts, candidates, rankings, strict=True):
            typer.echo(f"\n{prompt}")
            for c in ranking.candidates(cands):
                text = c.text.replace("\n", " / ")
                typer.echo(f"  #{c.rank}  {c.score:+.3f}  {text[:70]}")
        typer.echo(
            f"\nranked {sum(map(len, candidates))} candidates in {time.perf_counter() - start:.2f} s ({strategy})"
        )
