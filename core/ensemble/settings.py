"""Every setting of the ensemble engine, declared once: its type, default, bounds and description.

:class:`EnsembleSettings` is the one declaration. The engine's :class:`EnsembleConfig` is it, frozen; the
LangChain and LlamaIndex ``BlenderLLM`` inherit it as their fields; the server's ``[ensemble]`` section
inherits it with unknown keys refused. A setting added here therefore appears on every surface with the
same default and the same error (``tests/core/ensemble/test_settings.py`` compares them).

Each check runs on the value as given (before pydantic converts it), so that ``True`` is not taken for
``1`` nor ``"3"`` for ``3``, and every surface says the same thing about a bad value.

Example:
    >>> EnsembleConfig(top_k=2, timeout=10).fusion_deadline
    10.0
    >>> EnsembleConfig(timeout=float("nan"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for EnsembleConfig
    timeout
      Value error, timeout must be a positive, finite number of seconds or None, got nan ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from typing_extensions import Self

from blender_core.base.validation import check_choice
from blender_core.ensemble.pipeline import check_top_k
from blender_core.ranking.strategies import STRATEGIES


def _name(info: ValidationInfo) -> str:
    return info.field_name or "value"


def _seconds(value: Any, info: ValidationInfo) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (number and math.isfinite(value) and value > 0):
        raise ValueError(
            f"{_name(info)} must be a positive, finite number of seconds or None, got {value!r}"
        )
    return value


def _count(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{_name(info)} must be an int >= 1, got {value!r}")
    return value


def _count_or_none(value: Any, info: ValidationInfo) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{_name(info)} must be an int >= 1 or None, got {value!r}")
    return value


def _strategy(value: Any) -> Any:
    return check_choice(value, STRATEGIES, "strategy")


def _seconds_or_zero(value: Any, info: ValidationInfo) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value >= 0):
        raise ValueError(f"{_name(info)} must be a finite number of seconds >= 0, got {value!r}")
    return value


def _milliseconds(value: Any, info: ValidationInfo) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 <= value <= 1000):
        raise ValueError(f"{_name(info)} must be a number of milliseconds from 0 to 1000, got {value!r}")
    return value


def _amount(value: Any, info: ValidationInfo) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (number and math.isfinite(value) and value >= 0):
        raise ValueError(f"{_name(info)} must be a finite number >= 0 or None, got {value!r}")
    return value


def _threshold(value: Any, info: ValidationInfo) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (number and math.isfinite(value)):
        raise ValueError(f"{_name(info)} must be a finite number or None, got {value!r}")
    return value


def _flag(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"{_name(info)} must be true or false, got {value!r}")
    return value


#: seconds, or None for no limit
Seconds = Annotated[float | None, BeforeValidator(_seconds)]
#: a count of at least one
Count = Annotated[int, BeforeValidator(_count)]
#: a count of at least one, or None for no limit
CountOrNone = Annotated[int | None, BeforeValidator(_count_or_none)]
Flag = Annotated[bool, BeforeValidator(_flag)]
#: seconds, zero included
Grace = Annotated[float, BeforeValidator(_seconds_or_zero)]
#: an amount (of money), or None for none set
Amount = Annotated[float | None, BeforeValidator(_amount)]
#: any finite number, or None
Threshold = Annotated[float | None, BeforeValidator(_threshold)]


class EnsembleSettings(BaseModel):
    """How the ensemble asks its backends, ranks their answers and fuses the best (the one declaration)."""

    top_k: Annotated[int, BeforeValidator(check_top_k)] = Field(
        default=3, description="Answers handed to the fuser (the paper fuses the top 3)."
    )
    strategy: Annotated[str, BeforeValidator(_strategy)] = Field(
        default="full",
        description="Ranking strategy: full (all pairs, best for the few backends an ensemble has), "
        "knockout, bubble or sort (cheaper for many).",
    )
    # Finite by default: an ensemble drops a hung backend and answers with the others; 30 s covers a
    # typical answer of a hosted model. None waits as long as the backends take.
    timeout: Seconds = Field(
        default=30.0,
        description="Seconds each backend call may take from its start (None: no limit); also the fuser's "
        "time to its first token, and by default its whole time (fusion_timeout).",
    )
    min_successes: Count = Field(
        default=1, description="Fewer answers than this fail the call (one answer is enough to reply)."
    )
    max_concurrency: CountOrNone = Field(
        default=None, description="At most this many backend calls at once (None: all at once)."
    )
    fusion_timeout: Seconds = Field(
        default=None,
        description="Seconds the whole fusion may take (None: timeout); past it a fusion not yet shown "
        "falls back to the top-ranked answer, and a streamed one ends where it stands.",
    )
    # 2 lets one slow call pass without ever piling up threads behind a hung backend.
    max_stuck_calls: Count = Field(
        default=2,
        description="Calls of a backend still running past their timeout before it is skipped at once.",
    )
    # A lone call never waits: the window only holds calls that queued behind a running forward pass, and
    # 2 ms is a small part of a tiny ranker's ~5 ms pass while letting requests that end together share it.
    rank_batch_window_ms: Annotated[float, BeforeValidator(_milliseconds)] = Field(
        default=2.0,
        description="Cross-request batching: a rank call that finds the ranker busy waits up to this many "
        "milliseconds from its arrival for other requests' calls, then all run as one batched forward pass "
        "(each gets exactly the scores it gets alone); a call with nobody waiting runs at once.",
    )
    # 16 matches the concurrency a small server runs at; a batch is still split into forward passes of the
    # ranker's own batch_size.
    rank_max_batch: Count = Field(
        default=16,
        description="The most rank calls (requests) batched together; 1 turns cross-request batching off.",
    )
    fallback_on_fuser_error: Flag = Field(
        default=True,
        description="When the fuser fails before its first token (or, not streaming, at all), answer with "
        "the top-ranked answer and say why; false raises FusionError.",
    )

    # --------------------------------------------------------- adaptive ensembles
    quorum: CountOrNone = Field(
        default=None,
        description="Rank and answer as soon as this many backends of a round have answered; the calls "
        "still running are cancelled (None: wait for every backend).",
    )
    quorum_grace: Grace = Field(
        default=0.0,
        description="Seconds to wait for further answers once the quorum is in.",
    )
    accept_score: Threshold = Field(
        default=None,
        description="Cascade acceptance (backends in tiers): a ranker with absolute scores (a reward "
        "model) accepts a tier when its top candidate scores at least this; a pairwise ranker when the top "
        "candidate beats each other candidate of its tier by at least this both-order margin "
        "(M[top, j] - M[j, top]: each pair asked in both orders, so position bias cancels). "
        "None: a tier is accepted when it answered at all (the next tier is a fallback).",
    )
    layers: Count = Field(
        default=1,
        description="Mixture-of-Agents layers: each layer's backends see the previous layer's top_k "
        "answers in their prompt; the last layer is ranked and fused.",
    )
    max_cost: Amount = Field(
        default=None,
        description="Stop escalating (no further tier, no further layer) once the request has spent this "
        "much, priced by the backends' price_in / price_out (None: no limit).",
    )

    # --------------------------------------------------------- observability
    # Off: prompts and answers are the user's data; a trace backend is often shared more widely.
    trace_content: Flag = Field(
        default=False,
        description="Put the prompt and the answers (every candidate's, the fused one) in the OpenTelemetry "
        "spans, as gen_ai.input.messages / gen_ai.output.messages (false: names, scores and counts only).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.quorum is not None and self.quorum < self.min_successes:
            raise ValueError(
                f"quorum ({self.quorum}) must be >= min_successes ({self.min_successes}): the answer comes "
                "once the quorum is in, and fewer answers than min_successes fail the call"
            )
        return self

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The names of the ensemble settings (those declared here, not a subclass's own fields)."""
        return tuple(EnsembleSettings.model_fields)

    def ensemble_settings(self) -> dict[str, Any]:
        """This object's ensemble settings, by name."""
        return {name: getattr(self, name) for name in EnsembleSettings.model_fields}


class BackendSettings(BaseModel):
    """How the ensemble uses one backend (the one declaration: the adapters' ``Backend`` wrapper and the
    server's ``[[backends]]`` tables are built from it)."""

    tier: Count = Field(
        default=1,
        description="Cascade tier: tier 1 is asked first; a higher tier only when the ones before it are "
        "not accepted (accept_score).",
    )
    samples: Count = Field(
        default=1,
        description="Answers asked of this backend per round (with distinct seeds where it takes one), "
        "ranked with the rest as backend#1..n.",
    )
    price_in: Amount = Field(default=None, description="Price per million input tokens (None: unknown).")
    price_out: Amount = Field(default=None, description="Price per million output tokens (None: unknown).")

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The names of the per-backend settings."""
        return tuple(BackendSettings.model_fields)

    def backend_settings(self) -> dict[str, Any]:
        """This object's per-backend settings, by name."""
        return {name: getattr(self, name) for name in BackendSettings.model_fields}

    def cost(self, usage: Mapping[str, int] | None) -> float | None:
        """What a call with this ``usage`` cost, or None when a price or the usage is unknown."""
        if usage is None or self.price_in is None or self.price_out is None:
            return None
        tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000


class Backend(BackendSettings):
    """A backend (a chat model, an LLM, any model an adapter takes) with its ensemble settings.

    Example:
        >>> Backend("gpt-4o-stand-in", tier=2, price_in=2.5, price_out=10.0).tier
        2
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    model: Any = Field(description="The backend itself, as the adapter takes it.")

    def __init__(self, model: Any, **settings: Any) -> None:
        super().__init__(**{"model": model, **settings})

    def settings(self) -> BackendSettings:
        """Its settings without the model."""
        return BackendSettings(**self.backend_settings())


def unwrap(backend: Any) -> Any:
    """The model of a :class:`Backend`, or the object itself."""
    return backend.model if isinstance(backend, Backend) else backend


def split_backends(named: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, BackendSettings]]:
    """Named backends (some wrapped in :class:`Backend`) as the models by name and the settings of those
    that have any."""
    models = {name: unwrap(b) for name, b in named.items()}
    settings = {name: b.settings() for name, b in named.items() if isinstance(b, Backend)}
    return models, settings


class EnsembleConfig(EnsembleSettings):
    """The engine's settings, frozen (see :class:`EnsembleSettings` for each one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def fusion_deadline(self) -> float | None:
        """Seconds the whole fusion may take: ``fusion_timeout``, else ``timeout``."""
        return self.fusion_timeout if self.fusion_timeout is not None else self.timeout

    @classmethod
    def of(cls, settings: EnsembleSettings) -> EnsembleConfig:
        """The engine config of an object that carries the settings (an adapter, a config section)."""
        return cls(**settings.ensemble_settings())
