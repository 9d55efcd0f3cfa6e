"""Training of rankers (``training.ranker``) and fusers (``training.fuser``) on one shared base
(``training.base``): the frozen config fields both use, the accelerate set-up, the optimiser and schedule,
and the training loop. Inference never imports this package.

May import: blender_core.base, blender_core.data, blender_core.ranking, blender_core.fusion, blender_core.local_models.
"""
