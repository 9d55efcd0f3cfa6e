"""The reward-model ranker: any one-output transformers classifier with a chat template scores each
candidate alone (:class:`RewardModelRanker`, :mod:`.reward_ranker`); :mod:`.inputs` renders, tokenizes and
cuts what it reads, :mod:`.loading` loads the model strictly and never with remote code.
``load_ranker("reward:<hub id or folder>")`` loads one.

Like every ranker kind it imports no other kind; of ``blender_core.ranking`` it uses the shared modules only
(interface, strategies, aggregation, batches), never the registry, which imports the kinds.

May import: blender_core.base, blender_core.ranking.
"""

from __future__ import annotations

from blender_core.ranking.reward.loading import RemoteCodeError
from blender_core.ranking.reward.reward_ranker import RewardModelRanker

__all__ = ["RemoteCodeError", "RewardModelRanker"]
