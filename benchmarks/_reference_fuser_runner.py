"""Run the reference package (llm-blender 0.0.2) GenFuser on a JSON case file; write its outputs as JSON.

Run with the reference venv (transformers 4.x):
    /work/refvenv/bin/python benchmarks/_reference_fuser_runner.py FUSER_DIR CASES.json OUT.json

CASES.json: {"calls": [{"inputs": [...], "candidates": [[...]], "instructions": [...] | null,
"generate_kwargs": {...}}]}. OUT.json: {"outputs": [[str, ...] per call], "input_ids": [[[int, ...] per input] per call],
"versions": {...}}: the fused strings and the fuser input ids the reference builds.
"""

from __future__ import annotations

import copy
import json
import sys


def main(fuser_dir: str, cases_path: str, out_path: str) -> None:
    import llm_blender
    import torch
    import transformers

    torch.manual_seed(0)
    blender = llm_blender.Blender()
    blender.blender_config.use_tqdm = False
    blender.loadfuser(fuser_dir, device="cpu", torch_dtype="float32")
    with open(cases_path) as f:
        cases = json.load(f)
    from llm_blender.blender.blender_utils import GenFuserDataset

    outputs, input_ids = [], []
    for call in cases["calls"]:
        dataset = GenFuserDataset(
            call["inputs"],
            copy.deepcopy(call["candidates"]),
            blender.fuser_tokenizer,
            max_length=blender.fuser_config.max_length,
            candidate_maxlength=blender.fuser_config.candidate_maxlength,
            instructions=call["instructions"],
        )
        items = [dataset[i] for i in range(len(dataset))]
        input_ids.append([item["input_ids"][item["attention_mask"].bool()].tolist() for item in items])
        candidates = copy.deepcopy(call["candidates"])  # the reference cuts the candidates in place
        outputs.append(
            blender.fuse(
                call["inputs"],
                candidates,
                instructions=call["instructions"],
                **call.get("generate_kwargs", {}),
            )
        )
    versions = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "llm_blender": getattr(llm_blender, "__version__", "0.0.2"),
    }
    with open(out_path, "w") as f:
        json.dump({"outputs": outputs, "input_ids": input_ids, "versions": versions}, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
