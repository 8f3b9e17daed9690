"""The ONNX graph of a checkpoint, built on first use and kept inside the checkpoint folder.

    CHECKPOINT/onnx/model-<weights' sha256, 16 hex>-<fp32|int8>-g<GRAPH_VERSION>.onnx
    CHECKPOINT/onnx/weights.json   size, mtime_ns and sha256 of model.safetensors when last hashed

The key is the weights' content, never their path or date: a new model.safetensors (a resumed
run, a fine-tune) gets a new graph, and the graphs of other weights are removed once it is
written. Hashing 55 MB costs a tenth of a second, so weights.json keeps the last hash with the
file's size and mtime, and the file is hashed again only when they change. A graph is written
to a temporary file in the same folder, synced, and renamed into place, so a crash never leaves
a half-written graph under a name that is read. A folder that cannot be written (read-only, a
full disk) is not an error: the graph is built in memory for this process alone.

A cache hit needs neither onnx (most of a second to import) nor safetensors: only the build does.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from .._util import first_line
from ..errors import CheckpointError
from ..model.config import ModelConfig

WEIGHTS_FILE = "model.safetensors"  # as lm.checkpoint.store names it (that module imports torch)
CACHE_DIR = "onnx"
HASH_FILE = "weights.json"
# Part of every graph's name: raise it when build_graph's output changes, so older graphs are rebuilt.
GRAPH_VERSION = 1
PARTIAL = ".partial"  # the suffix of a graph being written; never read
STALE_PARTIAL_S = 3600  # a partial file this old was left by a crash, not by a writer at work


def graph_name(digest: str, int8: bool) -> str:
    """The cached graph's file name for weights of sha256 `digest`."""
    return f"model-{digest[:16]}-{'int8' if int8 else 'fp32'}-g{GRAPH_VERSION}.onnx"


def cached_graph(folder: str | Path, config: ModelConfig, int8: bool = False) -> Path | bytes:
    """The checkpoint's graph: the path of its cached file, built and written on first use, or
    the graph's bytes when the folder cannot be written.

    Raises:
        CheckpointError: model.safetensors is missing or damaged.
    """
    folder = Path(folder)
    digest = weights_digest(folder)
    path = folder / CACHE_DIR / graph_name(digest, int8)
    if os.access(path, os.R_OK):
        return path
    data = build_graph_bytes(folder, config, int8)
    try:
        write_atomically(path, data, _mode(folder))
    except OSError:
        return data  # read-only or full: this process uses the graph from memory
    remove_other_graphs(path)
    return path


def build_graph_bytes(folder: Path, config: ModelConfig, int8: bool) -> bytes:
    """Build the graph from model.safetensors (see graph.py)."""
    from safetensors.numpy import load_file

    from .graph import build_graph

    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{folder / WEIGHTS_FILE} cannot be read ({first_line(e)}) — the checkpoint is "
                              "damaged; retrain or restore it") from None
    return build_graph(config, weights, int8).SerializeToString()


def weights_digest(folder: Path) -> str:
    """sha256 of model.safetensors, from weights.json while the file's size and mtime are unchanged."""
    weights, record = folder / WEIGHTS_FILE, folder / CACHE_DIR / HASH_FILE
    try:
        stat = weights.stat()
    except OSError as e:
        raise CheckpointError(f"{weights} cannot be read ({e.strerror or first_line(e)}) — the checkpoint is "
                              "damaged; retrain or restore it") from None
    seen = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(known, dict) and {k: known.get(k) for k in seen} == seen and isinstance(known.get("sha256"), str):
            return known["sha256"]
    digest = _sha256(weights)
    with contextlib.suppress(OSError):
        write_atomically(record, (json.dumps({**seen, "sha256": digest}) + "\n").encode(), _mode(folder))
    return digest


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, sync it, give it `mode`, and rename it into place."""
    path.parent.mkdir(exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=PARTIAL, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remove_other_graphs(keep: Path) -> None:
    """Remove the cached graphs of other weights or versions (the fp32 and int8 graphs of the same
    weights stay side by side), and partial files left by a crash; one another process removes first is no error."""
    now = time.time()
    for path in keep.parent.iterdir():
        with contextlib.suppress(OSError):
            if _stale(path, keep, now):
                path.unlink()


def _stale(path: Path, keep: Path, now: float) -> bool:
    if path.name.endswith(PARTIAL):
        return now - path.stat().st_mtime > STALE_PARTIAL_S
    if not (path.name.startswith("model-") and path.suffix == ".onnx"):
        return False  # not ours: weights.json, or a file someone put here

    def key(name: str) -> tuple[str, str]:  # (weights' hash, graph version)
        parts = name.removesuffix(".onnx").split("-")
        return parts[1], parts[-1]
    return key(path.name) != key(keep.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or first_line(e)}) — check its permissions") from None
    return digest.hexdigest()


def _mode(folder: Path) -> int:
    """The weights file's permissions: whoever may read the weights may read what is built from them."""
    return (folder / WEIGHTS_FILE).stat().st_mode & 0o666
