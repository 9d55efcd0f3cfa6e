"""Load a fuser from a name: the local SmolLM2, or any folder / hub id (seq2seq → GenFuser, causal → LLMFuser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import BaseFuser

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
    :class:`~blender_core.fusers.seq2seq.GenFuser`, anything else a causal
    :class:`~blender_core.fusers.causal.LLMFuser`. ``kwargs`` go to the fuser (``device``, ``dtype``,
    ``top_k``, ``candidate_maxlength``, ``batch_size``, ``generate_kwargs``, ...).

    Example:
        >>> fuser = load_fuser("smollm2", top_k=3)  # doctest: +SKIP
    """
    if str(name_or_path) in LOCAL_NAMES:
        from ..local_models import smollm2_fuser

        return smollm2_fuser(**kwargs)
    from transformers import AutoConfig

    hub: dict[str, Any] = {
        "revision": revision,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "token": token,
    }
    try:
        config = AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=False, **hub)
    except (OSError, ValueError) as exc:
        raise type(exc)(
            f"could not read a model config from {str(name_or_path)!r} ({exc}); pass 'smollm2', a local model "
            "folder or a hub id"
        ) from exc
    if getattr(config, "is_encoder_decoder", False):
        from .seq2seq import GenFuser

        return GenFuser.from_pretrained(name_or_path, **hub, **kwargs)
    from .causal import LLMFuser

    return LLMFuser.from_pretrained(name_or_path, **hub, **kwargs)
