"""The settings an output records (``blender_core.batch.settings``, issue 21): a rerun with other settings is refused
before anything is loaded or written, ``overwrite`` starts over, outputs written before settings were recorded still
resume; and ``label-pairs`` remembers the records that gave no pair, so a rerun ranks nothing again."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from blender_core.batch.output import empty_path
from blender_core.batch.pairs import PairPolicy, PairRows, label_pairs
from blender_core.batch.parts import JOURNAL, PartStore, parts_folder
from blender_core.batch.rank_file import SettingsMismatchError, rank_files
from blender_core.batch.settings import read_settings, settings_path
from blender_core.batch.sharded import RunOptions, run_sharded
from blender_core.batch.shards import JobSpec, LocalExecutor, RankRows
from tests.core.batch.old_rank import DATA as OLD
from tests.core.batch.old_rank import FractionRanker
from tests.core.batch.ray_rankers import Interrupted
from tests.core.batch.records import read_lines, write_lines
from tests.core.batch.sharded_records import many_sets, with_bad_lines
from tests.core.batch.test_sharded import StopAfter
from tests.helpers.core_fakes import LengthRanker


def _calls(ranker: LengthRanker) -> int:
    """Records ranked (every prompt of every ``rank`` call)."""
    return sum(len(prompts) for prompts, _, _ in ranker.calls)


def _ties(n: int) -> list[dict[str, Any]]:
    """Records of which every third gives no pair under the length ranker (its candidates are equally long)."""
    records = [r for r in many_sets(3 * n, seed=8) if "candidates" in r][:n]
    for k in range(0, n, 3):
        records[k] = {key: v for key, v in records[k].items() if key != "models"} | {"candidates": ["aa", "bb", "cc"]}
    return records


# ---------------------------------------------------------------------------- item 1: a rerun never mixes settings


def test_label_pairs_with_another_policy_is_refused_before_any_work(tmp_path: Path) -> None:
    """The issue's reproduction: ``--margin 0.5``, then ``--pairs best-vs-each --margin 0`` appended 106 pairs of the
    other policy to the 126 there (232 lines of two policies)."""
    inp = write_lines(tmp_path / "in.jsonl", _ties(12))
    out = tmp_path / "pairs.jsonl"
    first = label_pairs(inp, out, LengthRanker(), policy=PairPolicy("best-vs-worst", 0.5), show_progress=False)
    assert first.rows == 8  # the 4 ties give no pair
    before = {p: p.read_bytes() for p in (out, empty_path(out), settings_path(out))}
    ranker = LengthRanker()
    started: list[bool] = []
    with pytest.raises(SettingsMismatchError) as refused:
        label_pairs(
            inp,
            out,
            ranker,
            policy=PairPolicy("best-vs-each", 0.0),
            show_progress=False,
            on_start=lambda: started.append(True),
        )
    assert refused.value.differences == (("pairs", "best-vs-worst", "best-vs-each"), ("margin", 0.5, 0.0))
    assert str(refused.value) == (
        f'{out} was written with other settings: pairs "best-vs-worst" (this run: "best-vs-each"), margin 0.5 '
        f"(this run: 0.0). Nothing was ranked or written. Run with the settings it records ({out}.settings.json), "
        "start over with overwrite=True (which deletes it, its errors file and its parts), or write to another output"
    )
    assert _calls(ranker) == 0
    assert not started  # refused before the command would load its ranker
    assert {p: p.read_bytes() for p in before} == before  # nothing written
    assert not parts_folder(out).exists()


def test_rank_with_another_strategy_is_refused(tmp_path: Path) -> None:
    """``rank --strategy full`` into an output written with knockout appended without a word."""
    inp = write_lines(tmp_path / "in.jsonl", many_sets(10))
    out = tmp_path / "ranked.jsonl"
    with pytest.raises(Interrupted):  # an interrupted knockout run: 4 records merged, a part waiting, 2 to go
        run_sharded(
            inp,
            out,
            StopAfter(LocalExecutor(LengthRanker()), 1),
            JobSpec(RankRows(), "knockout", ranker_name="length"),
            RunOptions(4, show_progress=False),
        )
    assert len(read_lines(out)) == 4
    assert read_settings(out) == {
        "format": 1,
        "job": "rank",
        "ranker": "length",
        "revision": None,
        "ranker_options": {},
        "strategy": "knockout",
        "score_key": None,
    }
    with pytest.raises(SettingsMismatchError, match=r'strategy "knockout" \(this run: "full"\)') as refused:
        rank_files(inp, out, LengthRanker(), shard_size=4, show_progress=False)
    assert refused.value.differences == (("strategy", "knockout", "full"),)
    assert len(read_lines(out)) == 4
    assert len(list(parts_folder(out).glob("*.part.jsonl"))) == 1  # the interrupted run's part waits, untouched
    # the same settings resume it; another output takes the new ones
    report = rank_files(inp, out, LengthRanker(), strategy="knockout", shard_size=4, show_progress=False)
    assert (report.skipped, report.written, report.shards_reused) == (4, 6, 1)
    assert rank_files(inp, tmp_path / "full.jsonl", LengthRanker(), show_progress=False).written == 10


def test_the_ranker_and_its_scoring_options_are_settings_its_runtime_options_not(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(4))
    out = tmp_path / "ranked.jsonl"
    rank_files(inp, out, LengthRanker(), show_progress=False)
    with pytest.raises(SettingsMismatchError, match=r'ranker "length" \(this run: "fraction"\)'):
        rank_files(inp, out, FractionRanker(), show_progress=False)
    # a spec with a revision and a dtype, never loaded (the hub id does not exist): refused before loading
    spec = "nobody/no-such-ranker"
    out2 = tmp_path / "pinned.jsonl"
    write_lines(out2, [])
    settings_path(out2).write_text(
        json.dumps({"format": 1, "job": "rank", "ranker": spec, "revision": "v1", "ranker_options": {"dtype": "float16"},
                    "strategy": "full", "score_key": None})
    )  # fmt: skip
    out2.write_text('{"line": 1, "line_hash": "x"}\n')
    with pytest.raises(SettingsMismatchError) as refused:
        rank_files(inp, out2, spec, ranker_options={"revision": "v2", "dtype": "float16", "device": "cpu"},
                   show_progress=False)  # fmt: skip
    assert refused.value.differences == (("revision", "v1", "v2"),)
    with pytest.raises(SettingsMismatchError) as refused:
        rank_files(inp, out2, spec, ranker_options={"revision": "v1", "batch_size": 2}, show_progress=False)
    assert refused.value.differences == (("ranker_options", {"dtype": "float16"}, {}),)


def test_overwrite_starts_over(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", with_bad_lines(_ties(12)))
    out, errors = tmp_path / "pairs.jsonl", tmp_path / "errors.jsonl"
    label_pairs(inp, out, LengthRanker(), policy=PairPolicy(margin=0.5), errors_path=errors, show_progress=False)
    assert empty_path(out).exists()
    store = PartStore(out)
    store.folder.mkdir()
    (store.folder / "0000-00000009.stale.part.jsonl").write_text("left by a stopped run")
    (store.folder / "0000-00000009.stale.partial.jsonl").write_text("and its chunks")
    want = tmp_path / "want.jsonl"
    label_pairs(inp, want, LengthRanker(), policy=PairPolicy("best-vs-each"), show_progress=False)
    errors.write_text("the errors of a run of other settings\n")
    report = label_pairs(
        inp, out, LengthRanker(), policy=PairPolicy("best-vs-each"), overwrite=True, errors_path=errors,
        show_progress=False,
    )  # fmt: skip
    assert out.read_bytes() == want.read_bytes()  # the new policy's pairs only
    assert report.skipped == 0
    assert read_settings(out) == read_settings(want)
    assert empty_path(out).read_bytes() == empty_path(want).read_bytes()
    assert len(errors.read_text().splitlines()) == len(report.errors) == 8  # this run's bad lines only
    assert not parts_folder(out).exists()


def test_an_output_written_before_settings_were_recorded_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``rank``'s output of 3f7657d, left half-written: resumed, with one warning, and recorded from then on."""
    out = tmp_path / "ranked.jsonl"
    shutil.copyfile(OLD / "partial_cut.jsonl", out)
    with caplog.at_level(logging.WARNING, logger="blender_core.batch.settings"):
        report = rank_files(OLD / "in.jsonl", out, FractionRanker(), shard_size=8, show_progress=False)
    assert out.read_bytes() == (OLD / "ranked.jsonl").read_bytes()
    assert report.skipped == 15
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "blender_core.batch.settings"]
    assert warning == (
        f"{out} records no settings (it was written before outputs recorded them), so whether its records were made "
        f"with this run's settings is unknown; resuming it, and recording this run's settings in {out}.settings.json"
    )
    recorded = read_settings(out)
    assert recorded is not None
    assert recorded["ranker"] == "fraction"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="blender_core.batch.settings"):
        assert rank_files(OLD / "in.jsonl", out, FractionRanker(), show_progress=False).skipped == 45
    assert not caplog.records  # said once
    with pytest.raises(SettingsMismatchError):
        rank_files(OLD / "in.jsonl", out, FractionRanker(), strategy="bubble", show_progress=False)


def test_the_settings_are_recorded_before_the_first_row(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", many_sets(8))
    out = tmp_path / "ranked.jsonl"
    seen: list[bool] = []
    rank_files(
        inp,
        out,
        LengthRanker(),
        shard_size=4,
        show_progress=False,
        on_shard=lambda _: seen.append(settings_path(out).exists() and not out.exists()),
    )
    assert seen[0]  # the first part was written (and not merged yet) with the settings recorded


# ---------------------------------------------------------------------------- item 2: records without a pair


def test_records_that_gave_no_pair_are_not_ranked_again(tmp_path: Path) -> None:
    """The issue: 38 of 164 PandaLM records gave no pair, and every rerun ranked them again."""
    inp = write_lines(tmp_path / "in.jsonl", _ties(12))
    out = tmp_path / "pairs.jsonl"
    label_pairs(inp, out, LengthRanker(), shard_size=5, show_progress=False)
    assert [r["line"] for r in read_lines(empty_path(out))] == [1, 4, 7, 10]  # the ties, by their key fields
    ranker = LengthRanker()
    again = label_pairs(inp, out, ranker, shard_size=5, show_progress=False)
    assert _calls(ranker) == 0
    assert (again.written, again.skipped) == (0, 12)


def test_an_interrupted_labelling_remembers_each_record_once(tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", _ties(20))
    label_pairs(inp, tmp_path / "want.jsonl", LengthRanker(), shard_size=4, show_progress=False)
    out = tmp_path / "out.jsonl"
    with pytest.raises(Interrupted):
        run_sharded(
            inp,
            out,
            StopAfter(LocalExecutor(LengthRanker()), 2),
            JobSpec(PairRows(), ranker_name="length"),
            RunOptions(4, show_progress=False),
        )
    # a crash in the middle of merging the next part: its journal written, half of its records' keys appended
    store = PartStore(out)
    (left,) = parts_folder(out).glob("*.part.jsonl")
    empty = empty_path(out)
    state = {"shard": left.name.split(".")[0], "part": left.name, "offset": out.stat().st_size,
             "empty_offset": empty.stat().st_size}  # fmt: skip
    (store.folder / JOURNAL).write_text(json.dumps(state))
    empty.write_bytes(empty.read_bytes() + b'{"line": 9, "line_ha')
    ranker = LengthRanker()
    label_pairs(inp, out, ranker, shard_size=4, show_progress=False)
    assert out.read_bytes() == (tmp_path / "want.jsonl").read_bytes()
    assert empty.read_bytes() == empty_path(tmp_path / "want.jsonl").read_bytes()  # each once
    assert _calls(ranker) == 20 - 8 - 4  # two shards merged, the third's part reused
