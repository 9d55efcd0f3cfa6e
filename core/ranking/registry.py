"""``load_ranker``: the one way every consumer turns a ranker spec into a ranker, cached and thread-safe.

A spec is a ranker object (returned as is), ``None`` (the default ranker, :data:`DEFAULT_RANKER`, i.e.
``llm-blender/PairRM``), a built-in name (``"builtin:pairrm-minilm-l6"``, the offline stand-in), a local
folder (any PairRM layout or a compact export of ``train-ranker --lora``), a Hugging Face hub id, or a
reward model as ``"reward:<hub id or folder>"``. Names are loaded once per process and set of loading
options; concurrent first calls for one spec load it once.

Example:
    >>> from blender_core.ranking import load_ranker
    >>> ranker = load_ranker("llm-blender/PairRM", device="cpu")  # doctest: +SKIP
    >>> load_ranker("llm-blender/PairRM", device="cpu") is ranker  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from blender_core.ranking.interface import Ranker
from blender_core.ranking.pairrm.builtin import BUILTIN_NAMES, BUILTIN_RANKER, is_builtin
from blender_core.ranking.pairrm.pair_ranker import PairRanker

#: the ranker every consumer uses when none is given: the paper's PairRM, fetched from the hub once
DEFAULT_RANKER = "llm-blender/PairRM"
#: the prefix of a reward-model spec: ``"reward:<hub id or folder>"``
REWARD_PREFIX = "reward:"

#: how many items the rerankers (the LangChain compressor, the LlamaIndex postprocessor) keep by default
DEFAULT_TOP_N = 3

#: what ``load_ranker`` accepts
RankerSpec: TypeAlias = Ranker | str | Path | None

_cache: dict[tuple[Any, ...], Ranker] = {}
_locks: dict[tuple[Any, ...], threading.Lock] = {}
_guard = threading.Lock()


def check_ranker_spec(spec: Any) -> RankerSpec:
    """``spec`` if :func:`load_ranker` can take it, else an error saying what can be passed.

    What can be checked without loading is: the type (``TypeError``), a built-in name that does not exist,
    a local folder that does not exist, and a name that is neither a folder nor a valid hub id
    (``ValueError``). Whether a hub id exists is only known when it is loaded, on first use.
    """
    if spec is None or isinstance(spec, Ranker):
        return spec
    if isinstance(spec, (str, Path)):
        _check_name(spec)
        return spec
    raise TypeError(
        f"ranker must be a ranker object (with rank(), e.g. a PairRanker), a folder, a hub id, "
        f"a built-in name such as {BUILTIN_RANKER!r}, 'reward:<hub id or folder>', or None for the default "
        f"({DEFAULT_RANKER}); got {type(spec).__name__}"
    )


def _check_name(spec: str | Path) -> None:
    text = str(spec)
    if isinstance(spec, str) and text.startswith(REWARD_PREFIX):
        if not text.removeprefix(REWARD_PREFIX):
            raise ValueError(f"the ranker {text!r} names no reward model; pass 'reward:<hub id or folder>'")
        _check_name(text.removeprefix(REWARD_PREFIX))
        return
    if (isinstance(spec, str) and is_builtin(spec)) or Path(text).expanduser().exists():
        return
    if text.startswith("builtin:"):
        raise ValueError(f"no built-in ranker named {text!r}; built-in names: {', '.join(BUILTIN_NAMES)}")
    if isinstance(spec, str):  # a Path is a folder, never a hub id
        try:
            validate_repo_id(text)
            return
        except HFValidationError:
            pass
    raise ValueError(
        f"the ranker {text!r} is neither an existing folder nor a hub id (owner/name); pass the folder of a "
        f"ranker checkpoint, a hub id such as 'llm-blender/PairRM', or a built-in name ({', '.join(BUILTIN_NAMES)})"
    )


def spec_name(spec: RankerSpec) -> str:
    """How a spec or a ranker is shown in metadata and logs: the name or path, the object's ``name`` (else its
    class name), or the default ranker's for ``None``."""
    if spec is None:
        return DEFAULT_RANKER
    if isinstance(spec, (str, Path)):
        return str(spec)
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) and name else type(spec).__name__


def load_ranker(spec: RankerSpec = None, **options: Any) -> Ranker:
    """The ranker for ``spec``, loaded on the first call and shared by later ones.

    Args:
        spec: a ranker object, None (the default ranker), a built-in name, a folder or a hub id.
        options: loading options for the ranker's ``from_pretrained`` (``device``, ``dtype``,
            ``batch_size``, ``revision``, ``token``, ...); part of the cache key. Not allowed with an object.

    Raises:
        TypeError: for a spec of another type, or options given with a ranker object.
        OSError / ValueError / ImportError: from loading, saying what was wrong and what to do (for the
            default ranker offline: which offline ranker to pass instead).
    """
    check_ranker_spec(spec)
    if spec is not None and not isinstance(spec, (str, Path)):
        if options:
            raise TypeError(
                f"load_ranker() got loading options {sorted(options)} with a ranker object; it is already loaded"
            )
        return spec
    name = DEFAULT_RANKER if spec is None else str(spec)
    key = (name, *sorted((k, repr(v)) for k, v in options.items()))
    with _guard:
        if key in _cache:
            return _cache[key]
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one load per key; other keys load in parallel
        if key not in _cache:
            try:
                ranker = _load(name, options)
            except OSError as exc:
                if spec is None:
                    raise DefaultRankerUnavailableError(exc) from exc
                raise
            with _guard:
                _cache[key] = ranker
        return _cache[key]


def loaded_ranker(spec: RankerSpec = None) -> Ranker | None:
    """The ranker for ``spec`` if it needs no loading (an object, or a name already loaded with no options),
    else None: what async code checks before it hops to a thread to load one."""
    if spec is not None and not isinstance(spec, (str, Path)):
        return spec
    with _guard:
        return _cache.get((DEFAULT_RANKER if spec is None else str(spec),))


def clear_ranker_cache() -> None:
    """Forget every loaded ranker (they are freed once nothing else holds them)."""
    with _guard:
        _cache.clear()
        _locks.clear()


def cached_specs() -> list[str]:
    """The names of the rankers loaded so far (a loaded spec is listed once per set of options)."""
    with _guard:
        return [key[0] for key in _cache]


def _load(name: str, options: dict[str, Any]) -> Ranker:
    if name.startswith(REWARD_PREFIX):
        # the reward models' loader, on demand
        from blender_core.ranking.reward.reward_ranker import RewardModelRanker

        return RewardModelRanker.from_pretrained(name.removeprefix(REWARD_PREFIX), **options)
    return PairRanker.from_pretrained(name, **options)


class DefaultRankerUnavailableError(OSError):
    """The default ranker could not be loaded (offline, or the hub unreachable), and what to pass instead.

    ``str(error)`` says it in Python's terms (``ranker=...``); :meth:`explain` in another interface's (the
    command line: ``--model ...``).
    """

    def __init__(self, cause: OSError) -> None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        self.why = (
            "HF_HUB_OFFLINE is set, so the hub is not asked, and there is no cached copy"
            if offline
            else "it is fetched from the Hugging Face hub on first use and cached, and neither worked here"
        )
        self.cause = cause
        super().__init__(self.explain(lambda spec: f"ranker={spec!r}"))

    def explain(self, pass_ranker: Callable[[str], str]) -> str:
        """The message, with ``pass_ranker(spec)`` saying how to pass a ranker (``--model {spec}``)."""
        return (
            f"the default ranker {DEFAULT_RANKER!r} could not be loaded: {self.why} ({self.cause}). Offline, "
            f"pass a ranker explicitly: {pass_ranker(BUILTIN_RANKER)} (shipped with this package, needs "
            "blender-llm[local]; a small stand-in, no better than 'the longer answer wins' on human labels) or "
            "the folder of a PairRM checkpoint"
        )
