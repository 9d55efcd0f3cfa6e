"""The configs of the llm-blender drop-in: the reference's ``BlenderConfig``, ``RankerConfig`` and
``GenFuserConfig`` as frozen dataclasses, and the coercion that lets a dict or the reference's own config
object stand in for each.

Example:
    >>> coerce_config({"device": "cpu"}, BlenderConfig, "blender_config")
    BlenderConfig(device='cpu', use_tqdm=True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from blender_core.base.validation import check_choice


@dataclass(frozen=True)
class BlenderConfig:
    """The reference's ``BlenderConfig``: where to run and whether to show progress bars."""

    # None picks CUDA when available, else CPU (the reference defaults to "cuda" and fails without a GPU).
    device: str | None = None
    # Progress bars on long calls, as the reference; a call's ``disable_tqdm`` silences its own bar.
    use_tqdm: bool = True

    def __post_init__(self) -> None:
        if self.device is not None and not isinstance(self.device, str):
            raise TypeError(
                f"BlenderConfig.device must be a str such as 'cpu' or 'cuda', got {self.device!r}"
            )


@dataclass(frozen=True)
class RankerConfig:
    """The reference's ``RankerConfig`` fields, so that its configs and ``loadranker`` kwargs carry over.

    Used here: ``load_checkpoint``, ``cache_dir``, ``source_maxlength``, ``candidate_maxlength``, ``fp16`` and
    ``device``. The training fields are accepted and kept, with no effect on inference.
    """

    # Only PairRM ("pairranker") is supported; None means "whatever the checkpoint is" (checked on load).
    ranker_type: str | None = None
    # The backbone family and name: informational, the checkpoint's own files decide.
    model_type: str | None = None
    model_name: str | None = None
    # Passed to the hub download.
    cache_dir: str | Path | None = None
    # The ranker that ``Blender(ranker_config=...)`` loads.
    load_checkpoint: str | Path | None = None
    # None keeps the checkpoint's limits (PairRM: 1224 / 412 tokens).
    source_maxlength: int | None = None
    candidate_maxlength: int | None = None
    # Training-only settings of the reference, kept so that its configs convert; no effect here.
    n_tasks: int = 1
    num_pos: int = 1
    num_neg: int = 1
    sub_sampling_mode: str = "all_pair"
    sub_sampling_ratio: float = 0.5
    loss_type: str = "instructgpt"
    reduce_type: str = "linear"
    inference_mode: str = "bubble"
    drop_out: float = 0.05
    # Half precision on CUDA / MPS, as the reference does with PairRM's config; fp32 on CPU.
    fp16: bool = True
    # None: the ``loadranker`` argument, else the BlenderConfig's device.
    device: str | None = None

    def __post_init__(self) -> None:
        if self.ranker_type not in (None, "pairranker"):
            raise ValueError(
                f"ranker_type {self.ranker_type!r} is not supported; blender_core.compat loads PairRM "
                "('pairranker') checkpoints only"
            )
        for name in ("source_maxlength", "candidate_maxlength"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 4):
                raise ValueError(
                    f"RankerConfig.{name} must be an int >= 4 (special tokens take 3), got {value!r}"
                )


@dataclass(frozen=True)
class GenFuserConfig:
    """The reference's fuser settings (``llm_blender.GenFuserConfig``), as a frozen dataclass."""

    # The published fuser (Flan-T5-XL fine-tuned on MixInstruct).
    model_name: str = "llm-blender/gen_fuser_3b"
    cache_dir: str | None = None
    # Cap on the whole fuser input, in tokens (published: 1024).
    max_length: int = 1024
    # Tokens kept per candidate; also the default max_new_tokens (published: 128).
    candidate_maxlength: int = 128
    # bfloat16 as the reference, also on CPU, so that outputs match it.
    torch_dtype: str = "bfloat16"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    device: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.torch_dtype, ("float32", "float16", "bfloat16"), "torch_dtype")
        if self.max_length < 1 or self.candidate_maxlength < 1:
            raise ValueError(
                f"max_length and candidate_maxlength must be >= 1, got {self.max_length}, {self.candidate_maxlength}"
            )


_C = TypeVar("_C", BlenderConfig, RankerConfig, GenFuserConfig)


def field_names(cls: type) -> tuple[str, ...]:
    """The names of a config's fields, in order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def coerce_config(value: Any, cls: type[_C], what: str) -> _C:
    """Accept this module's config, a mapping, or the reference's config object (anything with ``to_dict``)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        raw = dict(value)
    elif hasattr(value, "to_dict"):  # the reference's dataclass_json configs
        raw = dict(value.to_dict())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        raw = dataclasses.asdict(value)
    else:
        raise TypeError(
            f"{what} must be a {cls.__name__}, a dict or llm_blender's config, got {type(value).__name__}"
        )
    unknown = sorted(set(raw) - set(field_names(cls)))
    if unknown:
        raise TypeError(
            f"{what} has unknown fields {unknown}; {cls.__name__} takes {', '.join(field_names(cls))}"
        )
    return cls(**raw)


def check_config_kwargs(kwargs: Mapping[str, Any], cls: type, fn: str) -> None:
    """A ``TypeError`` naming the keyword arguments of ``fn`` that are not fields of the config ``cls``."""
    unknown = sorted(set(kwargs) - set(field_names(cls)))
    if unknown:
        raise TypeError(
            f"{fn}() got unknown arguments {unknown}; it takes {cls.__name__} fields: {', '.join(field_names(cls))}"
        )
