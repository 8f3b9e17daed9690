"""Run an `lm export` folder without PyTorch, with lm's own suggestion engine carried in the folder.

    python runtime.py EXPORT_DIR "ROMEO: I will k"              # the keyboard's strip: know, keep, kill
    python runtime.py EXPORT_DIR "The old man" --generate 40    # continue the text

    model = Model("EXPORT_DIR")
    model.suggest("the clouds are in the")           # [Suggestion(word="sky", probability=0.93, completion=" sky"), ...]
    model.generate("The old man", 40, seed=1)        # " was sitting by the sea ..."
    stream = model.stream("the clouds are in the")   # a text typed so far, read once
    stream.suggest(3)
    stream.feed(" sk")                               # typed on: only the new text is read
    stream.generate(20, seed=1)                      # continues the text, and keeps it

An export holds the graph, config.json, the tokenizer, lexicon and n-gram, and the lm package
itself as a zip (lm-engine.zip, named in manifest.json). This file puts that zip first on
sys.path and loads the folder with `lm.load`, so every answer is the one `lm suggest` and `lm
generate` give for the checkpoint, by the same code: completions of a half-typed word (with the
probability given the typed letters), corrections of a finished word, the lexicon, the
continuous cache, the n-gram, the sampler. It needs onnxruntime, numpy, rapidfuzz and
safetensors (and sentencepiece for a subword model): neither torch nor lm. A process that has
imported lm already runs that lm.

A stream keeps the model's state between calls: the keyboard's session (lm.KeyboardSession, as
`stream.keys`: type, delete, undo, swipe) keeps it at word boundaries, and generation goes on
from the state of the text it has read. Feed whole words to a subword model: each feed is
tokenized on its own (a char or word model takes any split).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

MANIFEST_FILE = "manifest.json"


class NotAnExport(Exception):
    """The folder is not an lm export that carries its engine."""


def load_engine(folder: str | Path):
    """The lm package: the export's engine zip, put first on sys.path (unless lm is imported already)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        engine = folder / manifest["engine"]["file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NotAnExport(f"{folder} is not an lm export with its engine ({type(e).__name__}: {e}) — pass the "
                          "folder `lm export` wrote (an earlier lm's export runs with its own runtime.py)") from None
    if "lm" not in sys.modules and str(engine) not in sys.path:
        sys.path.insert(0, str(engine))
    import lm

    return lm


class Model:
    """An export folder as lm loads it: the graph on ONNX Runtime, and the keyboard over it."""

    def __init__(self, folder: str | Path, config=None, threads: int | None = None):
        """
        Args:
            config: the strip's settings, an lm.SuggestConfig (its defaults are `lm suggest`'s).
            threads: ONNX Runtime's threads for the graph (default: lm's, one).
        """
        self.folder = Path(folder)
        self.lm = load_engine(self.folder)
        self.predictor = self.lm.load(self.folder, backend="onnx")
        if threads:
            from lm.backend.onnx_backend import OnnxBackend

            backend = OnnxBackend.from_export(self.folder, threads)
            backend.config = self.predictor.backend.config
            self.predictor = dataclasses.replace(self.predictor, backend=backend)
        self.keyboard = self.lm.Keyboard.load(self.predictor, config)

    @property
    def backend(self):
        """The graph's step function (lm.backend.onnx_backend.OnnxBackend)."""
        return self.predictor.backend

    @property
    def tokenizer(self):
        return self.predictor.tokenizer

    @property
    def manifest(self) -> dict:
        return json.loads((self.folder / MANIFEST_FILE).read_text(encoding="utf-8"))

    def suggest(self, text: str, k: int | None = None) -> list:
        """The keyboard's strip after `text`, as `lm suggest` gives it: lm Suggestions (word,
        probability, completion; a correction of the text's last word deletes it first)."""
        return self.keyboard.suggest(text, k).as_typed(text)

    def generate(self, text: str = "", max_tokens: int | None = None, **settings) -> str:
        """The continuation `lm generate` writes after `text` (settings: lm.GenerationConfig's
        temperature, top_k, top_p, repetition_penalty, stop_at, seed...)."""
        config = self.lm.GenerationConfig(max_tokens=max_tokens, **settings)
        return self.lm.generate(self.backend, self.tokenizer, text, config).run()[0].text

    def stream(self, text: str = "") -> Stream:
        return Stream(self, text)

    def step(self, ids, state=None):
        """One graph call, the model's contract: ids [batch, time] -> (logits [batch, time, vocab],
        state); state None: zeros."""
        return self.backend.run(np.asarray(ids, np.int64), state)

    def zero_state(self, batch: int = 1) -> tuple:
        backend = self.backend
        return tuple(np.zeros((backend.layers, batch, backend.hidden), np.float32) for _ in backend.state_inputs)


class Stream:
    """A text typed so far, read once (see the module's docstring)."""

    def __init__(self, model: Model, text: str = ""):
        self.model = model
        self.keys = model.keyboard.session(text)  # lm.KeyboardSession
        self._sampler = None  # an lm.Sampler at the end of `_sampled`, once something is generated
        self._sampled = ""

    @property
    def text(self) -> str:
        return self.keys.text

    def feed(self, text: str):
        """Type more text. A word it finishes is kept or corrected as `lm suggest` does ("teh " ->
        "the "); returns that decision (an lm Correction), or None when no word was finished."""
        return self.keys.type(text)

    def suggest(self, k: int | None = None) -> list:
        """The keyboard's strip for the text so far (lm Suggestions)."""
        return self.keys.strip(k)

    def generate(self, max_tokens: int | None = None, **settings) -> str:
        """Continue the text as `lm generate` would (settings as Model.generate's); what is
        written becomes part of the stream."""
        config = self.model.lm.GenerationConfig(max_tokens=max_tokens, **settings)
        if config.n != 1:
            raise self.model.lm.ConfigError(f"a stream writes one text, not n={config.n} — leave n at 1")
        sampler = self._sampler_at(self.text)
        written = "".join(piece.text for piece in sampler.generate(config))  # the sampler follows each token
        self._sampled = self.text + written
        correcting, self.keys.correcting = self.keys.correcting, False  # the model's words are not corrected
        self.keys.set_text(self._sampled)
        self.keys.correcting = correcting
        return written

    def _sampler_at(self, text: str):
        """A sampler that has read `text`: the last one, fed only what was added since, or a new one."""
        if self._sampler is None or not text.startswith(self._sampled):
            from lm.data.text import START_TEXT

            self._sampler = self.model.lm.Sampler(self.model.backend, self.model.tokenizer)
            self._sampler.feed(START_TEXT + text)
        else:
            self._sampler.feed(text[len(self._sampled):])
        self._sampled = text
        return self._sampler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Suggest the next words (the strip `lm suggest` shows) or continue "
                                                 "a text with an lm export, without PyTorch.")
    parser.add_argument("folder", help="the folder `lm export` wrote")
    parser.add_argument("text", nargs="?", default="", help="the text so far")
    parser.add_argument("-k", type=int, help="how many suggestions (default: lm suggest's)")
    parser.add_argument("--json", action="store_true", help="print the suggestions as `lm suggest --json` does")
    parser.add_argument("--generate", type=int, metavar="TOKENS", help="continue the text for this many tokens")
    parser.add_argument("--temperature", type=float, help="for --generate (default: lm generate's)")
    parser.add_argument("--seed", type=int, help="for --generate: the same seed writes the same text")
    args = parser.parse_args(argv)
    try:
        lm = load_engine(args.folder)
    except NotAnExport as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    try:
        model = Model(args.folder)
        if args.generate:
            settings = {name: getattr(args, name) for name in ("temperature", "seed") if getattr(args, name) is not None}
            print(args.text + model.generate(args.text, args.generate, **settings))
            return 0
        suggestions = model.suggest(args.text, args.k)
    except lm.LMError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([s.to_dict() for s in suggestions], ensure_ascii=False))
    else:
        print("".join(f"{s.word}\t{s.probability:.4f}\n" for s in suggestions), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
