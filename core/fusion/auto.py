"""Load a fuser from a name: the local SmolLM2, or any folder / hub id (seq2seq → GenFuser, causal → LLMFuser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blender_core.base.hub import HubOptions
from blender_core.fusion.base import BaseFuser
from blender_core.fusion.causal import LLMFuser
from blender_core.local_models import load_smollm2

LOCAL_NAMES = ("smollm2", "builtin:smollm2")


def load_fuser(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    **kwargs: Any,
) -> BaseFuser:
    """A fuser for ``name_or_path``.

    ``"smollm2"`` is the local SmolLM2-135M-Instruct (needs ``blender-llm[local]``). Otherwise the model's
    config decides: an encoder-decoder (T5 family, e.g. ``llm-blender/gen_fuser_3b``) gives a
    :class:`~blender_core.fusion.seq2seq.GenFuser`, anything else a causal
    :class:`~blender_core.fusion.causal.LLMFuser`. ``kwargs`` go to the fuser (``device``, ``dtype``,
    ``candidate_maxlength``, ``batch_size``, ``generate_kwargs``, ...).

    Example:
        >>> fuser = load_fuser("smollm2")  # doctest: +SKIP
    """
    if str(name_or_path) in LOCAL_NAMES:
        return smollm2_fuser(**kwargs)
    from transformers import AutoConfig

    hub = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    try:
        config = AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=False, **hub.as_kwargs())
    except (OSError, ValueError) as exc:
        raise type(exc)(
            f"could not read a model config from {str(name_or_path)!r} ({exc}); pass 'smollm2', a local model "
            "folder or a hub id"
        ) from exc
    if getattr(config, "is_encoder_decoder", False):
        from blender_core.fusion.seq2seq import GenFuser

        return GenFuser.from_pretrained(name_or_path, **hub.as_kwargs(), **kwargs)

    return LLMFuser.from_pretrained(name_or_path, **hub.as_kwargs(), **kwargs)


def smollm2_fuser(**kwargs: Any) -> LLMFuser:
    """An :class:`~blender_core.fusion.causal.LLMFuser` over the local SmolLM2 (``kwargs`` go to ``LLMFuser``)."""
    device = kwargs.pop("device", None)
    model, tokenizer = load_smollm2(device=device)
    kwargs.setdefault("name", "smollm2-135m-instruct")
    return LLMFuser(model, tokenizer, **kwargs)
