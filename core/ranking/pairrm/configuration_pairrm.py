"""The PairRM configuration: a transformers config that holds the encoder's config and the ranker's settings."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

SOURCE_TOKEN = "<|source|>"
CANDIDATE1_TOKEN = "<|candidate1|>"
CANDIDATE2_TOKEN = "<|candidate2|>"
CANDIDATE_TOKEN = "<|candidate|>"
# Added to the encoder's tokenizer in this order, as the reference does: ids are len(base tokenizer) + 0..3.
SPECIAL_TOKENS = (SOURCE_TOKEN, CANDIDATE1_TOKEN, CANDIDATE2_TOKEN, CANDIDATE_TOKEN)


class PairRMConfig(PreTrainedConfig):
    """Configuration of a :class:`~blender_core.ranking.pairrm.modeling_pairrm.PairRMModel`.

    The encoder's own config lives in ``encoder_config`` (any ``AutoConfig``: DeBERTa-v2, BERT,
    RoBERTa, ELECTRA…); the fields below are the ranker's settings, saved with it.

    Example:
        >>> from transformers import BertConfig
        >>> cfg = PairRMConfig(encoder_config=BertConfig(hidden_size=32).to_dict(), source_maxlength=64)
        >>> cfg.candidate_maxlength
        412
    """

    model_type = "pairrm"
    sub_configs_defaults = {  # noqa: RUF012 - transformers reads it as a class attribute
        "encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="deberta-v2"),
    }

    encoder_config: dict | PreTrainedConfig | None = None
    # PairRM's published limits: 1224 + 2 x 412 = 2048 tokens per comparison.
    source_maxlength: int = 1224
    candidate_maxlength: int = 412
    # One task in every published checkpoint; the logit is the mean over tasks.
    n_tasks: int = 1
    # The reference head's dropout (inactive at inference).
    drop_out: float = 0.05
    # Ids of the four added tokens; set from the tokenizer when the ranker is built.
    source_prefix_id: int | None = None
    cand1_prefix_id: int | None = None
    cand2_prefix_id: int | None = None
    cand_prefix_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.source_maxlength < 4 or self.candidate_maxlength < 4:
            raise ValueError(
                f"source_maxlength={self.source_maxlength} and candidate_maxlength={self.candidate_maxlength} "
                "must both be at least 4 tokens (special tokens take 3)"
            )
        if self.n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {self.n_tasks}")

    @property
    def hidden_size(self) -> int:
        """The encoder's hidden size (the head reads 2 x hidden)."""
        assert isinstance(self.encoder_config, PreTrainedConfig)
        return int(self.encoder_config.hidden_size)

    @property
    def special_token_ids(self) -> tuple[int, int, int, int]:
        """(source, candidate1, candidate2, candidate) ids; an error if the config was never bound to a tokenizer."""
        ids = (self.source_prefix_id, self.cand1_prefix_id, self.cand2_prefix_id, self.cand_prefix_id)
        if any(i is None for i in ids):
            raise ValueError(
                "this PairRMConfig has no special-token ids; build the ranker with PairRanker.from_pretrained "
                "or blender_core.ranking.pairrm.build.build_pairrm_from_encoder, which set them from the tokenizer"
            )
        return ids  # type: ignore[return-value]
