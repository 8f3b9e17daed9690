"""The one loader: a checkpoint folder -> a `Predictor`, ready for inference.

Every face that predicts (lm suggest, the REPL, lm serve, lm eval, bench/) loads through
`load`, so the folder's config.json is read once and the model, the tokenizer, the lexicon,
the continuous cache's settings and the n-gram always come back together.

    p = lm.load("checkpoints/demo", int8=True)
    logits, state = p.model(ids, None)
    strip = lm.Suggester.load(p).suggest("the clouds are in the")
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .._util import pick_device
from ..data.lexicon import Lexicon
from ..data.tokenizer import Tokenizer
from ..mix.cache import CacheConfig
from ..mix.ngram import FILE as NGRAM_FILE, Ngram, NgramConfig
from ..model.int8 import quantize_int8
from ..model.network import LanguageModel
from .store import load_checkpoint, resolve_checkpoint


@dataclass
class Predictor:
    """A loaded checkpoint and what inference mixes in over the model's log-probabilities."""

    path: Path
    model: LanguageModel  # int8 when loaded with int8=True on the CPU
    tokenizer: Tokenizer
    config: dict  # config.json as read at load time
    lexicon: Lexicon | None = None  # the words suggestions may offer (the training text's + the user's)
    cache: CacheConfig | None = None  # the continuous cache tuned for the checkpoint; None: off or not asked for
    ngram: Ngram | None = None  # a word model's n-gram, when it has one and it was asked for
    int8: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters(), torch.empty(0)).device

    @property
    def metrics(self) -> dict:
        return self.config.get("metrics", {})

    def to_int8(self) -> "Predictor":
        """The same predictor with int8 weights (on the CPU; a GPU model is returned as it is)."""
        if self.int8 or self.device.type != "cpu":
            return self
        return dataclasses.replace(self, model=quantize_int8(self.model), int8=True)


def load(path: str | Path | None = None, device: str | torch.device = "cpu", int8: bool = False, cache: bool = True,
         ngram: bool = True, words: list[str] = ()) -> Predictor:
    """Load a checkpoint folder (the newest under checkpoints/ when `path` is None) for inference.

    Args:
        device: "cpu", "cuda", or "auto" (a CUDA GPU when there is one, else the CPU).
        int8: on the CPU, quantize the weights to int8 (several times faster per token, a
            slightly different distribution: see bench/quantize_quality.py); a GPU runs the
            trained weights.
        cache: use the continuous cache tuned for the checkpoint, when it has one.
        ngram: mix in a word model's n-gram, when it has one.
        words: a user dictionary added to the checkpoint's lexicon.

    Raises:
        CheckpointError: the folder is missing or damaged (NoCheckpointError: none under checkpoints/).
    """
    device = pick_device(device) if isinstance(device, str) else device
    ckpt = load_checkpoint(resolve_checkpoint(path), device)
    predictor = Predictor(ckpt.path, ckpt.model, ckpt.tokenizer, ckpt.config, _lexicon(ckpt.path, words),
                          _cache(ckpt.config) if cache else None, _ngram(ckpt.path, ckpt.config) if ngram else None)
    return predictor.to_int8() if int8 else predictor


def _lexicon(folder: Path, words: list[str]) -> Lexicon | None:
    """The lexicon saved in the folder plus a user's words; None when the folder has none."""
    lexicon = Lexicon.load(folder)
    if lexicon is not None and words:
        lexicon.add(list(words))
    return lexicon


def _cache(config: dict) -> CacheConfig:
    """The continuous cache settings config.json holds; off (weight 0) when it has none."""
    return CacheConfig.from_dict(config.get("cache") or {})


def _ngram(folder: Path, config: dict) -> Ngram | None:
    """The n-gram config.json says to mix in, or None when it has none."""
    settings = NgramConfig.from_dict(config.get("ngram") or {})
    if settings.weight <= 0 or not (folder / NGRAM_FILE).exists():
        return None
    return Ngram.load(folder, settings.weight)
