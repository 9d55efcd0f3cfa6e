"""Evaluation: ranker pair accuracy and selection win rates against simple baselines, fusion quality
against references, and their reports.

May import: blender_core.base, blender_core.data, blender_core.ranking, blender_core.fusion.
"""
