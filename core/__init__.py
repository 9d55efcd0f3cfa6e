"""blender-llm core: the PairRanker, the fusers and the ensemble logic shared by the adapters.

Example:
    >>> from blender_core import PairRanker
    >>> ranker = PairRanker.from_pretrained("llm-blender/PairRM")  # doctest: +SKIP
    >>> ranker.rank(["2+2?"], [["4", "5"]])[0].best  # doctest: +SKIP
    0
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .configuration_pairrm import PairRMConfig
from .default_ranker import DEFAULT_RANKER
from .fusers.base import BaseFuser
from .modeling_pairrm import PairRMModel
from .pipeline import Blender, BlendResult, FusionError
from .ranker import PairRanker
from .results import RankedCandidate, Ranking

try:
    __version__ = version("blender-llm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_RANKER",
    "BaseFuser",
    "BlendResult",
    "Blender",
    "FusionError",
    "PairRMConfig",
    "PairRMModel",
    "PairRanker",
    "RankedCandidate",
    "Ranking",
    "__version__",
]
