"""Checkpoints: one folder that holds everything needed to use a model again.

    config.json          model, tokenizer and training config, corpus fingerprint, metrics
    model.safetensors    the weights (the best seen on the validation text)
    tokenizer.*          the tokenizer's own files
    lexicon.txt          the words of the training text with their counts (what suggestions may offer)
    ngram.safetensors    word models: the training text's n-gram, when it improves suggestions (lm.mix.ngram)
    metrics.jsonl        one line per evaluation
    curves.png           train and valid perplexity against steps and minutes (lm.checkpoint.curves)
    resume.safetensors   latest weights, optimizer moments, RNG and carried state (for --resume)
    resume.json          the plain-data half of the resume state

Nothing here is pickled, so loading never runs code from the folder. A save writes a sibling
staging folder and swaps it in with renames, so a crash at any moment leaves a loadable folder.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._util import first_line
from ..errors import CheckpointError
from ..model.config import ModelConfig
from ..model.network import LanguageModel
from ..data.tokenizer import Tokenizer
from .folder import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, read_config, read_parts, resolve_checkpoint

METRICS_FILE = "metrics.jsonl"
RESUME_TENSORS_FILE = "resume.safetensors"
RESUME_META_FILE = "resume.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint folder."""

    path: Path
    model: LanguageModel
    tokenizer: Tokenizer
    config: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        return self.config.get("metrics", {})


def save_checkpoint(
    folder: Path,
    model: LanguageModel,
    tokenizer: Tokenizer,
    config: dict,
    metrics_log: list[dict] | None = None,
    resume: tuple[dict[str, torch.Tensor], dict] | None = None,
    best_weights: dict[str, torch.Tensor] | None = None,
    lexicon=None,
    ngram=None,
) -> Path:
    """Write a complete checkpoint folder atomically.

    Args:
        folder: where the checkpoint lives; replaced as a whole.
        config: JSON-ready dict; model and tokenizer config and the format version are added.
        metrics_log: evaluation records, written one per line to metrics.jsonl and drawn as
            curves.png (a picture that cannot be drawn is a warning, never an error).
        resume: (tensors, plain data) needed to continue training, or None.
        best_weights: weights to store as model.safetensors instead of the model's own.
        lexicon: an lm.data.lexicon.Lexicon to save beside the tokenizer.
        ngram: an lm.mix.ngram.Ngram to save beside it (config["ngram"] says how it is mixed in).
    """
    from safetensors.torch import save_file, save_model

    folder = Path(folder)
    staging = folder.with_name(folder.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        full = dict(config)
        full.update(
            format_version=FORMAT_VERSION,
            model=model.config.to_dict(),
            tokenizer={**full.get("tokenizer", {}), "kind": tokenizer.kind},
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        if best_weights is None:
            save_model(model, str(staging / WEIGHTS_FILE))
        else:
            save_file(_untie(best_weights), str(staging / WEIGHTS_FILE))
        full["tokenizer"]["files"] = tokenizer.save(staging)
        if lexicon is not None:
            lexicon.save(staging)
        if ngram is not None:
            ngram.save(staging)
        _write_text(staging / METRICS_FILE, "".join(json.dumps(m) + "\n" for m in metrics_log or []))
        if metrics_log:  # drawn inside the staging folder, so the picture is swapped in with its metrics
            from .curves import CURVES_FILE, write_curves

            write_curves(metrics_log, staging / CURVES_FILE, _curves_title(folder, model, tokenizer))
        if resume is not None:
            tensors, meta = resume
            save_file(_untie(tensors), str(staging / RESUME_TENSORS_FILE))
            _write_text(staging / RESUME_META_FILE, json.dumps(meta, indent=1))
        # config.json goes last: its presence marks a complete folder.
        _write_text(staging / CONFIG_FILE, json.dumps(full, indent=2, ensure_ascii=False))
        _fsync_tree(staging)
        _swap_in(staging, folder)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(
            f"cannot write checkpoint {folder}: {e.strerror or e} — free some disk space or "
            "choose a writable --out; the previous checkpoint is intact"
        ) from None
    return folder


def _curves_title(folder: Path, model: LanguageModel, tokenizer: Tokenizer) -> str:
    c = model.config
    return f"{folder.name}: {c.layers}×{c.hidden} {c.cell.upper()}, emb {c.emb}, {tokenizer.kind} vocab {c.vocab_size:,}"


def read_metrics(folder: Path) -> list[dict]:
    """The evaluation records of metrics.jsonl, oldest first ([] when the folder has none)."""
    path = Path(folder) / METRICS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({first_line(e)}) — check its permissions") from None
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except ValueError as e:
        raise CheckpointError(f"{path} is damaged ({first_line(e)}) — the checkpoint's metrics cannot be read") from None


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint folder (the newest under checkpoints/ when `path` is None)."""
    folder = resolve_checkpoint(path)
    config, model_config, tokenizer = read_parts(folder)
    return Checkpoint(folder, load_weights(folder, model_config, device), tokenizer, config)


def load_weights(folder: Path, model_config: ModelConfig, device: str | torch.device = "cpu") -> LanguageModel:
    """The folder's model.safetensors in a LanguageModel of `model_config` (read and checked by
    lm.checkpoint.folder), on `device`, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    model = LanguageModel(model_config)
    try:
        load_model(model, str(Path(folder) / WEIGHTS_FILE), strict=True, device=str(device))
    except (SafetensorError, RuntimeError, OSError) as e:
        raise CheckpointError(
            f"{Path(folder) / WEIGHTS_FILE} cannot be read ({first_line(e)}) — the checkpoint is "
            "damaged; retrain or restore it"
        ) from None
    return model.to(device).eval()


def read_resume(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The resume state saved beside the weights: (tensors, plain data)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / RESUME_META_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / RESUME_TENSORS_FILE))
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} has no resume state — it was not saved by `lm train`; start a new run instead"
        ) from None
    except Exception as e:  # safetensors and json raise several types for damaged files
        raise CheckpointError(f"{folder}: resume state is damaged ({first_line(e)}) — start a new run") from None
    return tensors, meta


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that keeps tied tensors tied (one clone per shared tensor)."""
    clones: dict[int, torch.Tensor] = {}
    out = {}
    for name, t in model.state_dict().items():
        key = t.data_ptr()
        if key not in clones:
            clones[key] = t.detach().clone()
        out[name] = clones[key]
    return out


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: keep one copy of each distinct tensor."""
    out, seen = {}, set()
    for name, t in sorted(tensors.items()):  # the same name safetensors' save_model keeps
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def _swap_in(staging: Path, folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)  # between the two renames the loader falls back on .old
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def update_config(folder: Path, **entries) -> None:
    """Set top-level entries of a checkpoint's config.json (e.g. the tuned cache), atomically."""
    folder = Path(folder)
    config = read_config(folder)
    config.update(entries)
    staging = folder / (CONFIG_FILE + ".staging")
    try:
        _write_text(staging, json.dumps(config, indent=2, ensure_ascii=False))
        os.replace(staging, folder / CONFIG_FILE)
    except OSError as e:
        staging.unlink(missing_ok=True)
        raise CheckpointError(f"cannot update {folder}/{CONFIG_FILE}: {e.strerror or e} — is the folder writable?") from None


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
