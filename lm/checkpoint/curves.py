"""A picture of the run: the curves PNG saved with each checkpoint and a terminal chart of them.

Both are drawn from the evaluation records alone (metrics.jsonl). matplotlib and plotext are
imported only when a picture is drawn, so `import lm` and the commands that do not draw never
pay for them. This module imports nothing else of the checkpoint package, so saving a folder
can draw its curves without an import circle.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

from .._util import first_line

CURVES_FILE = "curves.png"


class CurvesWarning(UserWarning):
    """The curves PNG could not be drawn; training goes on without it."""


def write_curves(metrics_log: list[dict], path: Path, title: str = "") -> bool:
    """Draw train and valid perplexity against steps and against minutes into a PNG.

    Never raises: the picture is a view of the run, never a reason to stop it, so a failure
    (matplotlib missing, a full disk) is a CurvesWarning and False.
    """
    if not metrics_log:
        return False
    try:
        _draw_curves(metrics_log, Path(path), title)
        return True
    except Exception as e:  # noqa: BLE001 — whatever goes wrong while drawing, training goes on
        warnings.warn(f"cannot draw {Path(path).name} ({first_line(e)}) — training goes on without it; "
                      "pip install matplotlib to get it back", CurvesWarning, stacklevel=2)
        return False


def curve_points(metrics_log: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """(step, minutes, perplexity) for the valid text and, where recorded, the training windows.

    A record's train_loss is the mean over the steps since the evaluation before, so its point
    sits in the middle of that stretch, not at its end.
    """
    valid = [(r["step"], r["elapsed"] / 60, r["valid_perplexity"]) for r in metrics_log if "valid_perplexity" in r]
    train, before = [], {"step": 0, "elapsed": 0.0}
    for r in metrics_log:
        if r.get("train_loss") is not None:
            train.append(((before["step"] + r["step"]) / 2, (before["elapsed"] + r["elapsed"]) / 120,
                          math.exp(min(r["train_loss"], 700))))
        before = r
    return {"train": train, "valid": valid}


def _draw_curves(metrics_log: list[dict], path: Path, title: str) -> None:
    # The object API with the Agg canvas: no pyplot global state, no display needed, and a
    # lighter import than matplotlib.pyplot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, MaxNLocator

    points = curve_points(metrics_log)
    figure = Figure(figsize=(10, 4), dpi=90)  # fixed margins: a layout engine would triple the time
    FigureCanvasAgg(figure)
    by_step, by_minute = figure.subplots(1, 2, sharey=True, gridspec_kw=dict(left=0.08, right=0.98, bottom=0.13,
                                                                             top=0.9, wspace=0.05))
    for axes, column, label in ((by_step, 0, "step"), (by_minute, 1, "minutes")):
        for name, style, legend in (("train", "-", "train (mean between evaluations)"), ("valid", "o-", "valid")):
            if points[name]:
                axes.plot([p[column] for p in points[name]], [p[2] for p in points[name]], style, label=legend, markersize=3)
        best = min(points["valid"], key=lambda p: p[2], default=None)
        if best:
            axes.plot([best[column]], [best[2]], "*", markersize=12, color="tab:red", label=f"best {best[2]:.4g}")
        axes.set_xlabel(label)
        axes.set_yscale("log")
        axes.xaxis.set_major_locator(MaxNLocator(6, integer=column == 0))
        axes.grid(True, alpha=0.3)
    # Plain numbers on the log axis (3, 4, 6 rather than 3×10⁰).
    by_step.yaxis.set_major_formatter(LogFormatter())
    by_step.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    by_step.set_ylabel("perplexity per token (log scale)")
    by_step.legend()
    figure.suptitle(title)
    figure.savefig(path, format="png", pil_kwargs={"compress_level": 1})  # fast: the time goes to zlib otherwise


def terminal_chart(metrics_log: list[dict], width: int = 70, height: int = 16, color: bool = False) -> str:
    """The valid perplexity (and the training perplexity where recorded) against steps, as text."""
    import plotext as plt  # 5.x API: 6.0 rewrote it

    points = curve_points(metrics_log)
    plt.clear_figure()
    for name, marker in (("train", "·"), ("valid", "braille")):  # valid last: drawn on top
        if points[name]:
            plt.plot([p[0] for p in points[name]], [p[2] for p in points[name]], marker=marker, label=name)
    plt.yscale("log")
    steps = [p[0] for p in points["valid"] + points["train"]]
    if steps:  # whole steps on the x axis, not plotext's 93.8
        plt.xticks(sorted({round(min(steps) + (max(steps) - min(steps)) * i / 4) for i in range(5)}))
    plt.title("perplexity per token (log scale)")
    plt.plotsize(width, height)
    plt.theme("pro" if color else "clear")
    plt.xlabel("step")
    chart = plt.build()
    plt.clear_figure()
    return chart if color else strip_ansi(chart)


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
