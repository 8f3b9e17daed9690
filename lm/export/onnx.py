"""Export a checkpoint for apps and phones: a checkpoint for inference, without the PyTorch weights.

    model.onnx       (ids [batch, time], state..., logits_from) -> (logits [batch, positions, vocab],
                     state..., features [batch, time, emb]), batch and time dynamic: read a prompt
                     in one call, then step one token at a time with the state carried between calls
    manifest.json    what a consumer needs to drive the graph: tokenizer kind, vocabulary size,
                     special ids, the state's names and shapes, opset, checksums of the files
    config.json      the checkpoint's: model, tokenizer kind, cache and n-gram settings, metrics
    tokenizer.*      the tokenizer's own files, as in the checkpoint
    lexicon.txt      the words suggestions offer and corrections aim at (when the checkpoint has one)
    ngram.safetensors  a word model's n-gram (when the checkpoint mixes one in)
    lm-engine.zip    the lm package (engine_zip.py): the suggestion engine's own code
    runtime.py       a copy of lm/export/runtime.py: runs that engine over the graph with
                     onnxruntime and numpy (no torch, no lm installed)

`lm.load(EXPORT_DIR)` loads the folder as it loads a checkpoint, on ONNX Runtime, so the strip
an export gives is the one `lm suggest` gives for the checkpoint with the same weights.

The graph is lm.backend.graph's, built from the weights with onnx.helper: the one the onnx
backend caches in a checkpoint, `logits_from` input included (reading a text computes the last
position's logits alone; ONNX Runtime notes that input in a warning when it loads the graph, so
lm's sessions log errors only). One ONNX LSTM / GRU / RNN node per layer, the tied embedding
and output matrix stored once. `--int8` builds its int8 form (DynamicQuantizeLSTM and
DynamicQuantizeMatMul, the embedding gathered from the int8 tied matrix), and the export checks
that the quantized nodes are there.

Every export is checked against the PyTorch model before it is kept: the fp32 graph's logits
and state must match within PARITY_TOLERANCE over a few calls with the state carried; the
int8 graph's agreement with the fp32 model is recorded in the manifest. Files are written to a
staging folder beside OUT_DIR and renamed into place, so a failure leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .. import __version__
from .._util import first_line
from ..backend.graph import INT8_CELLS, LOGITS_FROM, OPSET, build_graph, state_names
from ..checkpoint.folder import CONFIG_FILE, EXPORT_FORMAT as FORMAT, EXPORT_FORMAT_VERSION as FORMAT_VERSION
from ..checkpoint.folder import EXPORT_MANIFEST as MANIFEST_FILE
from ..checkpoint.store import load_checkpoint
from ..data.lexicon import FILE as LEXICON_FILE
from ..errors import ExportError
from ..mix.config import NgramConfig
from ..mix.ngram import FILE as NGRAM_FILE
from ..model.network import LanguageModel
from .engine_zip import ENGINE_FILE, write_engine_zip

GRAPH_FILE = "model.onnx"
RUNTIME_FILE = "runtime.py"
# What the runtime imports beside the engine (sentencepiece for subword models alone).
RUNTIME_PACKAGES = ["onnxruntime", "numpy", "rapidfuzz", "safetensors", "sentencepiece"]
PARITY_TOLERANCE = 1e-4  # largest |fp32 graph - PyTorch| allowed on logits and state
CHECK_BATCH, CHECK_SPLITS = 2, (1, 7, 40)  # the export's own check: three calls, state carried
QUANTIZED_OPS = {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul"}  # counted in the manifest


@dataclass
class ExportResult:
    """What `export_checkpoint` wrote."""

    folder: Path
    manifest: dict

    @property
    def files(self) -> dict[str, int]:
        """File name -> size in bytes."""
        return {name: info["bytes"] for name, info in self.manifest["files"].items()}

    @property
    def graph_bytes(self) -> int:
        return self.files[GRAPH_FILE]


def export_checkpoint(checkpoint: str | Path | None, out_dir: str | Path, int8: bool = False,
                      overwrite: bool = False) -> ExportResult:
    """Export a checkpoint folder (the newest under checkpoints/ when None) to `out_dir`.

    Args:
        int8: quantize the weights to int8 with ONNX Runtime's dynamic quantizer (LSTM models).
        overwrite: replace `out_dir` if it is an earlier export.
    Raises:
        ExportError (or CheckpointError) with a one-line message; nothing is left half-written.
    """
    _require_onnx()
    out = Path(out_dir)
    _check_target(out, overwrite)  # before the (slower) load: a taken folder fails at once
    ckpt = load_checkpoint(checkpoint, "cpu")
    config = ckpt.model.config
    if int8 and config.cell not in INT8_CELLS:
        raise ExportError(
            f"--int8 supports LSTM models only: ONNX Runtime has no int8 {config.cell.upper()} operator, so its "
            f"weights would stay float — export {ckpt.path} without --int8"
        )
    with staged_folder(out) as staging:
        manifest = _write_export(ckpt, staging, int8)
    return ExportResult(out, manifest)


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A folder beside `out` to write an export into, renamed to `out` when the block ends
    without an error; on any error it is removed, so nothing is left half-written.

    Raises:
        ExportError: the folder cannot be written (no space, no permission), in one line.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise _write_error(out, e) from None
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; an export is as shareable as any folder
        yield staging
        _swap_in(staging, out)
    except OSError as e:
        raise _write_error(out, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError("lm export needs the onnx and onnxruntime packages — pip install onnx onnxruntime "
                          "(or pip install 'lm[export]')") from None


def _check_target(out: Path, overwrite: bool) -> None:
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"{parent} is a file, not a folder — choose an export folder outside it")
            break
    if out.is_dir() and not any(out.iterdir()):
        return  # an empty folder is taken as it is
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists — pass --overwrite to replace it, or choose another folder")
    if out.exists() and not (out / MANIFEST_FILE).is_file():
        raise ExportError(f"{out} is not an lm export (it has no {MANIFEST_FILE}); --overwrite replaces only "
                          "earlier exports — choose another folder")


def _write_error(out: Path, e: OSError) -> ExportError:
    return ExportError(f"cannot write the export to {out}: {e.strerror or first_line(e)} — choose a writable "
                       "folder with free space; nothing was written")


def _write_export(ckpt, folder: Path, int8: bool) -> dict:
    """Write every file of an export into `folder`; returns the manifest (written last)."""
    model = ckpt.model.eval()
    data = export_graph(model)
    check = {"fp32_max_abs_diff": _check_parity(model, data)}
    if int8:
        data = export_graph(model, int8=True)
        check.update(_check_int8(model, data))
    (folder / GRAPH_FILE).write_bytes(data)  # synced with the others by _file_info
    tokenizer_files = ckpt.tokenizer.save(folder)
    inference_files = _copy_inference_files(ckpt, folder)
    write_engine_zip(folder / ENGINE_FILE)
    shutil.copyfile(Path(__file__).with_name(RUNTIME_FILE), folder / RUNTIME_FILE)
    manifest = build_manifest(ckpt, int8, check, _quantized_ops(data) if int8 else {})
    manifest["tokenizer"]["files"] = tokenizer_files
    names = [GRAPH_FILE, *tokenizer_files, *inference_files, ENGINE_FILE, RUNTIME_FILE]
    manifest["files"] = {name: _file_info(folder / name) for name in names}
    with open(folder / MANIFEST_FILE, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return manifest


def _copy_inference_files(ckpt, folder: Path) -> list[str]:
    """Copy what lm.load reads besides the weights: config.json, the lexicon, the n-gram it mixes in."""
    names = [CONFIG_FILE, LEXICON_FILE]
    if NgramConfig.from_dict(ckpt.config.get("ngram") or {}).weight > 0:  # as lm.load decides (loader.py)
        names.append(NGRAM_FILE)
    copied = []
    for name in names:
        if (ckpt.path / name).is_file():
            shutil.copyfile(ckpt.path / name, folder / name)
            copied.append(name)
    return copied


def build_manifest(ckpt, int8: bool, check: dict, quantized_ops: dict) -> dict:
    """What a runtime in any language needs to drive the graph (the files' checksums are added last)."""
    config, tokenizer = ckpt.model.config, ckpt.tokenizer
    special = {"unk": tokenizer.unk_id}
    if getattr(tokenizer, "eos_id", None) is not None:
        special["eos"] = tokenizer.eos_id
    states = [{"input": i, "output": o, "shape": [config.layers, "batch", config.hidden], "dtype": "float32"}
              for i, o in state_names(config.cell)]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "source": {"checkpoint": str(ckpt.path), "saved_at": ckpt.config.get("saved_at"), "metrics": ckpt.metrics or None},
        "model": {**{k: getattr(config, k) for k in ("cell", "layers", "hidden", "emb", "vocab_size", "softmax")},
                  "cutoffs": config.cutoffs, "weights": "int8" if int8 else "fp32"},
        "graph": {
            "file": GRAPH_FILE,
            "opset": OPSET,
            "inputs": [{"name": "ids", "shape": ["batch", "time"], "dtype": "int64"}]
                      + [{"name": s["input"], "shape": s["shape"], "dtype": "float32"} for s in states]
                      # the first position whose logits are computed: 0 (its default) every one, -1 the last
                      + [{"name": LOGITS_FROM, "shape": [1], "dtype": "int64", "optional": True, "default": [0]}],
            "outputs": [{"name": "logits", "shape": ["batch", "positions", config.vocab_size], "dtype": "float32"}]
                       + [{"name": s["output"], "shape": s["shape"], "dtype": "float32"} for s in states]
                       # what the output layer read at each position (a continuous cache's keys)
                       + [{"name": "features", "shape": ["batch", "time", config.emb], "dtype": "float32"}],
            # Raw logits, or log-probabilities with the adaptive softmax: a softmax gives the same
            # probabilities either way.
            "logits": "log_probs" if config.softmax == "adaptive" else "logits",
            "state": states,
            "quantized_ops": quantized_ops,
        },
        "tokenizer": {"kind": tokenizer.kind, "files": [], "vocab_size": tokenizer.vocab_size,
                      "special_ids": special, "start_text": "\n"},  # no BOS: a text starts where a line starts
        "cache": ckpt.config.get("cache"),  # the continuous cache's settings (config.json holds them too)
        "engine": {"file": ENGINE_FILE, "lm_version": __version__, "runtime": RUNTIME_FILE,
                   "packages": RUNTIME_PACKAGES},
        "check": check,
    }


def export_graph(model: LanguageModel, int8: bool = False) -> bytes:
    """The step graph of a model (lm.backend.graph's, as the onnx backend caches it) as ONNX bytes."""
    weights = {name: t.detach().float().cpu().numpy() for name, t in model.state_dict().items()}
    return build_graph(model.config, weights, int8).SerializeToString()


def _quantized_ops(graph: bytes) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_model_from_string(graph).graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _check_int8(model: LanguageModel, graph: bytes) -> dict:
    """The quantized nodes are there, and how closely the int8 graph follows the fp32 model."""
    config = model.config
    ops = _quantized_ops(graph)
    # The output layer is one matrix (full softmax) or the head and two per tail (adaptive), plus the projection.
    outputs = 1 if config.softmax == "full" else 1 + 2 * len(config.cutoffs)
    wanted = {"DynamicQuantizeLSTM": config.layers, "DynamicQuantizeMatMul": outputs + (model.projection is not None)}
    if ops != wanted:
        found = ", ".join(f"{ops.get(op, 0)} {op}" for op in wanted)
        raise ExportError(f"the int8 graph holds {found}, not {', '.join(f'{n} {op}' for op, n in wanted.items())} — "
                          "this is a bug in lm export; export without --int8")
    reference, found = _compare(model, graph)
    return {
        "int8_max_abs_diff": float(np.abs(found - reference).max()),
        "int8_top1_agreement": float((found.argmax(-1) == reference.argmax(-1)).mean()),
    }


def _check_parity(model: LanguageModel, graph: bytes) -> float:
    """Largest |graph - PyTorch| over logits and state; refuses the export beyond PARITY_TOLERANCE."""
    reference, found, states = _compare(model, graph, with_state=True)
    diff = max(float(np.abs(found - reference).max()), states)
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(f"the exported graph differs from the PyTorch model by {diff:.2e} (more than "
                          f"{PARITY_TOLERANCE:.0e}) — this is a bug in lm export; please report it")
    return diff


def _compare(model: LanguageModel, graph: bytes, with_state: bool = False):
    """Logits of the model and of the graph over random ids read in CHECK_SPLITS calls, state carried."""
    from ..backend.onnx_backend import make_session

    session = make_session(graph)  # errors only: the graph's logits_from input is no news
    config = model.config
    names = state_names(config.cell)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(config.vocab_size, (CHECK_BATCH, sum(CHECK_SPLITS)), generator=generator)
    state, graph_state = None, [np.zeros((config.layers, CHECK_BATCH, config.hidden), np.float32) for _ in names]
    reference, found, state_diff, at = [], [], 0.0, 0
    for size in CHECK_SPLITS:
        chunk = ids[:, at: at + size]
        at += size
        with torch.inference_mode():
            logits, state = model(chunk, state)
        logits_found, *graph_state = session.run(["logits", *(o for _, o in names)],
                                                 {"ids": chunk.numpy(), **{i: s for (i, _), s in zip(names, graph_state)}})
        expected = state if isinstance(state, tuple) else (state,)
        state_diff = max([state_diff] + [float(np.abs(g - e.numpy()).max()) for g, e in zip(graph_state, expected)])
        reference.append(logits.numpy())
        found.append(logits_found)
    reference, found = np.concatenate(reference, 1), np.concatenate(found, 1)
    return (reference, found, state_diff) if with_state else (reference, found)


def _file_info(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        os.fsync(f.fileno())
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _swap_in(staging: Path, out: Path) -> None:
    """Rename the finished staging folder to `out` (replacing an earlier export or an empty folder)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "export")
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old / "export", out)  # put the earlier export back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
