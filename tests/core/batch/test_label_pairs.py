"""``blender_core.batch.pairs``: the pair policies, the TRL fields from each kind of ranker (PairRM, a reward model,
a judge), bad lines as ``rank`` reports them, exactly once through an interruption, and the same pairs in this
process and on Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blender_core.batch.pairs import PairPolicy, PairRows, choose_pairs, label_pairs
from blender_core.batch.rank_file import rank_file
from blender_core.ranking import Ranker
from tests.core.batch.ray_local import ONE_ACTOR, local_ray
from tests.core.batch.ray_rankers import Built, InterruptAfter, Interrupted, scripted_judge
from tests.core.batch.records import read_lines, write_lines
from tests.core.batch.sharded_records import errors_of, many_sets, with_bad_lines
from tests.helpers.core_fakes import LengthRanker

TRL = ("prompt", "chosen", "rejected")


@pytest.mark.parametrize(
    ("choice", "margin", "want"),
    [
        ("best-vs-worst", 0.0, [(1, 3)]),
        ("best-vs-each", 0.0, [(1, 0), (1, 2), (1, 3)]),
        ("all-pairs", 0.0, [(1, 0), (1, 2), (1, 3), (0, 2), (0, 3)]),  # 2 ties 3: no pair between them
        ("all-pairs", 2.0, [(1, 2), (1, 3)]),  # only the clear preferences (1.5 apart is not enough)
        ("best-vs-worst", 5.0, []),  # none is that clear: the record gives no pair
    ],
)
def test_each_policy_chooses_its_pairs(choice: Any, margin: float, want: list[tuple[int, int]]) -> None:
    scores = [0.5, 2.0, -1.0, -1.0]  # candidate 1 best, 2 and 3 tied last
    ranks = [2, 1, 3, 3]
    got = choose_pairs(scores, ranks, PairPolicy(choice, margin))
    assert got == want
    with pytest.raises(ValueError, match="margin must be a finite number >= 0, got -1"):
        PairPolicy(choice, -1)
    with pytest.raises(ValueError, match="pair choice"):
        PairPolicy("best-vs-median")  # type: ignore[arg-type]


def _ranked(ranker: Ranker, records: list[dict[str, Any]]) -> list[tuple[list[float], list[int]]]:
    rankings = ranker.rank([r["prompt"] for r in records], [r["candidates"] for r in records])
    return [([float(s) for s in r.scores], [int(k) for k in r.ranks]) for r in rankings]


@pytest.mark.parametrize("choice", ["best-vs-worst", "best-vs-each", "all-pairs"])
def test_pairs_in_trl_format_from_any_ranker(any_ranker: Ranker, choice: Any, tmp_path: Path) -> None:
    records = [r for r in many_sets(9, seed=2) if "candidates" in r]
    inp = write_lines(tmp_path / "in.jsonl", records)
    out = tmp_path / "pairs.jsonl"
    policy = PairPolicy(choice)
    report = label_pairs(inp, out, any_ranker, policy=policy, shard_size=4, show_progress=False)
    rows = read_lines(out)
    assert report.rows == len(rows)
    want = []
    for k, (rec, (scores, ranks)) in enumerate(zip(records, _ranked(any_ranker, records), strict=True), 1):
        for c, r in choose_pairs(scores, ranks, policy):
            want.append((rec.get("id", k), rec["prompt"], rec["candidates"][c], rec["candidates"][r], c, r))
    assert [
        (x.get("id", x["line"]), *(x[f] for f in TRL), x["chosen_index"], x["rejected_index"]) for x in rows
    ] == want
    for row in rows:
        assert all(isinstance(row[f], str) for f in TRL)
        assert row["margin"] == pytest.approx(row["score_chosen"] - row["score_rejected"])
        assert row["margin"] > 0
    assert report.written == len(records)


def test_bad_lines_are_reported_as_rank_reports_them(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(12)))
    want = rank_file(
        LengthRanker(), inp, tmp_path / "ranked.jsonl", errors_path=tmp_path / "r.err", show_progress=False
    )
    got = label_pairs(
        inp, tmp_path / "pairs.jsonl", LengthRanker(), errors_path=tmp_path / "p.err", show_progress=False
    )
    assert got.errors == want.errors
    assert errors_of(tmp_path / "p.err") == errors_of(tmp_path / "r.err")
    # one pair (best vs worst) per ranked record whose scores differ; in input order, with the record's key
    ranked = read_lines(tmp_path / "ranked.jsonl")
    clear = [r for r in ranked if len(set(r["scores"])) > 1]
    assert [(r["line"], r["chosen"]) for r in read_lines(tmp_path / "pairs.jsonl")] == [
        (r["line"], r["best_text"]) for r in clear
    ]


def test_an_interrupted_labelling_resumes_exactly_once(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(30))
    policy = PairPolicy("all-pairs")  # several lines per record: none may be lost or doubled
    label_pairs(
        inp, tmp_path / "want.jsonl", LengthRanker(), policy=policy, shard_size=4, show_progress=False
    )
    out = tmp_path / "out.jsonl"
    for calls in (1, 3, 5):  # stopped in a later shard each time
        with pytest.raises(Interrupted):
            label_pairs(
                inp,
                out,
                InterruptAfter(LengthRanker(), calls),
                policy=policy,
                shard_size=4,
                chunk_size=2,
                show_progress=False,
            )
    label_pairs(inp, out, LengthRanker(), policy=policy, shard_size=4, chunk_size=2, show_progress=False)
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    with pytest.raises(ValueError, match="ray_settings is for engine='ray'"):
        label_pairs(inp, tmp_path / "x.jsonl", LengthRanker(), ray_settings=ONE_ACTOR, show_progress=False)


# ---------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    yield from local_ray()


def _ray_spec(kind: str, tiny_reference_ckpt: Path, tiny_reward_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The ``any_ranker`` of ``kind`` as the actors get it: a spec each loads (the judge: built where it runs)."""
    if kind == "pairrm":
        return str(tiny_reference_ckpt), {"device": "cpu", "batch_size": 8}
    if kind == "reward":
        return f"reward:{tiny_reward_dir}", {}
    return Built(scripted_judge), {}


def test_ray_and_local_write_the_same_pairs(
    ray_instance: Any,
    any_ranker: Ranker,
    request: pytest.FixtureRequest,
    tiny_reference_ckpt: Path,
    tiny_reward_dir: Path,
    tmp_path: Path,
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(many_sets(16, seed=4)))
    policy = PairPolicy("best-vs-each")
    local = label_pairs(
        inp, tmp_path / "local.jsonl", any_ranker, policy=policy, shard_size=5, show_progress=False
    )
    spec, options = _ray_spec(
        request.node.callspec.params["any_ranker"], tiny_reference_ckpt, tiny_reward_dir
    )
    on_ray = label_pairs(
        inp,
        tmp_path / "ray.jsonl",
        spec,
        policy=policy,
        engine="ray",
        ranker_options=options,
        ray_settings=ONE_ACTOR,
        shard_size=5,
        show_progress=False,
    )
    a, b = read_lines(tmp_path / "local.jsonl"), read_lines(tmp_path / "ray.jsonl")
    floats = ("score_chosen", "score_rejected", "margin")
    assert [{k: v for k, v in r.items() if k not in floats} for r in a] == [
        {k: v for k, v in r.items() if k not in floats} for r in b
    ]
    for x, y in zip(a, b, strict=True):
        assert [x[f] for f in floats] == pytest.approx([y[f] for f in floats], abs=1e-5)
    assert (on_ray.written, on_ray.rows, on_ray.errors) == (local.written, local.rows, local.errors)
    assert len(a) > local.written  # best vs each: more pairs than records
    assert PairRows(policy).name == "pairs:best-vs-each:0.0"
