"""The application layer: the ``blender-llm`` command line and the offline demo. It sits above the
framework adapters (the demo runs ``langchain_blender.BlenderLLM``); nothing in the library imports it.

May import: blender_core.base, blender_core.data, blender_core.local_models, blender_core.ranking,
blender_core.ranking.pairrm, blender_core.ranking.judge, blender_core.fusion, blender_core.ensemble,
blender_core.training, blender_core.evaluation, blender_core.batch, langchain_blender, llamaindex_blender.
"""
