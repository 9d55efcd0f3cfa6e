"""The PairRM cross-encoder as a transformers model: encoder + pooling at the three prefix tokens + MLP head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.windowed_attention import use_windowed_attention

#: rows the head runs on at once: every block has this shape (the last one zero-filled), so that the GEMM
#: kernel, and with it the rounding of each row, does not depend on how many rows the batch holds
HEAD_ROWS = 16


@dataclass
class PairRMOutput(ModelOutput):
    """Output of :class:`PairRMModel`.

    ``logits`` is mean over tasks of head([s; c1]) - head([s; c2]): > 0 means candidate 1 is better.
    ``left_scores`` / ``right_scores`` are the per-side head outputs (batch, n_tasks), which the BCE and
    MSE losses need.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    left_scores: torch.Tensor | None = None
    right_scores: torch.Tensor | None = None


class PairRMModel(PreTrainedModel):
    """PairRM: reads ``[CLS] <|source|> s [SEP] [CLS] <|candidate1|> a [SEP] [CLS] <|candidate2|> b [SEP]``.

    State-dict keys are those of the published checkpoints: ``pretrained_model.*`` (the encoder) and
    ``head_layer.{1,4}.*`` (the head), so the reference files load with strict key checking.

    Example:
        >>> from transformers import BertConfig
        >>> enc = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=32)
        >>> model = PairRMModel(PairRMConfig(encoder_config=enc.to_dict(), source_prefix_id=36,
        ...                     cand1_prefix_id=37, cand2_prefix_id=38, cand_prefix_id=39))
        >>> ids = torch.tensor([[1, 36, 5, 2, 1, 37, 6, 2, 1, 38, 7, 2]])
        >>> model(input_ids=ids).logits.shape
        torch.Size([1])
    """

    config_class = PairRMConfig
    base_model_prefix = "pretrained_model"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []  # noqa: RUF012 - transformers reads it as a class attribute

    def __init__(self, config: PairRMConfig) -> None:
        super().__init__(config)
        self.pretrained_model = AutoModel.from_config(config.encoder_config)
        hidden = config.hidden_size
        # Indices 1 and 4 are the Linear layers: their names are part of the published checkpoint format.
        self.head_layer = nn.Sequential(
            nn.Dropout(config.drop_out),
            nn.Linear(2 * hidden, hidden),
            nn.Tanh(),
            nn.Dropout(config.drop_out),
            nn.Linear(hidden, config.n_tasks),
        )
        self.post_init()
        use_windowed_attention(self.pretrained_model)  # the same scores, less work on short texts (CPU)

    def get_input_embeddings(self) -> nn.Module:
        return self.pretrained_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.pretrained_model.set_input_embeddings(value)

    def _prefix_positions(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """First position of each prefix token per row; an error if a row lacks one."""
        src_id, c1_id, c2_id, _ = self.config.special_token_ids
        found = []
        for token_id, name in ((src_id, "<|source|>"), (c1_id, "<|candidate1|>"), (c2_id, "<|candidate2|>")):
            hits = input_ids == token_id  # (batch, seq)
            if not bool(hits.any(dim=1).all()):
                raise ValueError(
                    f"a row of input_ids has no {name} token (id {token_id}); build inputs with "
                    "PairRanker's encoder (blender_core.ranking.pairrm.encoding.PairEncoder), which lays out the three prefixes"
                )
            found.append(hits.int().argmax(dim=1))
        return found[0], found[1], found[2]

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The head on (rows, 2 hidden) in blocks of :data:`HEAD_ROWS` rows of one shape: a row's output
        is then the same bits whatever else the batch holds (a (1, k) @ (k, n) product and a (2, k) one
        round differently on CPU), so equal-length comparisons score the same alone or batched."""
        n = x.shape[0]
        pad = -n % HEAD_ROWS
        if pad:
            x = torch.cat([x, x.new_zeros(pad, x.shape[1])])  # (blocks * HEAD_ROWS, 2 hidden)
        return torch.cat([self.head_layer(block) for block in x.split(HEAD_ROWS)])[:n]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: object,
    ) -> PairRMOutput:
        """Score a batch of comparisons.

        Args:
            input_ids: (batch, seq) ids laid out as in the class docstring.
            attention_mask: (batch, seq); ones where not padding.
            labels: optional (batch,) float: > 0 candidate 1 better, < 0 candidate 2 better; gives the
                "instructgpt" loss -log sigmoid(sign(label) * logit).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        src_pos, c1_pos, c2_pos = self._prefix_positions(input_ids)
        hidden = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        s, c1, c2 = hidden[rows, src_pos], hidden[rows, c1_pos], hidden[rows, c2_pos]  # (batch, hidden) each
        pairs = torch.cat([torch.cat([s, c1], dim=-1), torch.cat([s, c2], dim=-1)])  # (2 batch, 2 hidden)
        both = self._head(pairs)  # (2 batch, n_tasks)
        left, right = both[: hidden.shape[0]], both[hidden.shape[0] :]  # (batch, n_tasks) each
        logits = (left - right).mean(dim=-1)  # (batch,)
        loss = None
        if labels is not None:
            sign = labels.to(left.dtype).sign().unsqueeze(-1)  # (batch, 1)
            loss = -nn.functional.logsigmoid(sign * (left - right)).mean()
        return PairRMOutput(loss=loss, logits=logits, left_scores=left, right_scores=right)


def _register() -> None:
    """Make native checkpoints loadable through AutoConfig / AutoModel too (no remote code needed)."""
    from transformers import AutoConfig

    try:
        AutoConfig.register(PairRMConfig.model_type, PairRMConfig)
        AutoModel.register(PairRMConfig, PairRMModel)
    except ValueError:  # already registered (module reloaded)
        pass


_register()
