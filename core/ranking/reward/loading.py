"""Load a reward model for :class:`~blender_core.ranking.reward.RewardModelRanker`, strictly and never with
remote code: any transformers ``AutoModelForSequenceClassification`` with one output and a chat template.

The checks run before the weights are read where they can (remote code, number of labels, chat template),
and the load itself is strict: a missing weight (e.g. a causal LM's checkpoint loaded as a classifier, whose
reward head would be random), an unexpected or a mis-shaped one is an error naming the keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.tokenization_auto import get_tokenizer_config

from blender_core.base.hub import HubOptions
from blender_core.ranking.windowed_attention import use_windowed_attention

logger = logging.getLogger(__name__)

_REMOTE_CODE_HELP = (
    "This ranker never runs code downloaded with a model (trust_remote_code). Use a reward model that "
    "transformers supports natively (e.g. a Llama, Qwen2, Mistral or Gemma *ForSequenceClassification), or "
    "convert this one to such a class and save it with save_pretrained"
)


class RemoteCodeError(ValueError):
    """The model needs code shipped with it (``trust_remote_code``), which the reward ranker never runs."""


def refuse_remote_code(source: str, auto_map: Any) -> None:
    """Raise :class:`RemoteCodeError` if a config file maps auto classes to code shipped with the model."""
    if auto_map:
        shown = (
            ", ".join(f"{k} -> {v}" for k, v in auto_map.items()) if isinstance(auto_map, dict) else auto_map
        )
        raise RemoteCodeError(
            f"{source} has an auto_map ({shown}): it needs remote code. {_REMOTE_CODE_HELP}"
        )


def _hub_call(what: str, name: str, call: Any, hub: HubOptions, **kwargs: Any) -> Any:
    """``call(name, ...)`` with the hub options; transformers' errors become ones that say what to do."""
    try:
        return call(name, **hub.as_kwargs(), **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "does not recognize this architecture" in str(exc):
            raise RemoteCodeError(
                f"the {what} of {name!r} is not a class transformers {transformers.__version__} knows "
                f"({str(exc).splitlines()[0]}): it needs remote code, or a newer transformers. "
                + _REMOTE_CODE_HELP
            ) from exc
        raise
    except OSError as exc:
        raise OSError(
            f"could not load the {what} of {name!r} from a local folder nor the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Pass an existing folder, or check the hub id, your network and, "
            "for a gated repo, your token (`token=` or $HF_TOKEN)"
        ) from exc


def check_reward_model(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """A reward model has one output (``num_labels == 1``) and its tokenizer has a chat template."""
    if config.num_labels != 1:
        raise ValueError(
            f"{name!r} has {config.num_labels} output labels ({config.id2label}); a reward model has one "
            "output (num_labels=1), its reward. A classifier with several labels is not a reward model"
        )
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {name!r} has no chat template, so a conversation cannot be written the way the "
            "model was trained. Add the model's template (chat_template.jinja or 'chat_template' in "
            "tokenizer_config.json), or set tokenizer.chat_template and build RewardModelRanker(model, tokenizer)"
        )


def resolve_pad_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> int:
    """The padding id: the model config's ``pad_token_id``, else the tokenizer's pad token, else its eos
    token; a config without one gets it, since transformers' classifiers read each row's reward at its last
    token that is not the pad id."""
    text_config = model.config.get_text_config()
    pad_id = text_config.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError(
                f"{name!r} has no pad token: neither model.config.pad_token_id, nor the tokenizer's pad_token "
                "or eos_token is set. Set tokenizer.pad_token (or model.config.pad_token_id) to the token the "
                "model was trained to pad with"
            )
        logger.info("%s: padding with token id %d, written to model.config.pad_token_id", name, pad_id)
        text_config.pad_token_id = pad_id
        model.config.pad_token_id = pad_id
    if isinstance(pad_id, (list, tuple)):  # some configs list several; the first is the one that pads
        pad_id = pad_id[0]
    return int(pad_id)


def load_reward_model(
    name_or_path: str | Path, hub: HubOptions, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model (``dtype``, CPU, eval mode) and tokenizer from a hub id or a folder, strictly."""
    path = Path(name_or_path).expanduser()
    name = str(path) if path.exists() else str(name_or_path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name!r} is a file; pass the folder of a reward model or its hub id")
    raw, _ = _hub_call("config", name, PretrainedConfig.get_config_dict, hub)
    refuse_remote_code(f"the config.json of {name!r}", raw.get("auto_map"))
    tok_raw = _hub_call("tokenizer config", name, get_tokenizer_config, hub)
    refuse_remote_code(f"the tokenizer_config.json of {name!r}", tok_raw.get("auto_map"))
    config = _hub_call("config", name, AutoConfig.from_pretrained, hub, trust_remote_code=False)
    tokenizer = _hub_call("tokenizer", name, AutoTokenizer.from_pretrained, hub, trust_remote_code=False)
    check_reward_model(config, tokenizer, name)
    try:
        model, info = _hub_call(
            "model", name, AutoModelForSequenceClassification.from_pretrained, hub,
            config=config, dtype=dtype, output_loading_info=True, trust_remote_code=False,
        )  # fmt: skip
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ValueError(
                f"{name!r} is a {config.model_type!r} model, which has no sequence-classification class in "
                "transformers; a reward model is an AutoModelForSequenceClassification with one output"
            ) from exc
        raise
    wrong = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(wrong.values()):
        shown = "; ".join(
            f"{k.replace('_', ' ')}: {', '.join(map(str, v[:8]))}" for k, v in wrong.items() if v
        )
        raise ValueError(
            f"the weights of {name!r} do not match a {type(model).__name__} ({shown}). A missing reward head "
            "means the checkpoint is not a reward model (e.g. a chat model's); load a trained reward model"
        )
    use_windowed_attention(model)  # DeBERTa-v2 reward models: the same scores, less work on short texts
    return model.eval(), tokenizer
