"""Write a calibration: ``report.json``, ``report.md`` (the table, the recommendation, the config snippet)
and ``curve.png`` (win rate against cost per instruction)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blender_core.evaluation.calibrate.answers import CHARS_PER_TOKEN
from blender_core.evaluation.calibrate.recommend import Recommendation, config_snippet
from blender_core.evaluation.calibrate.sweep import Calibration

PLOT_FILE = "curve.png"
#: what the report says of its simplifications
NOTES = (
    f"Tokens: ceil(characters / {CHARS_PER_TOKEN}) of the instruction (input) and of each answer (output); no tokenizer.",
    "Latency proxy (which answers a quorum sees first, and the seconds shown): first_token_s + output tokens / "
    "tokens_per_s from the price table; the ranker's time is not counted.",
    "Cost: the answered calls, priced as the engine prices them; a call a quorum cancels costs nothing here "
    "(a real API may bill its input and the tokens it produced before the cancellation).",
    "Timeouts: the engine's timeout (30 s unless set) applies to the simulated latency; a call past it fails, "
    "and a request without any answer counts as a loss (failed).",
    "Win rate: mean(pref - 1) x 100 of the chosen answers (the judge's preference over the pool's reference).",
    "Best single: the model with the best mean pref on these instructions (chosen in hindsight).",
)


def build_report(
    calibration: Calibration, recommendation: Recommendation, *, command: str | None = None,
    data: str | None = None, seconds: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The ``report.json`` object."""
    c = calibration
    point = recommendation.point
    out: dict[str, Any] = {
        "policy": c.policy,
        "ranker": c.ranker,
        "instructions": c.n_instructions,
        "models": {
            n: {"tier": c.tiers[n], **m.model_dump(exclude={"samples", "tier"})} for n, m in c.table.models.items()
        },
        "settings": dict(c.base_settings),
        "points": [p.to_dict() for p in c.points],
        "oracle_points": None if c.oracle_points is None else [p.to_dict() for p in c.oracle_points],
        "baselines": {k: v.to_dict() for k, v in c.baselines.items()},
        "recommendation": {
            "target": recommendation.target,
            "met": recommendation.met,
            "point": point.to_dict(),
            "config": config_snippet(c, recommendation),
        },
        "rankings": c.rankings,
        "notes": list(NOTES),
    }
    if data is not None:
        out["data"] = data
    if command is not None:
        out["command"] = command
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    return out


def _row(p: Mapping[str, Any]) -> str:
    stops = ", ".join(f"{k}: {v}" for k, v in p["stops"].items())
    return (
        f"| {p['label']} | {p['win_rate']:.1f} | {p['cost']:.6f} | {p['calls']:.2f} | {p['cancelled']:.2f} "
        f"| {p['latency_p50']:.1f} / {p['latency_p95']:.1f} | {stops} |"
    )


HEADER = [
    "| setting | win rate | cost / instr. | calls / instr. | cancelled / instr. | latency p50 / p95 (s) | stops |",
    "|---|---:|---:|---:|---:|---:|---|",
]


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the curve, the oracle's, the baselines, the recommendation and its config."""
    lines = [f"# Calibration of `--policy {report['policy']}` with `{report['ranker']}`", ""]
    if report.get("command"):
        lines += ["```bash", str(report["command"]), "```", ""]
    lines += [f"{report['instructions']} instructions; {len(report['models'])} models.", ""]
    lines += [f"## {report['policy']} with {report['ranker']}", "", *HEADER, *map(_row, report["points"]), ""]
    if report["oracle_points"] is not None:
        lines += [f"## {report['policy']} with the oracle (judge labels as ranker)", "", *HEADER]
        lines += [*map(_row, report["oracle_points"]), ""]
    lines += ["## Baselines", "", *HEADER, *map(_row, report["baselines"].values()), ""]
    rec = report["recommendation"]
    verdict = "" if rec["met"] else " (no setting meets it: the closest)"
    lines += [
        f"## Recommended for {rec['target']}{verdict}: {rec['point']['label']}",
        "",
        "```toml",
        rec["config"].rstrip("\n"),
        "```",
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
    ]
    return "\n".join(lines)


def plot_report(report: Mapping[str, Any], path: str | Path) -> None:
    """Win rate against cost per instruction: the policy's curve, the oracle's, the baselines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError('plotting needs matplotlib; install it with: pip install "blender-llm[eval]"') from exc
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    curves = [(f"{report['policy']}, {report['ranker']}", report["points"], "o-")]
    if report["oracle_points"] is not None:
        curves.append((f"{report['policy']}, oracle", report["oracle_points"], "s--"))
    for label, points, style in curves:
        ax.plot([p["cost"] for p in points], [p["win_rate"] for p in points], style, label=label, markersize=4)
    for p, marker in zip(report["baselines"].values(), ("*", "D", "^"), strict=False):
        ax.plot([p["cost"]], [p["win_rate"]], marker, markersize=10, linestyle="none", label=p["label"])
    ax.set_xscale("log")
    ax.set_xlabel("cost per instruction ($, log scale)")
    ax.set_ylabel("selection win rate")
    ax.set_title(f"{report['instructions']} instructions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: Mapping[str, Any], out: str | Path, *, plot: bool = True) -> Path:
    """Write ``report.json``, ``report.md`` and (``plot``) ``curve.png`` into the folder ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.md").write_text(report_markdown(report))
    if plot:
        plot_report(report, folder / PLOT_FILE)
    return folder
