"""A picture of the run: the curves PNG saved with each checkpoint, a terminal chart of them, and
the summary `lm info` prints.

Everything here reads the plain files of a checkpoint folder (config.json, metrics.jsonl) and
never loads the weights. matplotlib and plotext are imported only when a picture is drawn, so
`import lm` and the commands that do not draw never pay for them.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

from ._util import first_line
from .checkpoint import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, read_config, read_metrics, resolve_checkpoint
from .errors import CheckpointError

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


def checkpoint_summary(path: str | Path | None = None) -> dict:
    """What a checkpoint folder holds: model, size, tokenizer, settings, corpus and best figures.

    Reads config.json and metrics.jsonl only (no weights are loaded), so it works on every
    tokenizer kind and on a folder whose weights are large.
    Raises:
        CheckpointError: `path` is not a checkpoint (NoCheckpointError: none under checkpoints/).
    """
    folder = resolve_checkpoint(path)
    config = read_config(folder)
    model = config.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{folder}/{CONFIG_FILE} has no model section — the checkpoint is damaged")
    metrics_log = read_metrics(folder)
    best = config.get("metrics") or min(metrics_log, key=lambda r: r.get("valid_loss", math.inf), default={})
    last = metrics_log[-1] if metrics_log else {}
    return {
        "checkpoint": str(folder),
        "model": {**model, "parameters": config.get("parameters") or _count_parameters(folder)},
        "size": {"weights_bytes": _size(folder / WEIGHTS_FILE),
                 "folder_bytes": sum(_size(p) for p in folder.iterdir() if p.is_file())},
        "tokenizer": {"kind": config.get("tokenizer", {}).get("kind"), "vocab_size": model.get("vocab_size"),
                      **{k: v for k, v in config.get("tokenizer", {}).items() if k not in ("kind", "files", "vocab_size")}},
        "training": config.get("training", {}),
        "corpus": {k: v for k, v in config.get("corpus", {}).items() if k != "fingerprint"},
        "best": {**best, "minutes": best["elapsed"] / 60} if "elapsed" in best else best,
        "trained": {"steps": last.get("step", 0), "epochs": last.get("epoch", 0), "tokens": last.get("tokens", 0),
                    "minutes": last.get("elapsed", 0.0) / 60, "evaluations": len(metrics_log)},
        "fine_tuned_from": config.get("init_from"),
        "plan": config.get("plan"),  # what --size auto chose, and the speed it timed
        "resumed_at": config.get("resumed_at", []),
        "saved_at": config.get("saved_at"),
        "curves": str(folder / CURVES_FILE) if (folder / CURVES_FILE).exists() else None,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_parameters(folder: Path) -> int | None:
    """Parameters from the weight file's header (a checkpoint saved without the count)."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception:  # noqa: BLE001 — a damaged weight file: the summary says unknown
        return None
