"""Reading a checkpoint folder without building the model: which folder, its config.json, its
tokenizer, and the weights' header checked against the config. Imports no torch, so the
ONNX Runtime backend loads a checkpoint without it (lm/checkpoint/store.py builds the PyTorch model).

An `lm export` folder reads the same way: it is a checkpoint for inference without the PyTorch
weights (config.json, the tokenizer, lexicon and n-gram as the checkpoint has them, and the
ONNX graph with manifest.json in place of model.safetensors: lm/export/onnx.py writes it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .._util import first_line
from ..data.tokenizer import Tokenizer, load_tokenizer
from ..errors import CheckpointError, ConfigError, NoCheckpointError
from ..model.config import ModelConfig, expected_shapes

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EXPORT_MANIFEST = "manifest.json"  # what marks an `lm export` folder (lm/export/onnx.py)
EXPORT_FORMAT, EXPORT_FORMAT_VERSION = "lm-onnx", 2  # version 2: config.json and the engine inside (1: the graph alone)
DEFAULT_ROOT = Path("checkpoints")
# Limits checked before anything is allocated from a config read off disk.
MAX_VOCAB, MAX_WIDTH, MAX_LAYERS = 10_000_000, 65_536, 64


def read_parts(folder: Path) -> tuple[dict, ModelConfig, Tokenizer]:
    """config.json, the model's config and the tokenizer of a checkpoint folder, checked against
    each other and against the weights' header (nothing of the weights is read)."""
    config = read_config(folder)
    model_config = read_model_config(config, folder)
    tokenizer = load_tokenizer(folder, config.get("tokenizer", {}).get("kind", ""))
    if tokenizer.vocab_size != model_config.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the model expects "
            f"{model_config.vocab_size} — the tokenizer files do not belong to these weights"
        )
    if not is_export(folder):  # an export's graph was checked against the weights when it was written
        check_weight_shapes(folder, model_config)
    return config, model_config, tokenizer


def is_export(folder: Path) -> bool:
    """Whether `folder` is an `lm export` folder (a manifest and no PyTorch weights), not a checkpoint."""
    return (Path(folder) / EXPORT_MANIFEST).is_file() and not (Path(folder) / WEIGHTS_FILE).exists()


def read_export_manifest(folder: Path) -> dict:
    """manifest.json of an export folder, checked for a format this version reads."""
    try:
        manifest = json.loads((Path(folder) / EXPORT_MANIFEST).read_text(encoding="utf-8"))
        found = (manifest["format"], manifest["format_version"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder}/{EXPORT_MANIFEST} cannot be read ({first_line(e)}) — the export is "
                              "damaged; export the checkpoint again") from None
    if found[0] != EXPORT_FORMAT or not isinstance(found[1], int) or found[1] > EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{folder} is a {found[0]} {found[1]} export, which this lm does not read "
                              f"({EXPORT_FORMAT} up to {EXPORT_FORMAT_VERSION}) — run it with its own runtime.py, "
                              "or upgrade lm")
    return manifest


def resolve_checkpoint(path: str | Path | None = None, root: Path = DEFAULT_ROOT) -> Path:
    """The checkpoint folder to use: `path`, or the newest complete one under `root`."""
    if path is None:
        newest = newest_checkpoint(root)
        if newest is None:
            raise NoCheckpointError(
                f"no checkpoint found under {root}/ — train one first with `lm train CORPUS`, "
                "or pass --checkpoint PATH"
            )
        return newest
    folder = Path(path)
    recover_interrupted_save(folder)
    if not folder.exists():
        raise CheckpointError(f"checkpoint {folder} does not exist — check the path, or train one with `lm train`")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder — pass the folder `lm train` wrote")
    if not (folder / CONFIG_FILE).exists():
        if is_export(folder):
            raise CheckpointError(f"{folder} is an export from an earlier lm (it has no {CONFIG_FILE}) — run it "
                                  "with its own runtime.py, or export the checkpoint again")
        raise CheckpointError(f"{folder} has no {CONFIG_FILE} — it is not a complete checkpoint; retrain or restore it")
    return folder


def newest_checkpoint(root: Path = DEFAULT_ROOT) -> Path | None:
    """The most recently saved complete checkpoint folder under `root`, if any."""
    root = Path(root)
    if not root.is_dir():
        return None
    for old in root.glob("*.old"):
        recover_interrupted_save(old.with_suffix(""))
    found = [p for p in root.iterdir()
             if p.is_dir() and p.suffix not in (".staging", ".old") and (p / CONFIG_FILE).exists()]
    return max(found, key=lambda p: (p / CONFIG_FILE).stat().st_mtime, default=None)


def read_config(folder: Path) -> dict:
    """config.json of a checkpoint, checked for a format this version understands."""
    try:
        config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}/{CONFIG_FILE} cannot be read ({first_line(e)}) — the checkpoint is damaged") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{folder}/{CONFIG_FILE} is not a JSON object — the checkpoint is damaged")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{folder}/{CONFIG_FILE} has no format_version — the checkpoint is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} uses checkpoint format {version}, newer than this lm understands "
            f"({FORMAT_VERSION}) — upgrade lm to load it"
        )
    return config


def read_model_config(config: dict, folder: Path) -> ModelConfig:
    data = config.get("model")
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder}/{CONFIG_FILE} has no model section — the checkpoint is damaged")
    try:
        model_config = ModelConfig.from_dict(data)
        model_config.validate()
    except (TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{folder}: invalid model config ({e}) — the checkpoint is damaged") from None
    limits = {"vocab_size": MAX_VOCAB, "hidden": MAX_WIDTH, "emb": MAX_WIDTH, "layers": MAX_LAYERS}
    for name, limit in limits.items():
        if getattr(model_config, name) > limit:
            raise CheckpointError(
                f"{folder}: {name}={getattr(model_config, name)} is beyond the supported {limit} — "
                "the checkpoint is damaged or not from lm"
            )
    return model_config


def check_weight_shapes(folder: Path, config: ModelConfig) -> None:
    """Compare the weight file's header with the config before allocating a model."""
    from safetensors import safe_open

    expected = expected_shapes(config)
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE} cannot be read ({first_line(e)}) — the checkpoint is damaged; "
            "retrain or restore it"
        ) from None
    for name, shape in found.items():
        if name in expected and expected[name] != shape:
            raise CheckpointError(
                f"{folder}: weight {name} has shape {list(shape)} but config.json implies "
                f"{list(expected[name])} — the config does not match the weights"
            )


def recover_interrupted_save(folder: Path) -> None:
    """Put back the previous checkpoint when a save stopped between its two renames."""
    folder = Path(folder)
    if not folder.name:  # "." or "/": no folder of ours
        return
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and (old / CONFIG_FILE).exists():
        try:
            os.replace(old, folder)
        except OSError:  # read-only or raced by another process: the next call tries again
            pass
