"""Reading and writing the data the rankers and fusers learn from and are judged on: pairs, scored
candidate sets (AlpacaEval, MixInstruct, general JSON lines), AlpacaEval pool files, prompt-level splits.

May import: blender_core.base.
"""
