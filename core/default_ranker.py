"""The built-in offline default ranker (shipped with the package); filled in by the training issue."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .modeling_pairrm import PairRMModel

DEFAULT_RANKER = "builtin:pairrm-minilm-l6"
BUILTIN_NAMES: tuple[str, ...] = ()


def is_builtin(name_or_path: str | Path) -> bool:
    return str(name_or_path) in BUILTIN_NAMES


def load_builtin(name: str) -> tuple[PairRMModel, PreTrainedTokenizerBase]:
    raise ValueError(f"no built-in ranker named {name!r}; built-in names: {', '.join(BUILTIN_NAMES) or 'none'}")
