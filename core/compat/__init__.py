"""A drop-in for the reference package ``llm-blender`` 0.0.2: ``from blender_core.compat import Blender``.

May import: blender_core.base, blender_core.ranking, blender_core.ranking.pairrm, blender_core.fusion.
"""

from __future__ import annotations

from blender_core.compat.blender import Blender, BlenderConfig, GenFuserConfig, RankerConfig

__all__ = ["Blender", "BlenderConfig", "GenFuserConfig", "RankerConfig"]
