"""Recorded traffic is training data as it is: ``label_pairs`` makes DPO pairs from the traffic files (the
served choice is the chosen answer of its pairs), ``rank_files`` ranks them again with another ranker, and a torn
last line fails neither."""

from __future__ import annotations

import json
from pathlib import Path

from blender_core.batch.pairs import PairPolicy, label_pairs
from blender_core.batch.rank_file import rank_files
from blender_core.ensemble import Ensemble, render_prompt
from blender_core.ranking import PairRanker
from blender_core.recording import TrafficRecorder
from blender_core.recording.files import traffic_files
from tests.helpers.core_fakes import answering, failing

QUESTIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Largest planet?"}],
    [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one, larger?"},
    ],
    [{"role": "user", "content": "Colour of the sky?"}],
]
ANSWERS = ["Paris.", "It is Paris, on the Seine.", "Lyon", "Jupiter, by far the largest.", "Mars", "11", "blue"]


def record_traffic(folder: Path, ranker: PairRanker) -> list[tuple[str, str]]:
    """Serve QUESTIONS through an engine with a recorder; (prompt, best answer) of each, as served."""
    served = []
    with TrafficRecorder(folder, rotate_bytes=2500) as recorder:  # several files
        engine = Ensemble(ranker, sinks=[recorder])
        for k, chat in enumerate(QUESTIONS):
            calls = {
                "a": answering(ANSWERS[k % len(ANSWERS)]),
                "b": answering(ANSWERS[(k + 1) % len(ANSWERS)]),
                "c": answering(ANSWERS[(k + 3) % len(ANSWERS)]),
                "down": failing("503"),
            }
            prompt = render_prompt([(m["role"], m["content"]) for m in chat])
            outcome = engine.run(prompt, calls, messages=chat)
            served.append((prompt, outcome.text))
        assert recorder.flush()
        assert recorder.stats().written == len(QUESTIONS)
    return served


def test_label_pairs_reads_traffic_files_as_they_are_and_chooses_the_served_answer(
    tiny_ranker: PairRanker, tmp_path: Path
) -> None:
    served = record_traffic(tmp_path / "traffic", tiny_ranker)
    files = traffic_files(tmp_path / "traffic")
    assert len(files) >= 2
    out = tmp_path / "pairs.jsonl"
    report = label_pairs(files, out, tiny_ranker, policy=PairPolicy("best-vs-each"), show_progress=False)
    assert report.errors == ()
    assert report.written == len(QUESTIONS)
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    by_prompt: dict[str, list[dict[str, object]]] = {}
    for pair in pairs:
        by_prompt.setdefault(str(pair["prompt"]), []).append(pair)
    assert set(by_prompt) <= {prompt for prompt, _ in served}
    for prompt, answer in served:
        for pair in by_prompt.get(prompt, []):
            assert pair["chosen"] == answer  # the served choice is the chosen side of every pair
            assert pair["rejected"] != answer
    assert sum(len(p) for p in by_prompt.values()) >= len(QUESTIONS)  # ties aside, 2 pairs per question
    multi_turn = render_prompt([(m["role"], m["content"]) for m in QUESTIONS[2]])
    assert multi_turn.startswith("USER: Name a prime.\nASSISTANT: 7\nUSER: ")
    assert {pair["chosen_model"] for pair in pairs} <= {"a", "b", "c"}


def test_rank_ranks_traffic_again_with_another_ranker(
    tiny_ranker: PairRanker, tiny_native_ckpt: Path, tmp_path: Path
) -> None:
    record_traffic(tmp_path / "traffic", tiny_ranker)
    files = traffic_files(tmp_path / "traffic")
    recorded = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    out = tmp_path / "reranked.jsonl"
    report = rank_files(files, out, str(tiny_native_ckpt), show_progress=False)
    assert (report.written, report.errors) == (len(QUESTIONS), ())
    ranked = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(ranked) == {r["id"] for r in recorded}
    other = PairRanker.from_pretrained(tiny_native_ckpt, device="cpu")
    for r in recorded:
        again = ranked[r["id"]]
        assert again["prompt"] == r["prompt"]
        (expected,) = other.rank([r["prompt"]], [r["candidates"]])
        assert again["ranks"] == [int(k) for k in expected.ranks]
        assert again["best_model"] == r["models"][expected.best]


def test_a_torn_last_line_is_skipped_by_label_pairs_not_fatal(tiny_ranker: PairRanker, tmp_path: Path) -> None:
    record_traffic(tmp_path / "traffic", tiny_ranker)
    last = traffic_files(tmp_path / "traffic")[-1]
    whole = last.read_bytes()
    last.write_bytes(whole + whole.splitlines()[0][:40])  # a writer killed mid-line (before any repair)
    report = label_pairs(traffic_files(tmp_path / "traffic"), tmp_path / "pairs.jsonl", tiny_ranker, show_progress=False)
    assert report.written == len(QUESTIONS)
    (error,) = report.errors
    assert "not valid JSON" in error.reason
