"""The summary `lm info` prints: what a checkpoint folder holds, read from its plain files.

It reads config.json and metrics.jsonl and never loads the weights.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import CheckpointError
from .curves import CURVES_FILE
from .folder import CONFIG_FILE, WEIGHTS_FILE, read_config, resolve_checkpoint
from .store import read_metrics


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
