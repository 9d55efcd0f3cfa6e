"""Write an evaluation report: ``report.json``, ``report.md`` and a PNG of the ranker against the baselines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blender_core.evaluation.ranker import PairSetResult, SelectionResult

PLOT_FILE = "accuracy.png"


def build_report(
    pairs: Mapping[str, PairSetResult],
    selection: Mapping[str, SelectionResult],
    *,
    model: str,
    command: str | None = None,
    seconds: float | None = None,
    judge: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``report.json`` object: ``{"model", "sets": {name: …}, "selection": {name: …}, …}``; with an LLM
    judge, ``"judge"``: its settings and costs (``comparisons``, ``usage``, ``issues``: see
    :class:`~blender_core.evaluation.costs.RankingCosts`)."""
    report: dict[str, Any] = {
        "model": model,
        "sets": {k: v.to_dict() for k, v in pairs.items()},
        "selection": {k: v.to_dict() for k, v in selection.items()},
    }
    if judge is not None:
        report["judge"] = dict(judge)
    if command is not None:
        report["command"] = command
    if seconds is not None:
        report["seconds"] = round(seconds, 1)
    return report


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report_markdown(report: Mapping[str, Any]) -> str:
    """A short Markdown rendering of a report (the tables of the model card)."""
    lines = [f"# Evaluation of `{report['model']}`", ""]
    if report.get("command"):
        lines += ["Produced by:", "", "```bash", str(report["command"]), "```", ""]
    if report.get("judge"):
        lines += _judge_markdown(report["judge"])
    if report["sets"]:
        lines += [
            "## Pair accuracy (non-tie pairs, both orders averaged)",
            "",
            "| set | pairs | non-tie | ranker | longer wins | ranker where longer / shorter is better | one order "
            "| order consistency | ties | tie |margin| / non-tie |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in report["sets"].items():
            t = r["ties"]
            ratio = (
                f"{t['mean_abs_margin']:.2f} / {t['nontie_mean_abs_margin']:.2f}"
                if t["mean_abs_margin"] is not None and t["nontie_mean_abs_margin"] is not None
                else "–"
            )
            lines.append(
                f"| {name} | {r['n']} | {r['n_nontie']} | **{_f(r['accuracy'])}** | {_f(r['longer_wins'])} | "
                f"{_f(r.get('accuracy_longer_better'))} / {_f(r.get('accuracy_shorter_better'))} "
                f"({r.get('n_longer_better', 0)} / {r.get('n_shorter_better', 0)} pairs) | "
                f"{_f(r['accuracy_one_order'])} | {_f(r['order_consistency'])} | {t['n']} | {ratio} |"
            )
        lines.append("")
    if report["selection"]:
        lines += [
            "## Selection win rate, mean(pref - 1) x 100 of the top-1",
            "",
            "| set | prompts | ranker | best single | random | longest | oracle | strategy |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, r in report["selection"].items():
            lines.append(
                f"| {name} | {r['n']} | **{_f(r['win_rate'], 1)}** | {_f(r['best_single'], 1)} | {_f(r['random'], 1)} | "
                f"{_f(r['longest'], 1)} | {_f(r['oracle'], 1)} | {r['strategy']} |"
            )
        lines.append("")
    if report.get("seconds") is not None:
        lines.append(f"Evaluated in {report['seconds']} s.")
    return "\n".join(lines).rstrip() + "\n"


def _judge_markdown(judge: Mapping[str, Any]) -> list[str]:
    """The LLM judge's settings, its token usage and its issues (comparisons counted as ties)."""
    usage = judge.get("usage")
    tokens = (
        f"{usage['input_tokens']} input + {usage['output_tokens']} output = {usage['total_tokens']} tokens"
        if usage
        else "none reported"
    )
    shown = ("prompt", "max_new_tokens", "timeout_s", "concurrency")
    settings = ", ".join(f"{k} {judge[k]}" for k in shown if k in judge)
    lines = [
        "## LLM judge",
        "",
        f"- `{judge.get('name', '?')}`" + (f": {settings}" if settings else ""),
        f"- {judge.get('comparisons', 0)} comparisons; token usage: {tokens}",
        f"- issues: {judge.get('issues', 0)} comparisons counted as ties (no readable verdict, or the call failed)",
    ]
    if judge.get("issue_examples"):
        lines.append(f"  - e.g. {judge['issue_examples'][0]}")
    return [*lines, ""]


def plot_report(report: Mapping[str, Any], path: str | Path) -> None:
    """Bars per set: ranker vs longer-wins accuracy (pairs) and ranker vs baselines win rate (selection)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            'plotting needs matplotlib; install it with: pip install "blender-llm[eval]"'
        ) from exc
    panels = [k for k in ("sets", "selection") if report[k]]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6.5 * max(len(panels), 1), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], panels, strict=False):
        items = report[kind]
        names = list(items)
        if kind == "sets":
            series = {
                "ranker": [items[n]["accuracy"] for n in names],
                "longer wins": [items[n]["longer_wins"] for n in names],
            }
            ax.set_ylabel("accuracy on non-tie pairs")
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0, 1)
            ax.set_title("Pair accuracy")
        else:
            keys = ("win_rate", "best_single", "random", "longest", "oracle")
            series = {k.replace("_", " "): [items[n][k] for n in names] for k in keys}
            ax.set_ylabel("win rate, mean(pref - 1) x 100")
            ax.set_title("Selection")
        width = 0.8 / len(series)
        for s, (label, values) in enumerate(series.items()):
            xs = [i + (s - (len(series) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width=width, label=label)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: Mapping[str, Any], out_dir: str | Path, *, plot: bool = True) -> Path:
    """Write ``report.json``, ``report.md`` and (with ``plot``) ``accuracy.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = report_markdown(report)
    if plot and (report["sets"] or report["selection"]):
        plot_report(report, out / PLOT_FILE)
        md += f"\n![ranker vs baselines]({PLOT_FILE})\n"
    (out / "report.md").write_text(md)
    return out
