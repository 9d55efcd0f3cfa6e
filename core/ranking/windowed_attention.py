"""DeBERTa-v2's relative attention computed on the relative positions a sequence uses, not all of them.

transformers' ``DisentangledSelfAttention.disentangled_attention_bias`` scores every query and key against
all ``2 * position_buckets`` relative-position embeddings (512 for PairRM), then keeps the ones its
sequence has. A sequence of ``L`` tokens has relative positions in ``[-(L-1), L-1]`` (fewer once bucketed),
so for short texts most of the two largest products of the layer are thrown away: with the tiny test
ranker and three short answers they were 41 % of a forward pass. :func:`windowed_attention_bias` slices
the position embeddings to the window the sequence's relative positions fall in before those products,
and offsets the gather indices: every kept score is the same dot product, so the output is the same bits
(checked in ``tests/core/ranking/test_windowed_attention.py``), at a fraction of the work for short
sequences (a 500-token PairRM input uses nearly all of them, and gains nothing).

On CPU only: the window's bounds are read from the relative positions, which on an accelerator would wait
for the device once per layer; there the original runs. PairRM models and the reward models this package loads use it. :func:`use_windowed_attention` turns a model's
DeBERTa-v2 attention layers into :class:`WindowedSelfAttention` (a subclass: weights, state dict and pickling
unchanged), and leaves any other model (and a transformers version whose attention lacks the helpers this
relies on) as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: the narrowest window cut: a narrower product (and one of fewer than MIN_TOKENS rows) may take another
#: GEMM kernel on CPU, which rounds differently; from here on the bits matched in every shape tried
MIN_WINDOW = 32
MIN_TOKENS = 8

try:  # the helpers the original method calls; a transformers version without them keeps the original
    from transformers.models.deberta_v2.modeling_deberta_v2 import (
        DisentangledSelfAttention,
        build_relative_position,
        build_rpos,
        scaled_size_sqrt,
    )

    AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed transformers
    AVAILABLE = False


def position_window(index: torch.Tensor, total: int) -> slice:
    """The positions (of ``total``) that ``index`` uses, widened to at least :data:`MIN_WINDOW`.

    Example:
        >>> position_window(torch.tensor([[250, 256], [256, 262]]), 512)
        slice(250, 282, None)
    """
    lo, hi = int(index.min()), int(index.max())
    start = max(0, min(lo, total - MIN_WINDOW))
    return slice(start, min(total, max(hi + 1, start + MIN_WINDOW)))


def windowed_attention_bias(
    self: Any,
    query_layer: torch.Tensor,
    key_layer: torch.Tensor,
    relative_pos: torch.Tensor | None,
    rel_embeddings: torch.Tensor,
    scale_factor: int,
) -> torch.Tensor | int:
    """``DisentangledSelfAttention.disentangled_attention_bias`` (transformers 5), the position embeddings
    cut to the window the relative positions use. Same arguments, same result."""
    if query_layer.device.type != "cpu" or min(query_layer.size(-2), key_layer.size(-2)) < MIN_TOKENS:
        return DisentangledSelfAttention.disentangled_attention_bias(
            self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor
        )
    if relative_pos is None:
        relative_pos = build_relative_position(
            query_layer,
            key_layer,
            bucket_size=self.position_buckets,
            max_position=self.max_relative_positions,
        )
    if relative_pos.dim() == 2:
        relative_pos = relative_pos.unsqueeze(0).unsqueeze(0)
    elif relative_pos.dim() == 3:
        relative_pos = relative_pos.unsqueeze(1)
    elif relative_pos.dim() != 4:
        raise ValueError(f"Relative position ids must be of dim 2 or 3 or 4. {relative_pos.dim()}")

    span = self.pos_ebd_size
    relative_pos = relative_pos.to(device=query_layer.device, dtype=torch.long)
    rel_embeddings = rel_embeddings[0 : span * 2, :].unsqueeze(0)  # (1, 2 span, hidden)
    copies = query_layer.size(0) // self.num_attention_heads  # the batch

    def positions(proj: nn.Module, cut: slice) -> torch.Tensor:
        """The projected position embeddings in ``cut``, per head, repeated over the batch: (batch * heads,
        width, head size). Projected whole, then cut: the rows are the original's."""
        heads = self.transpose_for_scores(proj(rel_embeddings), self.num_attention_heads)
        return heads[:, cut].repeat(copies, 1, 1)

    score: torch.Tensor | int = 0
    if "c2p" in self.pos_att_type:  # content -> position
        c2p_pos = torch.clamp(relative_pos + span, 0, span * 2 - 1)
        cut = position_window(c2p_pos, span * 2)
        pos_key_layer = positions(self.key_proj if self.share_att_key else self.pos_key_proj, cut)
        scale = scaled_size_sqrt(pos_key_layer, scale_factor)
        c2p_att = torch.bmm(query_layer, pos_key_layer.transpose(-1, -2))
        index = (
            (c2p_pos - cut.start)
            .squeeze(0)
            .expand([query_layer.size(0), query_layer.size(1), relative_pos.size(-1)])
        )
        c2p_att = torch.gather(c2p_att, dim=-1, index=index)
        score = score + c2p_att / scale.to(dtype=c2p_att.dtype)
    if "p2c" in self.pos_att_type:  # position -> content
        r_pos = build_rpos(
            query_layer, key_layer, relative_pos, self.max_relative_positions, self.position_buckets
        )
        p2c_pos = torch.clamp(-r_pos + span, 0, span * 2 - 1)
        cut = position_window(p2c_pos, span * 2)
        pos_query_layer = positions(self.query_proj if self.share_att_key else self.pos_query_proj, cut)
        scale = scaled_size_sqrt(pos_query_layer, scale_factor)
        p2c_att = torch.bmm(key_layer, pos_query_layer.transpose(-1, -2))
        index = (
            (p2c_pos - cut.start)
            .squeeze(0)
            .expand([query_layer.size(0), key_layer.size(-2), key_layer.size(-2)])
        )
        p2c_att = torch.gather(p2c_att, dim=-1, index=index).transpose(-1, -2)
        score = score + p2c_att / scale.to(dtype=p2c_att.dtype)
    return score


if AVAILABLE:

    class WindowedSelfAttention(DisentangledSelfAttention):  # type: ignore[misc, valid-type]
        """DeBERTa-v2's attention with :func:`windowed_attention_bias`; nothing else differs."""

        disentangled_attention_bias = windowed_attention_bias


def use_windowed_attention(model: nn.Module) -> int:
    """Turn every DeBERTa-v2 relative-attention layer of ``model`` into a :class:`WindowedSelfAttention`
    (its class swapped in place: the layer objects, their weights and hooks stay); returns how many."""
    if not AVAILABLE:  # pragma: no cover - depends on the installed transformers
        return 0
    count = 0
    for module in model.modules():
        if type(module) is DisentangledSelfAttention and getattr(module, "relative_attention", False):
            module.__class__ = WindowedSelfAttention
            count += 1
    return count
