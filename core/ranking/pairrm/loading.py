"""Resolve and load PairRM checkpoints in the three layouts, strictly: reference, HF (PairRM-hf), native.

The config is checked against the weights' shapes (read from the file header) before the model is built
(:mod:`blender_core.ranking.pairrm.config_checks`), so a damaged config is an error naming the field, never an
absurd allocation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoTokenizer, DebertaV2Config, PreTrainedTokenizerBase

from blender_core.base.hub import HubOptions
from blender_core.ranking.pairrm.config_checks import check_pairrm_config, check_state_shapes, damaged_config
from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.encoding import add_pairrm_tokens
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.ranking.pairrm.weight_files import BIN, SAFETENSORS, load_bin, read_weight_shapes

logger = logging.getLogger(__name__)

WEIGHT_FILES = (SAFETENSORS, BIN)
# The fields PairRM-hf adds to a DebertaV2Config.
_HF_PAIRRM_FIELDS = (
    "n_tasks",
    "drop_out",
    "source_prefix_id",
    "cand1_prefix_id",
    "cand2_prefix_id",
    "cand_prefix_id",
)


def resolve_folder(name_or_path: str | Path, hub: HubOptions) -> Path:
    """A local folder as is; otherwise a hub snapshot (configs, tokenizer files and one weights file)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(
            f"{str(name_or_path)!r} is a file; pass the folder of a PairRM checkpoint or a hub id"
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.model", "*.txt", "*.safetensors"]
    try:
        folder = Path(snapshot_download(str(name_or_path), allow_patterns=patterns, **hub.as_kwargs()))
        if not (folder / "model.safetensors").exists():  # fall back to the .bin only when needed
            folder = Path(
                snapshot_download(
                    str(name_or_path), allow_patterns=[*patterns, "pytorch_model.bin"], **hub.as_kwargs()
                )
            )
    except Exception as exc:
        raise OSError(
            f"could not find {str(name_or_path)!r} as a local folder nor fetch it from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}). Pass a local checkpoint folder, or check the hub id, your network "
            "and, for a gated repo, your token (`token=` or $HF_TOKEN)"
        ) from exc
    return folder


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` (preferred) or ``pytorch_model.bin`` with ``weights_only=True``."""
    if (folder / SAFETENSORS).exists():
        from safetensors.torch import load_file

        return load_file(str(folder / SAFETENSORS))
    if (folder / BIN).exists():
        return load_bin(folder / BIN)
    raise ValueError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)}")


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is an error naming the keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, source)
    model.load_state_dict(state, strict=True)


def _reference_config(
    folder: Path, raw: dict[str, Any], hub: HubOptions
) -> tuple[PairRMConfig, PreTrainedTokenizerBase]:
    """Reference layout: the ranker config names the encoder (hub id or folder) whose config/tokenizer are used."""
    if raw.get("ranker_type") != "pairranker":
        raise ValueError(
            f"{folder} holds a {raw.get('ranker_type')!r} ranker; only 'pairranker' (PairRM) checkpoints are supported"
        )
    encoder = raw.get("model_name")
    if not encoder:
        raise ValueError(
            f"{folder}/config.json has no 'model_name' naming the encoder the ranker was built on"
        )
    # The encoder's revision is not recorded in the checkpoint: use the default branch, not the ranker's revision.
    enc_kwargs = {**hub.as_kwargs(), "revision": None}
    try:
        tokenizer = AutoTokenizer.from_pretrained(encoder, **enc_kwargs)
        enc_cfg = AutoConfig.from_pretrained(encoder, **enc_kwargs)
    except StrictDataclassError as exc:  # found, but a field has the wrong type
        raise damaged_config(f"{folder} (the config of encoder {encoder!r})", exc) from exc
    except Exception as exc:
        raise OSError(
            f"the ranker in {folder} is built on encoder {encoder!r}, which could not be loaded "
            f"({type(exc).__name__}: {exc}); make it reachable (network or a local folder) and, for a local "
            "copy, set 'model_name' in the ranker's config.json to that folder"
        ) from exc
    ids = add_pairrm_tokens(tokenizer)
    enc_cfg.vocab_size = len(tokenizer)  # the reference resizes the embeddings to the tokenizer
    config = PairRMConfig(
        encoder_config=enc_cfg.to_dict(),
        source_maxlength=int(raw.get("source_maxlength") or raw.get("source_max_length") or 1224),
        candidate_maxlength=int(raw.get("candidate_maxlength") or raw.get("candidate_max_length") or 412),
        n_tasks=int(raw.get("n_tasks", 1)),
        drop_out=float(raw.get("drop_out", 0.05)),
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
    )
    return config, tokenizer


def _checked_ids(
    folder: Path, tokenizer: PreTrainedTokenizerBase, stated: tuple[Any, ...]
) -> tuple[int, int, int, int]:
    """Add the prefix tokens and check their ids against the ones the config states."""
    ids = add_pairrm_tokens(tokenizer)
    if ids != stated:
        raise ValueError(
            f"{folder}: the tokenizer gives the prefix tokens ids {ids} but config.json states {stated}; "
            "the tokenizer files do not belong to this checkpoint"
        )
    return ids


def _hf_config(folder: Path, raw: dict[str, Any]) -> tuple[PairRMConfig, PreTrainedTokenizerBase]:
    """PairRM-hf layout: a DebertaV2Config with the PairRM fields, tokenizer files alongside."""
    enc_raw = {k: v for k, v in raw.items() if k not in (*_HF_PAIRRM_FIELDS, "architectures", "sep_token_id")}
    try:
        enc_cfg = DebertaV2Config(**{k: v for k, v in enc_raw.items() if k != "model_type"})
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise damaged_config(str(folder / "config.json"), exc) from exc
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = _checked_ids(folder, tokenizer, tuple(raw.get(k) for k in _HF_PAIRRM_FIELDS[2:]))
    config = PairRMConfig(
        encoder_config=enc_cfg.to_dict(),
        n_tasks=int(raw.get("n_tasks", 1)),
        drop_out=float(raw.get("drop_out", 0.05)),
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
    )
    return config, tokenizer


def _native_config(folder: Path) -> tuple[PairRMConfig, PreTrainedTokenizerBase]:
    try:
        config = PairRMConfig.from_pretrained(folder)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise damaged_config(str(folder / "config.json"), exc) from exc
    tokenizer = AutoTokenizer.from_pretrained(folder)
    _checked_ids(folder, tokenizer, config.special_token_ids)
    return config, tokenizer


def detect_layout(folder: Path) -> tuple[str, dict[str, Any]]:
    """Return ('reference' | 'hf' | 'native', raw config) or raise naming what the folder holds."""
    for name in ("config.json", "ranker_config.json"):
        if (folder / name).exists():
            raw = json.loads((folder / name).read_text())
            break
    else:
        raise ValueError(
            f"{folder} is not a ranker checkpoint: it has no config.json. Expected a PairRM folder "
            "(llm-blender/PairRM, PairRM-hf, pair-ranker, one written by PairRanker.save_pretrained, or the compact/ "
            "folder of a LoRA training run)"
        )
    if raw.get("model_type") == PairRMConfig.model_type:
        return "native", raw
    if "ranker_type" in raw:
        return "reference", raw
    if "DebertaV2PairRM" in (raw.get("architectures") or []) or "cand1_prefix_id" in raw:
        return "hf", raw
    raise ValueError(
        f"{folder} is not a ranker checkpoint: its config.json is a {raw.get('model_type')!r} model config "
        f"(architectures {raw.get('architectures')}). Load a PairRM checkpoint, or build a new ranker on this "
        "encoder with `blender-llm train-ranker --encoder` / blender_core.ranking.pairrm.modeling_pairrm.PairRMModel"
    )


def load_pairrm(
    name_or_path: str | Path, hub: HubOptions
) -> tuple[PairRMModel, PreTrainedTokenizerBase, str]:
    """Load model (fp32, CPU, eval mode) and tokenizer from any of the three layouts; returns the layout too."""
    folder = resolve_folder(name_or_path, hub)
    layout, raw = detect_layout(folder)
    if layout == "reference":
        config, tokenizer = _reference_config(folder, raw, hub)
        source = f"{folder} (the config of encoder {raw.get('model_name')!r}; vocab_size counted from its tokenizer)"
    else:
        config, tokenizer = _hf_config(folder, raw) if layout == "hf" else _native_config(folder)
        source = str(folder / "config.json")
    shapes = read_weight_shapes(folder)
    if shapes is None:
        raise ValueError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    check_pairrm_config(config, shapes, source, str(folder))  # before anything is allocated
    state = read_state_dict(folder)
    model = PairRMModel(config)
    load_state_strict(model, state, str(folder))
    logger.info("loaded a %s-layout PairRM from %s", layout, folder)
    return model.eval(), tokenizer, layout
