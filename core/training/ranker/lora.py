"""LoRA through ``peft``: adapters on the encoder's Linear layers, the head and the four prefix rows trained."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import nn

from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel


def _require_peft() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise ImportError('LoRA training needs peft; install it with: pip install "blender-llm[train]"') from exc
    return peft


def lora_target_names(model: PairRMModel, suffixes: Sequence[str]) -> list[str]:
    """Full names of the encoder's ``nn.Linear`` modules whose last name part is one of ``suffixes`` (the unused pooler excluded)."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith("pretrained_model.")
        and ".pooler." not in name
        and name.rsplit(".", 1)[-1] in suffixes
    ]
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"no Linear layer of the encoder is named one of {list(suffixes)}; this encoder's Linear layers are "
            f"named {linear}: pass those as lora targets (CLI: --lora-targets)"
        )
    return names


def apply_lora(model: PairRMModel, *, r: int, alpha: int, dropout: float, targets: Sequence[str]) -> Any:
    """Wrap ``model`` in a ``peft`` LoRA model: adapters on ``targets``, the head fully trained, and the
    embedding rows of the four prefix tokens trained (``trainable_token_indices``); everything else frozen."""
    peft = _require_peft()
    ids = list(model.config.special_token_ids)
    emb_name = next(n for n, m in model.named_modules() if m is model.get_input_embeddings()).rsplit(".", 1)[-1]
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_names(model, targets),
        modules_to_save=["head_layer"],
        trainable_token_indices={emb_name: ids},
    )
    return peft.get_peft_model(model, config)


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merged_copy(model: Any) -> PairRMModel:
    """A plain :class:`PairRMModel` with the adapters merged in (the training model is left as it is)."""
    if not is_peft_model(model):
        return copy.deepcopy(model)
    merged = copy.deepcopy(model).merge_and_unload()
    assert isinstance(merged, PairRMModel)
    return merged
