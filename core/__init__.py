"""blender-llm core: the PairRanker, the fusers and the ensemble logic shared by the adapters."""

from __future__ import annotations
