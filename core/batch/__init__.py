"""Offline jobs over files: rank every candidate set of a JSON-lines file, resumably.

May import: blender_core.base, blender_core.data, blender_core.ranking.
"""
