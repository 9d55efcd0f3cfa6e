"""The start-up block of ``blender-llm serve``: what it serves, from the config alone (the live server
prints it: ``test_process.py``)."""

from __future__ import annotations

from blender_core.app.serve.config import parse_config
from blender_core.app.serve.summary import startup_block, url


def backend(name: str, **settings: object) -> dict[str, object]:
    return {
        "name": name,
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "model": f"{name}-model",
        **settings,
    }


def test_the_block_names_backends_with_their_settings_the_fuser_limits_keys_and_metrics() -> None:
    config = parse_config(
        {
            "server": {"api_key_envs": ["KEY_A", "KEY_B"], "metrics": "port", "metrics_port": 9464},
            "ensemble": {"ranker": "builtin:pairrm-minilm-l6", "fuser": "big", "top_k": 3, "timeout": 12.5},
            "limits": {"max_running": 8, "max_in_flight": 40, "request_timeout": 60, "shutdown_timeout": 15},
            "backends": [
                backend("small", samples=3),
                backend("big", tier=2, price_in=2.5, price_out=10),
            ],
        }
    )
    lines = startup_block(config, api_url=url("0.0.0.0", 8000)).splitlines()
    assert lines == [
        'blender-llm serve: listening on http://0.0.0.0:8000/v1 (model "blender-llm")',
        "  backends  small  openai  small-model  3 samples",
        "            big    openai  big-model    tier 2, price 2.5 in / 10.0 out per 1M tokens",
        "  ranker    builtin:pairrm-minilm-l6",
        "  fuser     big (fuses the top 3)",
        "  limits    max_running 8, max_in_flight 40, request_timeout 60 s, backend timeout 12.5 s, "
        "shutdown_timeout 15 s",
        "  keys      required (Authorization: Bearer; 2 accepted, from KEY_A, KEY_B)",
        "  metrics   http://127.0.0.1:9464/metrics (a listener of its own, no keys)",
        "  stop      Ctrl-C or SIGTERM: the requests in flight finish, then exit 0; a second one stops at once "
        "(exit 1)",
    ]


def test_defaults_say_the_default_ranker_no_fuser_no_keys_and_metrics_off() -> None:
    config = parse_config({"server": {"metrics": "off"}, "backends": [backend("only")]})
    block = startup_block(config, api_url=url("::1", 8001))
    assert block.startswith('blender-llm serve: listening on http://[::1]:8001/v1 (model "blender-llm")\n')
    assert "  ranker    llm-blender/PairRM (the default)\n" in block
    assert "  fuser     none: the top-ranked answer is returned\n" in block
    assert "  keys      not required (no [server] api_key_envs: loopback only)\n" in block
    assert "  metrics   off\n" in block
