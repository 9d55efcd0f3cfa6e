"""The price table of ``blender-llm calibrate``: per model, its ensemble settings (``tier``, ``price_in``,
``price_out``: :class:`~blender_core.ensemble.BackendSettings`, declared there once) and the latency proxy
the simulation uses in place of real latencies (``tokens_per_s``, ``first_token_s``).

.. code-block:: toml

    [models."claude-2"]
    price_in = 8.0        # per million input tokens
    price_out = 24.0      # per million output tokens
    tier = 2              # cascade tier (optional: see PriceTable.tiers)
    tokens_per_s = 40.0   # latency proxy: first_token_s + output tokens / tokens_per_s
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator
from typing_extensions import Self

from blender_core.ensemble.settings import BackendSettings


class ModelEntry(BackendSettings):
    """One model of the price table: its ensemble settings and its latency proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A typical hosted decode speed; what matters for a quorum is the models' order, which the proxy
    # takes from each answer's length and this speed.
    tokens_per_s: float = Field(default=50.0, gt=0, description="Output tokens per second (latency proxy).")
    # A typical time to the first token of a hosted API.
    first_token_s: float = Field(default=0.5, ge=0, description="Seconds to the first token (latency proxy).")

    @model_validator(mode="after")
    def _priced(self) -> Self:
        if self.price_in is None or self.price_out is None:
            raise ValueError("needs price_in and price_out (per million tokens): calibration weighs cost")
        if self.samples != 1:
            raise ValueError(f"samples={self.samples}: a pool holds one answer per model; leave samples out")
        return self

    def latency_s(self, output_tokens: int) -> float:
        """The simulated seconds of a call that answers ``output_tokens`` tokens."""
        return self.first_token_s + output_tokens / self.tokens_per_s

    def settings(self, *, tier: int | None = None) -> BackendSettings:
        """Its ensemble settings (``tier`` replaced when given)."""
        s = self.backend_settings()
        if tier is not None:
            s["tier"] = tier
        return BackendSettings(**s)


@dataclass(frozen=True)
class PriceTable:
    """The models of a price table, in file order; ``tiers_given``: whether the file set any ``tier``."""

    models: Mapping[str, ModelEntry]
    tiers_given: bool
    source: str = "prices"

    def price(self, name: str) -> float:
        """The model's price per million tokens in and out, summed (what orders models by price)."""
        m = self.models[name]
        return (m.price_in or 0.0) + (m.price_out or 0.0)

    def tiers(self) -> dict[str, int]:
        """Each model's cascade tier: as the file says, or (no ``tier`` anywhere) the cheaper half of the
        models (by price_in + price_out) in tier 1 and the rest in tier 2."""
        if self.tiers_given:
            return {name: m.tier for name, m in self.models.items()}
        by_price = sorted(self.models, key=lambda n: (self.price(n), n))
        half = (len(by_price) + 1) // 2
        return {name: 1 if by_price.index(name) < half else 2 for name in self.models}

    def check_models(self, pool_models: Sequence[str], pool: str) -> None:
        """Raise when the table names a model the pool lacks, or fewer than two of its models."""
        missing = [m for m in self.models if m not in pool_models]
        if missing:
            raise ValueError(
                f"{self.source} prices {', '.join(map(repr, missing))}, which {pool} does not hold; its models are "
                f"{', '.join(pool_models)}: fix the names or remove those entries"
            )
        if len(self.models) < 2:
            raise ValueError(f"{self.source} prices {len(self.models)} model(s); an ensemble needs at least 2")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the price table {str(path)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid TOML: {exc}") from None


def parse_prices(data: Mapping[str, Any], source: str = "the price table") -> PriceTable:
    """A price table from parsed TOML (``{"models": {name: {...}}}``).

    Raises:
        ValueError: no ``[models."…"]`` table, a wrong field (named), or tiers given for some models only.
    """
    extra = sorted(set(data) - {"models"})
    models = data.get("models")
    if extra or not isinstance(models, Mapping) or not models:
        raise ValueError(
            f"{source} needs one [models.\"NAME\"] table per model (price_in, price_out, optional tier, "
            f"tokens_per_s, first_token_s)" + (f"; unknown tables {extra}" if extra else "")
        )
    entries: dict[str, ModelEntry] = {}
    for name, fields in models.items():
        try:
            entries[str(name)] = ModelEntry(**dict(fields))
        except (ValidationError, TypeError) as exc:
            detail = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'entry'}: {str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            ) if isinstance(exc, ValidationError) else str(exc)
            raise ValueError(f"{source}: models.{name!r}: {detail}") from None
    given = [n for n, f in models.items() if "tier" in f]
    if given and len(given) != len(models):
        lacking = [n for n in models if n not in given]
        raise ValueError(
            f"{source} sets a tier for some models only; give {', '.join(map(repr, lacking))} a tier too, or "
            "remove every tier (the cheaper half then forms tier 1)"
        )
    return PriceTable(entries, bool(given), source)


def load_prices(path: str | Path) -> PriceTable:
    """Read a price table (TOML); see the module docstring for its format."""
    path = Path(path)
    return parse_prices(_read_toml(path), repr(str(path)))
