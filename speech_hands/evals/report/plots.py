"""PNG plots for a report (matplotlib, headless Agg backend).

- ``confusion.png``: gold vs predicted first-token actions as a heat map with counts;
- ``systems.png``: WER (or accuracy) per system as horizontal bars, with the oracle router and the
  best single system drawn as reference lines;
- ``actions.png``: predicted vs gold action distribution side by side.

The plots read the report model only (not the item results), so they can be redrawn from any
report; matplotlib is imported on first use, which keeps importing the report package cheap.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from speech_hands.evals.report.model import EvalReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_plots"]

_COLORS = {"pool": "#7f8c8d", "recorded": "#bdc3c7", "agent": "#8e44ad", "oracle": "#27ae60"}


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the headless Agg backend (imported here, on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt: ModuleType, fig: Figure, path: Path) -> Path:
    """Lay out, write the PNG and free the figure (pyplot keeps every open figure alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(report: EvalReport, path: Path) -> Path:
    plt = _pyplot()
    confusion = report.routing.confusion
    gold = list(confusion)
    predicted = list(next(iter(confusion.values())))
    matrix = [[confusion[g][p] for p in predicted] for g in gold]
    fig, ax = plt.subplots(figsize=(1.4 * len(predicted) + 2, 1.2 * len(gold) + 1.5))
    image = ax.imshow(matrix, cmap="Purples")
    top = max((v for row in matrix for v in row), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_xticks(range(len(predicted)), [f"<{p}>" if p != "none" else "none" for p in predicted])
    ax.set_yticks(range(len(gold)), [f"<{g}>" for g in gold])
    ax.set_xlabel("predicted first token")
    ax.set_ylabel("gold action")
    ax.set_title(f"Routing confusion ({report.routing.labelled} items)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(plt, fig, path)


def plot_systems(report: EvalReport, path: Path) -> Path:
    plt = _pyplot()
    asr = report.task == "asr"
    rows = report.systems
    values = [100 * ((s.wer if asr else s.accuracy) or 0.0) for s in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ax.barh(range(len(rows)), values, color=[_COLORS.get(s.kind, "#95a5a6") for s in rows])
    ax.set_yticks(range(len(rows)), [s.name for s in rows], fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    oracle = next((s for s in rows if s.name.startswith("oracle router")), None)
    if oracle is not None:
        x = 100 * ((oracle.wer if asr else oracle.accuracy) or 0.0)
        ax.axvline(x, color=_COLORS["oracle"], linestyle="--", label=f"oracle router {x:.2f}")
    if report.best_single:
        best = report.system(report.best_single)
        x = 100 * ((best.wer if asr else best.accuracy) or 0.0)
        ax.axvline(x, color="#c0392b", linestyle=":", label=f"best single {x:.2f}")
    ax.set_xlabel("WER % (lower is better)" if asr else "accuracy % (higher is better)")
    ax.set_title(f"{report.name}: {'WER' if asr else 'accuracy'} per system")
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


def plot_actions(report: EvalReport, path: Path) -> Path:
    plt = _pyplot()
    predicted = report.routing.predicted_distribution
    gold = report.routing.gold_distribution
    names = list(dict.fromkeys([*gold, *predicted]))
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([x - 0.2 for x in xs], [gold.get(n, 0) for n in names], width=0.4, label="gold", color="#27ae60")
    ax.bar([x + 0.2 for x in xs], [predicted.get(n, 0) for n in names], width=0.4, label="predicted", color="#8e44ad")
    ax.set_xticks(list(xs), [f"<{n}>" if n != "none" else "none" for n in names])
    ax.set_ylabel("items")
    ax.set_title("Action distribution")
    ax.legend()
    return _save(plt, fig, path)


def write_plots(report: EvalReport, out_dir: Path) -> list[str]:
    """Write the three plots; returns their file paths."""
    return [
        str(plot_systems(report, out_dir / "systems.png")),
        str(plot_confusion(report, out_dir / "confusion.png")),
        str(plot_actions(report, out_dir / "actions.png")),
    ]
