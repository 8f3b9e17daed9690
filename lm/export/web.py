"""`lm export --web`: a static folder that suggests words as you type, in the browser, with no server.

    index.html, style.css, page.js    the page: a text box and a strip of three suggestions
    lm.js, text.js, search.js         the suggestion engine's rule in JavaScript (lm/suggest/engine.py's)
    model.onnx                        the model's step function, as `lm export` writes it (int8 by default)
    lm-web.json                       what lm.js needs: the tokenizer's pieces, the engine's settings,
                                      Python's text rules, the graph's state names
    lexicon.json                      char models: the words the strip may offer (case-folded, sorted)
    ort.wasm.min.mjs, ort-wasm-simd-threaded.{mjs,wasm}
                                      onnxruntime-web, pinned and verified (web_onnxruntime.py)

Nothing is fetched from elsewhere: served by any static file server (`python -m http.server`),
the page loads these files once and then computes every suggestion itself, offline. Browsers
run no WebAssembly modules from file://, so the folder must be served.

The page gives the suggestions `lm.Suggester.suggest` gives over the same graph, without the
continuous cache, the n-gram and the keyboard's corrections (tests/test_export_web.py checks
the words in Chromium). Char and word models only: a sentencepiece model's text would need
sentencepiece in the page.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..backend.base import read_chunk
from ..backend.graph import INT8_CELLS
from ..checkpoint.folder import read_config, resolve_checkpoint
from ..data.lexicon import Lexicon
from ..data.text import JOINERS, SENTENCE_END, START_TEXT
from ..data.tokenizer import load_tokenizer
from ..errors import ExportError
from ..suggest.config import SuggestConfig
from ..suggest.search import ALONE_FLOATS
from ..suggest.session import GROUP_WORDS, MAX_MARKS
from ..suggest.typed import MAX_WORD_CHARS
from .onnx import GRAPH_FILE, export_checkpoint, staged_folder
from .web_onnxruntime import FILES as ONNXRUNTIME_WEB_FILES
from .web_onnxruntime import VERSION as ONNXRUNTIME_WEB_VERSION
from .web_onnxruntime import onnxruntime_web_files

FORMAT = "lm-web"
FORMAT_VERSION = 1
INFO_FILE = "lm-web.json"
LEXICON_FILE = "lexicon.json"
STATIC = Path(__file__).with_name("web_static")
# The served page's stylesheet (lm serve's look, one file for both pages), copied beside the rest.
SERVED_STYLE = Path(__file__).parents[1] / "serve" / "static" / "style.css"
PAGE_FILES = ("index.html", "style.css", "page.js", "lm.js", "text.js", "search.js")
KINDS = ("char", "word")


@dataclass
class WebExportResult:
    """What `export_web` wrote."""

    folder: Path
    info: dict  # lm-web.json, without the tokenizer's pieces
    files: dict[str, int]  # file name -> size in bytes

    @property
    def parts(self) -> dict[str, int]:
        """Bytes by part: the page and its engine, the graph, the data, onnxruntime-web."""
        runtime = {Path(name).name for name in ONNXRUNTIME_WEB_FILES}
        parts = {"page and engine (HTML, CSS, JS)": PAGE_FILES, GRAPH_FILE: (GRAPH_FILE,),
                 "tokenizer and lexicon (JSON)": (INFO_FILE, LEXICON_FILE),
                 f"onnxruntime-web {ONNXRUNTIME_WEB_VERSION}": runtime}
        return {part: sum(self.files.get(name, 0) for name in names) for part, names in parts.items()}


def export_web(checkpoint: str | Path | None, out_dir: str | Path, int8: bool | None = None, overwrite: bool = False,
               onnxruntime_web: str | Path | None = None, config: SuggestConfig | None = None) -> WebExportResult:
    """Write a static web folder that suggests with a checkpoint (the newest under checkpoints/ when None).

    Args:
        int8: the int8 graph (about a quarter of the size); False: the fp32 graph, which gives
            the same numbers as the PyTorch model; None: int8 where ONNX Runtime has int8
            weights for the cell (LSTM), else fp32.
        overwrite: replace `out_dir` if it is an earlier web export.
        onnxruntime_web: a copy of the pinned onnxruntime-web (its .tgz or unpacked folder);
            None: $LM_ONNXRUNTIME_WEB, else fetched once from the npm registry and cached.
        config: k, beam width, search depth and the other suggestion settings the page uses.
    Raises:
        ExportError (or CheckpointError) with a one-line message; nothing is left half-written.
    """
    out = Path(out_dir)
    _check_target(out, overwrite)
    folder = resolve_checkpoint(checkpoint)
    checkpoint_config = read_config(folder)
    kind = checkpoint_config.get("tokenizer", {}).get("kind")
    if kind not in KINDS:
        raise ExportError(f"--web supports char and word models, and {folder} is a {kind} model: the page cannot "
                          "split text into its sentencepiece pieces — export it without --web")
    if int8 is None:
        int8 = checkpoint_config.get("model", {}).get("cell") in INT8_CELLS
    config = config or SuggestConfig()
    config.validate()
    runtime = onnxruntime_web_files(onnxruntime_web)  # before the slower graph export: a missing package fails at once
    with staged_folder(out) as staging:
        info = _write_folder(folder, kind, staging, int8, runtime, config)
        files = {p.name: p.stat().st_size for p in sorted(staging.iterdir())}
    info["tokenizer"] = {k: v for k, v in info["tokenizer"].items() if k not in ("pieces", "sorted_ids")}
    return WebExportResult(out, info, files)


def _check_target(out: Path, overwrite: bool) -> None:
    if out.is_file():
        raise ExportError(f"{out} is a file — choose a folder for the web export")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out} already exists — pass --overwrite to replace it, or choose another folder")
    if not (out / INFO_FILE).is_file():
        raise ExportError(f"{out} is not an lm web export (it has no {INFO_FILE}); --overwrite replaces only "
                          "earlier exports — choose another folder")


def _write_folder(checkpoint: Path, kind: str, folder: Path, int8: bool, runtime: dict[str, bytes],
                  config: SuggestConfig) -> dict:
    """Write every file of the web folder into `folder`; returns lm-web.json's content."""
    graph = export_checkpoint(checkpoint, folder / "graph", int8=int8)
    os.replace(graph.folder / GRAPH_FILE, folder / GRAPH_FILE)
    shutil.rmtree(graph.folder)
    tokenizer = load_tokenizer(checkpoint, kind)
    lexicon = Lexicon.load(checkpoint) if kind != "word" else None  # word models offer their vocabulary
    if lexicon is not None:
        _write_json(folder / LEXICON_FILE, sorted(lexicon.counts))
    info = build_info(checkpoint, graph.manifest, tokenizer, lexicon is not None, config)
    _write_json(folder / INFO_FILE, info)
    for name in PAGE_FILES:
        shutil.copyfile(SERVED_STYLE if name == "style.css" else STATIC / name, folder / name)
    for name, data in runtime.items():
        (folder / name).write_bytes(data)
    return info


def build_info(checkpoint: Path, manifest: dict, tokenizer, has_lexicon: bool, config: SuggestConfig) -> dict:
    """lm-web.json: everything lm.js needs besides the graph and the lexicon."""
    special = sorted(tokenizer.special_ids)
    pieces = tokenizer.pieces
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": checkpoint.name,
        "created_at": manifest["created_at"],
        "model": manifest["model"],
        "graph": {"file": GRAPH_FILE, "state": manifest["graph"]["state"], "logits": manifest["graph"]["logits"]},
        "check": manifest["check"],
        "tokenizer": {"kind": tokenizer.kind, "pieces": pieces, "unk_id": tokenizer.unk_id,
                      "eos_id": getattr(tokenizer, "eos_id", None), "special_ids": special},
        "lexicon": LEXICON_FILE if has_lexicon else None,
        "suggest": {name: getattr(config, name) for name in ("k", "beam_width", "max_depth", "punctuation_min", "learn_after")},
        "engine": {"group_words": GROUP_WORDS, "max_marks": MAX_MARKS, "alone_floats": ALONE_FLOATS,
                   "read_chunk": read_chunk(len(pieces))},
        "text": text_rules(),
        "onnxruntime_web": ONNXRUNTIME_WEB_VERSION,
    }
    if tokenizer.word_level:  # the vocabulary in Python's order of strings, which the page's binary search needs
        info["tokenizer"]["sorted_ids"] = [i for _, i in sorted((w, i) for i, w in enumerate(pieces) if i not in special)]
    return info


@lru_cache(maxsize=1)
def text_rules() -> dict:
    """Python's text conventions that JavaScript does not share: what counts as whitespace
    (str.isspace), and case folding where it differs from lower-casing (str.casefold)."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    return {"start_text": START_TEXT, "sentence_end": SENTENCE_END, "joiners": JOINERS,
            "spaces": "".join(ch for ch in chars if ch.isspace()),
            "casefold": {ch: ch.casefold() for ch in chars if ch.casefold() != ch.lower()},
            "max_word_chars": MAX_WORD_CHARS}


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
