"""Base types and checks that every layer uses: ranking results (``Ranking``, ``RankedCandidate``) and
the validation of user input (errors that say what was received and what to do).

May import: nothing from blender_core.
"""
