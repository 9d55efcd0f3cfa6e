"""The PairRanker training losses: the paper's "instructgpt" pairwise loss and per-side BCE / MSE.

Every loss takes the per-side head outputs ``left`` / ``right`` (batch, n_tasks) of
:class:`~blender_core.ranking.pairrm.modeling_pairrm.PairRMModel` and ``sign`` (batch,): +1 when candidate 1 (left) is
better, -1 when candidate 2 is. Rows with ``sign == 0`` (ties) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F


def _valid(sign: torch.Tensor) -> torch.Tensor:
    return sign != 0  # (batch,)


def _zero(left: torch.Tensor) -> torch.Tensor:
    """A zero loss that still belongs to the graph (a batch of ties only)."""
    return left.sum() * 0.0


def instructgpt_loss(left: torch.Tensor, right: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(sign * (left - right)), averaged over tasks and non-tie rows."""
    keep = _valid(sign)
    if not bool(keep.any()):
        return _zero(left)
    s = sign[keep].to(left.dtype).unsqueeze(-1)  # (k, 1)
    return -F.logsigmoid(s * (left[keep] - right[keep])).mean()


def bce_loss(left: torch.Tensor, right: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Each side classified on its own: BCE(left, better-is-left) + BCE(right, better-is-right)."""
    keep = _valid(sign)
    if not bool(keep.any()):
        return _zero(left)
    target = (sign[keep] > 0).to(left.dtype).unsqueeze(-1).expand_as(left[keep])  # (k, n_tasks)
    return F.binary_cross_entropy_with_logits(left[keep], target) + F.binary_cross_entropy_with_logits(
        right[keep], 1.0 - target
    )


def mse_loss(left: torch.Tensor, right: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Each side regressed on its own: MSE(sigmoid(left), better-is-left) + MSE(sigmoid(right), better-is-right)."""
    keep = _valid(sign)
    if not bool(keep.any()):
        return _zero(left)
    target = (sign[keep] > 0).to(left.dtype).unsqueeze(-1).expand_as(left[keep])  # (k, n_tasks)
    return F.mse_loss(torch.sigmoid(left[keep]), target) + F.mse_loss(torch.sigmoid(right[keep]), 1.0 - target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "instructgpt": instructgpt_loss,
    "bce": bce_loss,
    "mse": mse_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called ``name``; an error lists the choices."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(map(repr, LOSSES))}")
    return LOSSES[name]
