"""``--help`` of every command (issue 21, item 8): honest (flags as flags, ``FILES...``, help for every option,
no folder the user does not have, choices listed), one vocabulary (``--model``, ``--num-threads``,
``--strategy`` named and defaulted alike; the old names accepted, hidden), and quick: parsing imports neither
torch nor transformers (checked in a fresh interpreter, the honest check for speed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from blender_core.app import commands
from blender_core.app.cli import app
from tests.core.app.cli_process import CLI


def _group() -> Any:
    return typer.main.get_command(app)


def _commands() -> dict[str, Any]:
    return dict(_group().commands)


def _options(command: Any) -> Iterator[Any]:
    return (p for p in command.params if p.param_type_name == "option")


def _option(command: Any, name: str) -> Any:
    return next(p for p in _options(command) if name in p.opts)


def _help(*args: str) -> str:
    res = subprocess.run([*CLI, *args, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("command", [None, *sorted(_commands())])
def test_help_shows_flags_as_flags_and_names_no_private_folder(command: str | None) -> None:
    """Run as a user runs it, in a subprocess: no ``<bool>`` after a flag, no ``{files}``, no ``../shared``."""
    text = _help(*([command] if command else []))
    assert "<bool>" not in text
    assert "{files}" not in text
    assert "../shared" not in text
    assert "shared/data" not in text
    if command is None:
        assert "-v, --verbose  " in text
        return
    for option in _options(_commands()[command]):
        if option.is_flag and not option.hidden:  # "--plot / --no-plot", "--no-progress": no value after it
            shown = " / ".join(option.opts + option.secondary_opts)
            assert any(line.strip().startswith(shown) for line in text.splitlines()), (shown, text)


@pytest.mark.parametrize("command", ["rank", "label-pairs"])
def test_the_usage_line_names_the_files(command: str) -> None:
    text = _help(command)
    assert text.splitlines()[0].endswith(f" {command} [OPTIONS] FILES...")
    assert "\n  FILES...  Input files" in text


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_says_what_it_does(command: str) -> None:
    """Read from the click command objects: every visible parameter has help text."""
    for param in _commands()[command].params:
        if not getattr(param, "hidden", False):
            assert (param.help or "").strip(), f"{command} {param.opts} has no help"


def test_the_commands_speak_one_vocabulary() -> None:
    """The ranker is --model (-m), threads --num-threads, the strategy --strategy: the same names, help and
    defaults wherever the meaning is the same."""
    commands = _commands()
    seen: dict[str, list[str]] = {"--model": [], "--num-threads": [], "--strategy": []}
    for name, command in commands.items():
        for option in _options(command):
            for shared in seen:
                if shared in option.opts:
                    seen[shared].append(name)
                    if shared == "--model":
                        assert option.opts == ["--model", "-m"], (name, option.opts)
                    if shared == "--num-threads":
                        assert option.default == 0, name
                        assert option.help == _option(commands["rank"], "--num-threads").help, name
                    if shared == "--strategy":
                        assert option.default == "full", name  # the reference: every score
                        assert option.metavar == "[full|bubble|knockout|sort]", name
            assert not {"--ranker", "--threads", "--rank-strategy"} & set(option.opts), (name, option.opts)
    assert set(seen["--model"]) == set(commands) - {"serve", "train-ranker"}
    assert set(seen["--num-threads"]) == set(commands) - {"serve"}
    assert set(seen["--strategy"]) == {"rank", "label-pairs", "eval-ranker", "rank-examples", "train-fuser"}


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (
            "eval-fusion",
            ["--data", __file__, "--out", "o", "--ranker", "longest", "--threads=2"],
            {"model": "longest", "num_threads": 2},
        ),
        (
            "train-fuser",
            ["--base", "b", "--out", "o", "--ranker", "r", "--rank-strategy", "knockout"],
            {"ranker": "r", "strategy": "knockout"},
        ),
        ("demo", ["--ranker", "r"], {"ranker": "r"}),
    ],
)
def test_the_old_names_are_accepted_for_one_release_and_hidden(
    command: str, args: list[str], expected: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    click_command = _commands()[command]
    ctx = click_command.make_context(command, list(args))
    assert {k: ctx.params[k] for k in expected} == expected
    warnings = capsys.readouterr().err
    for old in ("--ranker", "--threads", "--rank-strategy"):
        if any(a.split("=")[0] == old for a in args):
            assert f"warning: {old} is now --" in warnings
    text = _help(command)
    for old in ("--ranker", "--threads ", "--rank-strategy"):
        assert old not in text


def test_a_choice_is_checked_before_anything_loads_and_lists_the_choices() -> None:
    """A bad --strategy is a usage error (exit 2) naming the option and the choices, in every command that
    has one, before any model is loaded (here: there is none to load)."""
    from typer.testing import CliRunner

    runs = {
        "rank": ["rank", "nowhere.jsonl", "--out", "o.jsonl"],
        "label-pairs": ["label-pairs", "nowhere.jsonl", "--out", "o.jsonl"],
        "eval-ranker": ["eval-ranker", "--data", __file__, "--out", "o"],  # any file: nothing is read
        "rank-examples": ["rank-examples", "-m", "nowhere"],
        "train-fuser": ["train-fuser", "--base", "nowhere", "--out", "o", "--examples", __file__],
    }
    for name, args in runs.items():
        res = CliRunner().invoke(app, [*args, "--strategy", "best"])
        assert res.exit_code == 2, (name, res.output)
        assert "Invalid value for '--strategy': 'best' is not one of full, bubble, knockout, sort" in res.output
        assert "Traceback" not in res.output
    res = CliRunner().invoke(app, ["serve", "--config", "c.toml", "--log-level", "verbose"])
    assert res.exit_code == 2
    assert "'verbose' is not one of critical, error, warning, info, debug, trace" in res.output


def test_the_cli_choices_are_the_librarys() -> None:
    """The CLI names its choices without importing the library (for --help's speed): the same lists."""
    from blender_core.app.commands import _ranker
    from blender_core.app.commands._batch import ENGINES as CLI_ENGINES
    from blender_core.app.commands._judge import JUDGE_PROMPT_NAMES, judge_prompt
    from blender_core.app.commands.calibrate import POLICIES as CLI_POLICIES
    from blender_core.app.commands.label_pairs import PAIR_CHOICES as CLI_PAIR_CHOICES
    from blender_core.app.commands.serve import LOG_LEVELS
    from blender_core.batch.jobs import ENGINES
    from blender_core.batch.pairs import PAIR_CHOICES
    from blender_core.evaluation.calibrate import POLICIES
    from blender_core.evaluation.gpt_rank import GPT_RANK_STRATEGIES
    from blender_core.ranking import BUILTIN_RANKER
    from blender_core.ranking.strategies import STRATEGIES

    assert tuple(STRATEGIES) == _ranker.STRATEGIES
    assert _ranker.BUILTIN_RANKER == BUILTIN_RANKER
    assert tuple(ENGINES) == CLI_ENGINES
    assert tuple(PAIR_CHOICES) == CLI_PAIR_CHOICES
    assert tuple(POLICIES) == CLI_POLICIES
    assert _option(_commands()["eval-fusion"], "--judge-strategy").metavar == f"[{'|'.join(GPT_RANK_STRATEGIES)}]"
    assert all(judge_prompt(name) for name in JUDGE_PROMPT_NAMES)
    uvicorn = pytest.importorskip("uvicorn.config")
    assert tuple(uvicorn.LOG_LEVELS) == LOG_LEVELS


def test_help_imports_neither_torch_nor_transformers() -> None:
    """Parse first, import later: ``blender-llm --help`` and every ``blender-llm COMMAND --help``, in a fresh
    interpreter, leave torch, transformers and the library's ranking and batch code unimported."""
    script = """
import json, sys
from blender_core.app.cli import app
for args in ([], *[[name] for name in sys.argv[1:]]):
    try:
        app([*args, "--help"], prog_name="blender-llm")
    except SystemExit as exit:
        assert exit.code == 0, (args, exit.code)
heavy = ("torch", "transformers", "numpy", "blender_core.ranking", "blender_core.batch", "blender_core.fusion")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.startswith(heavy[3:]))))
"""
    res = subprocess.run(
        [sys.executable, "-c", script, *sorted(_commands())], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("busy", "cores", "default", "threads"),
    [
        (2.5, 2, 2, 1),  # a busy 2-core machine (the case): one thread
        (1.2, 2, 2, 1),  # one core of two busy
        (0.3, 2, 2, 2),  # idle: torch's default
        (0.2, 8, 8, 8),
        (3.0, 8, 8, 5),  # three of eight busy
        (0.0, 16, 8, 8),  # never more than torch's default (its physical cores)
        (40.0, 16, 8, 1),  # at least one
    ],
)
def test_the_thread_rule(busy: float, cores: int, default: int, threads: int) -> None:
    from blender_core.app.commands._threads import auto_threads

    assert auto_threads(default, busy, cores) == threads


def test_busy_cores_reads_this_machine() -> None:
    from blender_core.app.commands._threads import busy_cores

    measured = busy_cores(sample_s=0.05)
    if measured is None:
        pytest.skip("this OS reports neither a load average nor /proc/stat")
    busy, cores = measured
    assert cores >= 1
    assert busy >= 0.0


def test_rank_with_the_default_threads_takes_fewer_on_a_busy_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--num-threads 0`` (the default) applies the rule before the ranker loads: on a machine whose two cores
    other work keeps busy, torch runs one thread. (The measurement is the OS's boundary, set here.)"""
    import torch
    from typer.testing import CliRunner

    monkeypatch.setattr(f"{commands.__name__}._threads.busy_cores", lambda sample_s=0.3: (1.9, 2))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        res = CliRunner().invoke(app, ["rank", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl")])
        assert res.exit_code == 2  # the input does not exist: refused after the threads are set
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        CliRunner().invoke(app, ["rank", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o"), "--num-threads", "2"])
        assert torch.get_num_threads() == 2  # a number given is kept
    finally:
        torch.set_num_threads(before)
