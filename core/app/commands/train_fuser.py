"""``blender-llm train-fuser``: fine-tune a seq2seq or causal fuser on ranked candidate sets (see blender_core.training.fuser)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from blender_core.app.commands._command import NoProgress, choice, command_class
from blender_core.app.commands._ranker import BUILTIN_RANKER, DEFAULT_STRATEGY, Strategy
from blender_core.app.commands._threads import NumThreads, set_torch_threads

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    # renamed in 0.2 to the other commands' names; the old ones are accepted, hidden, until the next release
    @app.command("train-fuser", cls=command_class(renamed={"--ranker": "--model", "--rank-strategy": "--strategy"}))
    def train_fuser(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (best/, last/, examples, logs).")],
        base: Annotated[str, typer.Option("--base", "-b", help="The fuser to fine-tune: a model folder / hub id (T5 family: seq2seq in the GenFuser format; else causal with the chat prompt), or smollm2.")],
        data: Annotated[list[Path] | None, typer.Option("--data", "-d", exists=True, dir_okay=False, help="AlpacaEval pool file(s) (.jsonl[.gz]: {instruction, reference, candidates: [{model, output, pref}]}): candidates to rank, `reference` as target. Repeat for several.")] = None,
        examples: Annotated[Path | None, typer.Option("--examples", exists=True, dir_okay=False, help="Pre-built examples (OUT/examples.*.jsonl.gz of an earlier run) instead of --data.")] = None,
        rank_by: Annotated[str, choice(("ranker", "pref", "longest"), "--rank-by", help="What picks the top-K candidates: ranker (--model), pref (the data's judge preferences; cheap) or longest.")] = "ranker",
        ranker: Annotated[str | None, typer.Option("--model", "-m", help=f"Ranker for --rank-by ranker: folder, hub id, reward:<model> or built-in name ({BUILTIN_RANKER}, offline). Default: llm-blender/PairRM, from the hub.")] = None,
        strategy: Strategy = DEFAULT_STRATEGY,
        kind: Annotated[str, choice(("auto", "seq2seq", "causal"), "--kind", help="seq2seq (GenFuser format) or causal (chat prompt); auto: seq2seq for an encoder-decoder config.")] = "auto",
        top_k: Annotated[int, typer.Option("--top-k", help="Candidates fused per instruction (the paper: 3).")] = 3,
        candidate_maxlength: Annotated[int, typer.Option(help="Tokens per candidate (published: 128).")] = 128,
        max_source_length: Annotated[int, typer.Option(help="Tokens of the whole input (published: 1024).")] = 1024,
        max_target_length: Annotated[int, typer.Option(help="Tokens of the target (published: 128).")] = 128,
        dev_fraction: Annotated[float, typer.Option(help="Hold out this fraction of the instructions (by hash) as dev.")] = 0.1,
        dev_max_examples: Annotated[int, typer.Option(help="At most this many dev examples per evaluation.")] = 64,
        lr: Annotated[float | None, typer.Option(help="Learning rate (default 5e-5 full fine-tuning, 2e-4 LoRA).")] = None,
        weight_decay: Annotated[float, typer.Option(help="AdamW's decoupled weight decay.")] = 0.01,
        warmup_ratio: Annotated[float, typer.Option(help="Linear warm-up over this fraction of the steps, then linear decay to 0.")] = 0.05,
        epochs: Annotated[int, typer.Option(help="Passes over the training examples.")] = 1,
        batch_size: Annotated[int, typer.Option(help="Examples per device per step.")] = 2,
        grad_accum: Annotated[int, typer.Option(help="Steps whose gradients are summed before an update (effective batch: --batch-size x this x processes).")] = 4,
        max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this (0: no clipping).")] = 1.0,
        mixed_precision: Annotated[str, choice(("auto", "no", "bf16", "fp16"), "--mixed-precision", help="auto: bf16 on GPU, none on CPU.")] = "auto",
        gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in the backward pass: less memory, more time.")] = False,
        lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters instead of all weights (saved merged + adapter/).")] = False,
        lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
        lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale alpha / r).")] = 32,
        lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA path.")] = 0.05,
        lora_targets: Annotated[str, typer.Option(help="all-linear, or comma-separated module names (q,v / q_proj,v_proj).")] = "all-linear",
        max_steps: Annotated[int, typer.Option(help="Stop after this many optimizer steps (0: none).")] = 0,
        max_minutes: Annotated[float, typer.Option(help="Stop after this many minutes (0: none); the LR schedule follows.")] = 0.0,
        eval_every: Annotated[int, typer.Option(help="Dev loss every this many optimizer steps (0: only at the end); the best goes to OUT/best.")] = 50,
        seed: Annotated[int, typer.Option(help="Seed of the run (the dev split, shuffling, new weights): the same seed repeats a run.")] = 42,
        device: Annotated[str | None, typer.Option(help="Device for ranking the candidates: cpu, cuda, cuda:1 … (default: CUDA when available; training uses accelerate's).")] = None,
        num_threads: NumThreads = 0,
        no_progress: NoProgress = False,
    ) -> None:
        """Fine-tune a fuser on (instruction, top-K ranked candidates → reference answer) examples.

        Multi-GPU: `accelerate launch -m blender_core.app.cli train-fuser ...` (one process per GPU).
        """
        from blender_core.ranking.registry import spec_name
        from blender_core.training.fuser import (
            FuserTrainConfig,
            FuserTrainer,
            examples_from_alpacaeval,
            read_examples,
            split_examples,
            write_examples,
        )
        from blender_core.training.fuser.trainer import load_base_model

        if (data is None) == (examples is None):
            raise typer.BadParameter("give exactly one of --data (AlpacaEval pool files) or --examples")
        set_torch_threads(num_threads)
        config = FuserTrainConfig(
            kind=kind,  # type: ignore[arg-type]
            lora=lora,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
            gradient_checkpointing=gradient_checkpointing,
            top_k=top_k,
            candidate_maxlength=candidate_maxlength,
            max_source_length=max_source_length,
            max_target_length=max_target_length,
            learning_rate=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            max_grad_norm=max_grad_norm,
            mixed_precision=mixed_precision,  # type: ignore[arg-type]
            max_steps=max_steps,
            max_minutes=max_minutes,
            eval_every=eval_every,
            dev_max_examples=dev_max_examples,
            seed=seed,
            progress=not no_progress,
        )
        if examples is not None:
            all_examples = read_examples(examples)
        else:
            rank_fn: Any = None  # pref
            if rank_by == "longest":
                from blender_core.evaluation.fusion import longest_rank_fn

                rank_fn = longest_rank_fn
            elif rank_by == "ranker":
                from blender_core.app.commands._ranker import ranker_from_option
                from blender_core.evaluation.fusion import ranker_rank_fn

                rank_fn = ranker_rank_fn(ranker_from_option(ranker, device=device)[0], strategy=strategy)
            all_examples = examples_from_alpacaeval(data or [], rank_fn, top_k=top_k, progress=not no_progress)
        train, dev = split_examples(all_examples, dev_fraction, seed)
        write_examples(out / "examples.train.jsonl.gz", train)
        write_examples(out / "examples.dev.jsonl.gz", dev)
        typer.echo(f"examples: {len(train)} train, {len(dev)} dev (ranked by {rank_by if rank_by != 'ranker' else spec_name(ranker)})")

        model, tokenizer, _ = load_base_model(base, kind)
        trainer = FuserTrainer(model, tokenizer, config)
        result = trainer.train(train, dev, out)
        meta = {"command": "blender-llm " + shlex.join(sys.argv[1:]), "base": base, "rank_by": rank_by,
                "ranker": spec_name(ranker) if rank_by == "ranker" else None}
        (out / "train_fuser_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        typer.echo(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}, indent=2))
