"""Offline jobs over files: rank every candidate set of JSON-lines or Parquet inputs, or turn them into
preference pairs, resumably and exactly once, in this process or on Ray actors.

``rank_file`` (one input, this process); ``sharded`` / ``shards`` / ``parts`` (the sharded engine and its
exactly-once part files); ``ray_cluster`` / ``ray_engine`` (the same on Ray: ``ray`` is imported only there,
lazily, from the ``[ray]`` extra); ``pairs`` (``label_pairs``, TRL's preference format).

May import: blender_core.base, blender_core.data, blender_core.ranking.
"""
