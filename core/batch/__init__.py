"""Offline jobs over files: rank every candidate set of JSON-lines or Parquet inputs, or turn them into
preference pairs, resumably and exactly once, in this process or on Ray actors.

One engine runs every job, however it is scheduled: ``sharded`` (plan the shards while reading, merge their
parts in input order), ``shards`` (the unit of work, what a job writes per record, the local executor),
``parts`` (atomic part files, the journaled merge, the output's lock). What reads inputs and outputs:
``sources``, ``plan``, ``output``, ``resume``. Who ranks: ``jobs`` picks the executor of ``engine="local"`` or
``"ray"``; ``ray_executor`` / ``ray_cluster`` are the Ray executor and where its actors run (``ray`` is imported
only there, lazily, from the ``[ray]`` extra); ``local_ray`` is the Ray a command starts for itself, and the reaping
of what a killed run's Ray left. The jobs: ``rank_file`` (``rank_files``, and ``rank_file`` for
one input) and ``pairs`` (``label_pairs``, TRL's preference format); ``ray_engine.rank_with_ray`` is
``rank_files`` on Ray.

May import: blender_core.base, blender_core.data, blender_core.ranking.
"""
