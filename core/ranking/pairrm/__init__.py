"""PairRM, the pairwise ranker of LLM-Blender: a cross-encoder that reads a prompt and two candidates and
says which is better. The config and the model are real transformers classes
(:mod:`.configuration_pairrm`, :mod:`.modeling_pairrm`); :mod:`.encoding` lays out the inputs,
:mod:`.batching` runs the comparisons in batches (cached, length-sorted), :mod:`.loading` reads every
checkpoint layout (reference, PairRM-hf, native; :mod:`.config_checks` and :mod:`.weight_files` check them
before anything is built), :mod:`.compact` the compact exports of ``train-ranker --lora`` (built on an encoder
by :mod:`.build`), :mod:`.builtin` the offline ranker shipped in the package, :mod:`.conversations` the
reference's conversation format, and :class:`PairRanker` (:mod:`.pair_ranker`) puts them together.

Like every ranker kind it imports no other kind; of ``blender_core.ranking`` it uses the shared modules only
(interface, strategies, aggregation, batches), never the registry, which imports the kinds.

May import: blender_core.base, blender_core.ranking.
"""

from __future__ import annotations

from blender_core.ranking.pairrm.builtin import BUILTIN_RANKER
from blender_core.ranking.pairrm.configuration_pairrm import PairRMConfig
from blender_core.ranking.pairrm.modeling_pairrm import PairRMModel
from blender_core.ranking.pairrm.pair_ranker import PairRanker

__all__ = ["BUILTIN_RANKER", "PairRMConfig", "PairRMModel", "PairRanker"]
