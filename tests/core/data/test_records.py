"""The data readers: the five line formats, their errors, the held-out split and the writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blender_core.data.lines import DataFormatError
from blender_core.data.records import (
    CandidateSet,
    Pair,
    parse_record,
    prompt_in_holdout,
    read_candidate_sets,
    read_pairs,
    read_records,
    split_by_prompt,
    write_jsonl,
)


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_format(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.pairs.jsonl", [{"prompt": "p", "a": "A", "b": "B", "label": 1}, {"id": "k", "source": "s",
                                             "prompt": "q", "a": "A", "b": "B", "label": 2}])
    first, second = read_pairs(f)
    assert first == Pair("p", "A", "B", 1, id=f"{f}:1", source="x.pairs")
    assert (second.id, second.source, second.label) == ("k", "s", 2)


def test_alpacaeval_candidates_with_pref_and_null_pref() -> None:
    obj = {"idx": 7, "instruction": "Say hi", "candidates": [
        {"model": "m1", "output": "hi", "pref": 1.8}, {"model": "m2", "output": "yo", "pref": None},
        {"model": "m3", "output": "hello", "pref": 1.2}]}
    rec = parse_record(obj, where="pool.dev.jsonl.gz:3")
    assert rec == CandidateSet("Say hi", ("hi", "hello"), (1.8, 1.2), ("m1", "m3"), id="7", source="pool.dev")


def test_mixinstruct_score_key_and_lower_is_better() -> None:
    obj = {"id": "u1", "instruction": "Translate: ", "input": "chat", "candidates": [
        {"model": "a", "decoding_method": "greedy", "text": "cat", "scores": {"bleu": 0.9, "gpt_rank": 1.0}},
        {"model": "b", "decoding_method": "greedy", "text": "dog", "scores": {"bleu": 0.1, "gpt_rank": 3.0}}]}
    rec = parse_record(obj, score_key="bleu")
    assert isinstance(rec, CandidateSet)
    assert rec.prompt == "Translate: chat"  # instruction + input, no separator
    assert rec.scores == (0.9, 0.1)
    low = parse_record(obj, score_key="-gpt_rank")
    assert low.scores == (-1.0, -3.0)  # type: ignore[union-attr]
    with pytest.raises(DataFormatError, match=r"--score-key"):
        parse_record(obj, where="mix.jsonl:1")
    with pytest.raises(DataFormatError, match=r"has no 'rouge'"):
        parse_record(obj, score_key="rouge")


def test_pairwise_labelled_candidate_sets_score_by_win_share() -> None:
    obj = {"prompt": "p", "candidates": {"x": "X", "y": "Y", "z": "Z", "unjudged": "U"}, "pairs": [
        {"a": "x", "b": "y", "label": 0}, {"a": "x", "b": "z", "label": 2}, {"a": "z", "b": "y", "label": 1}]}
    rec = parse_record(obj)
    assert isinstance(rec, CandidateSet)
    assert rec.models == ("x", "y", "z")
    # x: 1 win + 1 tie of 2; y: 1 win of 2; z: 1 tie of 2
    assert rec.scores == pytest.approx((1.75, 1.5, 1.25))


def test_general_format(tmp_path: Path) -> None:
    f = _write(tmp_path / "g.jsonl", [{"prompt": "p", "candidates": ["a", "b"], "scores": [0.5, 2], "models": ["m", "n"]},
                                       {"prompt": "q", "candidates": ["c", "d", "e"]}])
    scored, unscored = read_candidate_sets(f)
    assert scored.scores == (0.5, 2.0)
    assert scored.models == ("m", "n")
    assert unscored.scores is None
    with pytest.raises(DataFormatError, match=r"'scores' must be a list of 2 numbers"):
        parse_record({"prompt": "p", "candidates": ["a", "b"], "scores": [1]})


def test_candidates_as_a_model_to_text_mapping() -> None:
    record = parse_record({"prompt": "2+2?", "candidates": {"gpt": "4", "llama": "5"}, "scores": [1, 0]})
    assert isinstance(record, CandidateSet)
    assert (record.texts, record.models, record.scores) == (("4", "5"), ("gpt", "llama"), (1.0, 0.0))
    with pytest.raises(DataFormatError, match="'candidates' is empty; give the answers to rank"):
        parse_record({"prompt": "2+2?", "candidates": {}})
    with pytest.raises(DataFormatError, match="name the models in one place"):
        parse_record({"prompt": "2+2?", "candidates": {"gpt": "4"}, "models": ["x"]})


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "p", "a": "x", "b": "y", "label": 0}\n\n{not json\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:3: not valid JSON"):
        read_records(f)
    _write(f, [{"prompt": "p", "a": "x", "b": "y", "label": 5}])
    with pytest.raises(DataFormatError, match=r"bad.jsonl:1: pair label must be 0"):
        read_records(f)
    _write(f, [{"question": "p"}])
    with pytest.raises(DataFormatError, match=r"bad.jsonl:1: not a pair .* fields \['question'\]"):
        read_records(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_records(tmp_path / "missing.jsonl")
    _write(f, [{"prompt": "p", "candidates": ["a", "b"]}])
    with pytest.raises(DataFormatError, match="expected pairs"):
        read_pairs(f)


def test_write_and_read_back_gz(tmp_path: Path) -> None:
    recs = [Pair("p", "a", "b", 0, id="1", source="s"), CandidateSet("q", ("x", "y"), (1.0, 2.0), ("m", "n"), "2", "s")]
    write_jsonl(tmp_path / "out.jsonl.gz", recs)
    assert read_records(tmp_path / "out.jsonl.gz") == recs


def test_split_by_prompt_keeps_a_prompt_on_one_side() -> None:
    prompts = [f"instruction {i}" for i in range(400)]
    recs = [CandidateSet(p, ("a", "b"), (1.0, 2.0)) for p in prompts] + [Pair(p, "a", "b", 0) for p in prompts]
    kept, held = split_by_prompt(recs, 0.1, seed=3)
    held_prompts = {r.prompt for r in held}
    assert held_prompts.isdisjoint({r.prompt for r in kept})
    assert 20 <= len(held_prompts) <= 60
    assert all(prompt_in_holdout(p, 0.1, 3) == (p in held_prompts) for p in prompts)
    with pytest.raises(ValueError, match=r"held-out fraction must be in \[0, 1\)"):
        split_by_prompt(recs, 1.5)
