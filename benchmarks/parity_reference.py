"""Parity of ``blender_core.compat.Blender`` with llm-blender 0.0.2 (the reference) on a tiny random checkpoint.

    python benchmarks/parity_reference.py [--ref-venv PATH] [--out DIR]

Builds a tiny reference-layout PairRM checkpoint, runs the reference in its own venv (created at ``.refvenv``
if missing: it needs transformers < 5) and this package on the same inputs, and prints the largest absolute
difference of every method's numbers and whether ranks and chosen candidates are identical. Exits 1 if a
difference exceeds 1e-4 or a rank / choice differs.

The main data set truncates candidates, so there the reference runs at ``batch_size=1``: in a batch of several
prompts it truncates candidates with a budget computed from the batch's longest source, which this package
does per prompt (the same as the reference at ``batch_size=1``). A second, short data set that truncates
nothing checks the reference's default batch sizes, including the one ``torch.randperm`` per batch of its
bubble best-of-n.

Each section is a function pair (reference calls, checks) in ``SECTIONS``; add a section to extend it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import DEFAULT_REF_VENV, Prompts, ensure_reference_venv, make_prompts, print_table, run_reference
from _fuser_parity import format_report, run_fuser_parity

from blender_core.compat import Blender
from blender_core.testing.pairrm import make_tiny_pairrm

TOLERANCE = 1e-4
LIMITS = {"source_maxlength": 160, "candidate_maxlength": 96}
MODES = ("[A,B]", "[B,A]", "[A,B]+[B,A]")


@dataclass(frozen=True)
class Data:
    """The inputs every section uses."""

    ranker: Path
    long: Prompts  # truncates sources and candidates: the reference runs at batch_size=1
    short: Prompts  # truncates nothing: the reference runs at its default batch sizes


@dataclass(frozen=True)
class Row:
    section: str
    check: str
    result: str
    ok: bool


def _kwargs(p: Prompts) -> dict[str, Any]:
    return {"inputs": p.inputs, "candidates": p.candidates, "instructions": p.instructions}


def _pair_kwargs(p: Prompts) -> dict[str, Any]:
    """compare() inputs: the first candidate against the last (their lengths differ most)."""
    a, b = [c[0] for c in p.candidates], [c[-1] for c in p.candidates]
    return {"inputs": p.inputs, "candidates_A": a, "candidates_B": b, "instructions": p.instructions}


def _conversations(p: Prompts) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Two-turn conversations with the same user turns; a answers with candidates 0 and 1, b with 2 and 3."""
    conv_a, conv_b = [], []
    for instruction, text, cands in zip(p.instructions, p.inputs, p.candidates, strict=True):
        users = [instruction.strip(), text]
        for dest, (x, y) in ((conv_a, (cands[0], cands[1])), (conv_b, (cands[2], cands[3]))):
            dest.append(
                [
                    {"role": "USER", "content": users[0]},
                    {"role": "ASSISTANT", "content": x},
                    {"role": "USER", "content": users[1]},
                    {"role": "ASSISTANT", "content": y},
                ]
            )
    return conv_a, conv_b


def _close(section: str, check: str, ours: Any, ref: Any) -> Row:
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return Row(section, check, f"shape {a.shape} vs reference {b.shape}", False)
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    return Row(section, check, f"max |diff| {diff:.2e}", diff <= TOLERANCE)


def _same(section: str, check: str, ours: Any, ref: Any) -> Row:
    a = ours.tolist() if isinstance(ours, np.ndarray) else ours
    same = a == ref
    return Row(
        section, check, "identical" if same else f"DIFFERENT: ours {a!r:.200} vs reference {ref!r:.200}", same
    )


# ---------------------------------------------------------------- sections
def rank_calls(d: Data) -> list[dict[str, Any]]:
    kw = {**_kwargs(d.long), "batch_size": 1}
    return [
        {"name": "rank.scores", "method": "rank", "kwargs": {**kw, "return_scores": True}},
        {"name": "rank.ranks", "method": "rank", "kwargs": kw},
        {
            "name": "rank.limits",
            "method": "rank",
            "kwargs": {**kw, "return_scores": True, "source_max_length": 48, "candidate_max_length": 32},
        },
    ]


def rank_checks(d: Data, ref: dict[str, Any], ours: Blender) -> list[Row]:
    kw = {**_kwargs(d.long), "batch_size": 1}
    return [
        _close(
            "rank", "scores (batch_size=1)", ours.rank(**kw, return_scores=True), ref["rank.scores"]["result"]
        ),
        _same("rank", "ranks (batch_size=1)", ours.rank(**kw), ref["rank.ranks"]["result"]),
        _close(
            "rank",
            "scores, source/candidate_max_length 48/32",
            ours.rank(**kw, return_scores=True, source_max_length=48, candidate_max_length=32),
            ref["rank.limits"]["result"],
        ),
    ]


def compare_calls(d: Data) -> list[dict[str, Any]]:
    kw = {**_pair_kwargs(d.long), "batch_size": 1}
    calls = [
        {"name": f"compare.{m}", "method": "compare", "kwargs": {**kw, "return_logits": True, "mode": m}}
        for m in MODES
    ]
    return [*calls, {"name": "compare.bool", "method": "compare", "kwargs": kw}]


def compare_checks(d: Data, ref: dict[str, Any], ours: Blender) -> list[Row]:
    kw = {**_pair_kwargs(d.long), "batch_size": 1}
    rows = [
        _close(
            "compare",
            f"logits {m} (batch_size=1)",
            ours.compare(**kw, return_logits=True, mode=m),
            ref[f"compare.{m}"]["result"],
        )
        for m in MODES
    ]
    return [*rows, _same("compare", "bools [A,B]+[B,A]", ours.compare(**kw), ref["compare.bool"]["result"])]


def rank_with_ref_calls(d: Data) -> list[dict[str, Any]]:
    kw = {**_kwargs(d.long), "batch_size": 1}
    given = [c[2] for c in d.long.candidates]
    return [
        {"name": "rwr.longest", "method": "rank_with_ref", "kwargs": {**kw, "return_scores": True}},
        {
            "name": "rwr.given",
            "method": "rank_with_ref",
            "kwargs": {**kw, "return_scores": True, "ref_candidates": given},
        },
        {"name": "rwr.median", "method": "rank_with_ref", "kwargs": {**kw, "ref_mode": "median_length"}},
    ]


def rank_with_ref_checks(d: Data, ref: dict[str, Any], ours: Blender) -> list[Row]:
    kw = {**_kwargs(d.long), "batch_size": 1}
    given = [c[2] for c in d.long.candidates]
    return [
        _close(
            "rank_with_ref",
            "scores, ref_mode=longest",
            ours.rank_with_ref(**kw, return_scores=True),
            ref["rwr.longest"]["result"],
        ),
        _close(
            "rank_with_ref",
            "scores, ref_candidates given",
            ours.rank_with_ref(**kw, return_scores=True, ref_candidates=given),
            ref["rwr.given"]["result"],
        ),
        _same(
            "rank_with_ref",
            "ranks, ref_mode=median_length",
            ours.rank_with_ref(**kw, ref_mode="median_length"),
            ref["rwr.median"]["result"],
        ),
    ]


def conversations_calls(d: Data) -> list[dict[str, Any]]:
    a, b = _conversations(d.long)
    kw = {"conversations_a": a, "conversations_b": b, "batch_size": 1, "return_logits": True}
    return [
        {"name": f"conv.{m}", "method": "compare_conversations", "kwargs": {**kw, "mode": m}} for m in MODES
    ]


def conversations_checks(d: Data, ref: dict[str, Any], ours: Blender) -> list[Row]:
    a, b = _conversations(d.long)
    return [
        _close(
            "compare_conversations",
            f"logits {m} (batch_size=1)",
            ours.compare_conversations(a, b, batch_size=1, return_logits=True, mode=m),
            ref[f"conv.{m}"]["result"],
        )
        for m in MODES
    ]


_OF_N = (  # (name, method, kwargs beyond the data, torch seed)
    ("bubble best, return_all", "get_best_of_n", {"return_all": True}, 0),
    ("bubble best", "get_best_of_n", {}, 1),
    ("bubble worst, return_all", "get_worst_of_n", {"return_all": True}, 2),
    ("full best, return_all", "get_best_of_n", {"pairrm_cmp_type": "full", "return_all": True}, None),
    ("full best", "get_best_of_n", {"pairrm_cmp_type": "full"}, None),
    ("full worst", "get_worst_of_n", {"pairrm_cmp_type": "full"}, None),
)


def of_n_calls(d: Data) -> list[dict[str, Any]]:
    kw = {**_kwargs(d.long), "batch_size": 1}
    return [{"name": f"ofn.{n}", "method": m, "kwargs": {**kw, **x}, "seed": s} for n, m, x, s in _OF_N]


def of_n_checks(d: Data, ref: dict[str, Any], ours: Blender) -> list[Row]:
    kw = {**_kwargs(d.long), "batch_size": 1}
    rows = []
    for name, method, extra, seed in _OF_N:
        if seed is not None:
            torch.manual_seed(seed)
        chosen = getattr(ours, method)(**kw, **extra)
        suffix = f" (batch_size=1, torch seed {seed})" if seed is not None else " (batch_size=1)"
        rows.append(_same("best_of_n", name + suffix, chosen, ref[f"ofn.{name}"]["result"]))
    return rows


def default_batch_calls(d: Data) -> list[dict[str, Any]]:
    kw = _kwargs(d.short)
    return [
        {"name": "short.rank", "method": "rank", "kwargs": {**kw, "return_scores": True}},
        {
            "name": "short.compare",
            "method": "compare",
            "kwargs": {**_pair_kwargs(d.short), "return_logits": True},
        },
        {"name": "short.rwr", "method": "rank_with_ref", "kwargs": {**kw, "return_scores": True}},
        {"name": "short.best", "method": "get_best_of_n", "kwargs": {**kw, "return_all": True}, "seed": 7},
        {"name": "short.worst", "method": "get_worst_of_n", "kwargs": {**kw, "batch_size": 4}, "seed": 8},
    ]


def default_batch_checks(d: Data, ref: dict[str, Any], ours: Blender) -> list[Row]:
    kw = _kwargs(d.short)
    torch.manual_seed(7)
    best = ours.get_best_of_n(**kw, return_all=True)
    torch.manual_seed(8)
    worst = ours.get_worst_of_n(**kw, batch_size=4)
    section = "default batch sizes, no truncation"
    return [
        _close(
            section,
            "rank scores (batch_size=8)",
            ours.rank(**kw, return_scores=True),
            ref["short.rank"]["result"],
        ),
        _close(
            section,
            "compare logits (batch_size=4)",
            ours.compare(**_pair_kwargs(d.short), return_logits=True),
            ref["short.compare"]["result"],
        ),
        _close(
            section,
            "rank_with_ref scores (batch_size=8)",
            ours.rank_with_ref(**kw, return_scores=True),
            ref["short.rwr"]["result"],
        ),
        _same(section, "bubble best, return_all (batch_size=8, seed 7)", best, ref["short.best"]["result"]),
        _same(section, "bubble worst (batch_size=4, seed 8)", worst, ref["short.worst"]["result"]),
    ]


@dataclass(frozen=True)
class Section:
    name: str
    calls: Callable[[Data], list[dict[str, Any]]]
    checks: Callable[[Data, dict[str, Any], Blender], list[Row]]


SECTIONS: list[Section] = [
    Section("rank", rank_calls, rank_checks),
    Section("compare", compare_calls, compare_checks),
    Section("rank_with_ref", rank_with_ref_calls, rank_with_ref_checks),
    Section("compare_conversations", conversations_calls, conversations_checks),
    Section("best_of_n", of_n_calls, of_n_checks),
    Section("default batch sizes", default_batch_calls, default_batch_checks),
]


# ---------------------------------------------------------------- driver
def make_data(root: Path) -> Data:
    ranker = make_tiny_pairrm(root / "ckpt", "reference", **LIMITS)
    long = make_prompts(
        0, 8, 5, instruction_words=(3, 10), input_words=(3, 220), candidate_words=[(1, 6), (8, 30), (60, 120)]
    )
    short = make_prompts(
        1, 10, 4, instruction_words=(1, 3), input_words=(1, 4), candidate_words=[(1, 3), (3, 5)]
    )
    if min(truncated(ranker, long)) == 0:
        raise RuntimeError("the main data set must truncate some sources and candidates; lengthen it")
    if max(truncated(ranker, short)) > 0:
        raise RuntimeError("the short data set truncates; shorten it so that batch composition cannot matter")
    return Data(ranker, long, short)


def truncated(ranker_path: Path, p: Prompts) -> tuple[int, int]:
    """How many sources, and candidates, are longer than the ranker's limits (in tokens)."""
    from blender_core.ranking.pairrm.pair_ranker import PairRanker

    enc = PairRanker.from_pretrained(ranker_path, device="cpu").encoder
    sources = [i + x for i, x in zip(p.instructions, p.inputs, strict=True)]
    src = sum(len(s) >= enc.source_maxlength for s in enc.encode_sources(sources))
    cands = sum(
        len(c) >= enc.candidate_maxlength
        for c in enc.encode_candidates([c for cs in p.candidates for c in cs])
    )
    return src, cands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ref-venv", type=Path, default=DEFAULT_REF_VENV, help="reference venv (created if missing)"
    )
    parser.add_argument("--torch-index-url", default=None, help="pip index for torch when creating the venv")
    parser.add_argument("--out", type=Path, default=None, help="write parity.json there")
    args = parser.parse_args(argv)

    python = ensure_reference_venv(args.ref_venv, args.torch_index_url)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        data = make_data(Path(tmp))
        spec = {
            "ranker": str(data.ranker),
            "threads": 1,
            "calls": [c for s in SECTIONS for c in s.calls(data)],
        }
        ref = run_reference(python, spec)
        ours = Blender({"device": "cpu", "use_tqdm": False})
        ours.loadranker(data.ranker)
        rows = [row for s in SECTIONS for row in s.checks(data, ref, ours)]
        n_src, n_cand = truncated(data.ranker, data.long)

    print(
        f"llm-blender 0.0.2 (reference) vs blender_core.compat.Blender; tiny reference-layout checkpoint, "
        f"limits {LIMITS['source_maxlength']}/{LIMITS['candidate_maxlength']} tokens; tolerance {TOLERANCE:g}"
    )
    print(
        f"main data: {len(data.long.inputs)} prompts x {len(data.long.candidates[0])} candidates with instructions; "
        f"{n_src} sources and {n_cand} candidates over the limits -> the reference runs at batch_size=1 (its "
        "truncation budget depends on the batch's longest source; ours is per prompt, equal to its batch_size=1)"
    )
    print(
        f"short data: {len(data.short.inputs)} x {len(data.short.candidates[0])}, nothing truncated -> the "
        "reference's default batch sizes"
    )
    print()
    print_table(
        ["section", "check", "result", "ok"],
        [(r.section, r.check, r.result, "ok" if r.ok else "FAIL") for r in rows],
    )
    fuser = run_fuser_parity(python=str(python))
    print()
    print(format_report(fuser))
    rows.append(
        Row(
            "fuse",
            f"greedy strings on {fuser['n_inputs']} inputs",
            f"{fuser['n_identical']}/{fuser['n_inputs']} identical",
            fuser["identical"],
        )
    )
    failed = [r for r in rows if not r.ok]
    print()
    print(
        f"{len(rows) - len(failed)}/{len(rows)} checks passed"
        + ("" if not failed else f"; {len(failed)} FAILED")
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "parity.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
