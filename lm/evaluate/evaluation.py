"""`lm eval`: a checkpoint measured on text files, folders or datasets.

Likelihood metrics come from lm/model/likelihood.py (the same pass the trainer validates with);
the keyboard metrics (top-k next-word accuracy, keystroke savings) type the text through the
model's own suggester (lm/evaluate/keyboard.py, lm/suggest/engine.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..mix.adapt import AdaptConfig, adapted_read
from ..mix.cache import CacheConfig
from ..mix.cache_tune import cache_nll, mixed_nll, target_probs
from ..checkpoint.loader import load
from ..checkpoint.store import update_config
from ..data.corpus import HF_PREFIX, count_words, expand_paths, load_corpus, load_hf_dataset, read_text, token_ids
from ..errors import ConfigError, CorpusError
from .config import EvalConfig, EvalProgress
from .fast_keyboard import fast_keyboard_metrics
from .keyboard import KeyboardMetrics, leading_words
from ..model.likelihood import LossMetrics, total_nll
from ..mix.tune import tune
from ..suggest.engine import Suggester
from ..data.text import START_TEXT
from ..data.tokenizer import UNK

@dataclass
class EvalResult:
    """What `lm eval` reports: likelihood metrics, keyboard metrics and speed."""

    checkpoint: str
    sources: list[str]
    total_words: int  # whitespace words in the input, before --max-words
    loss: LossMetrics
    seconds: float  # time spent on the likelihood pass
    keyboard: KeyboardMetrics | None = None
    keyboard_seconds: float = 0.0
    device: str = "cpu"
    config: EvalConfig = field(default_factory=EvalConfig)
    # With the continuous cache: its settings, the loss of one stream read without and with it
    # (the same pass, so the two compare exactly), and the keyboard metrics with it.
    cache: CacheConfig | None = None
    stream_loss: LossMetrics | None = None
    cache_loss: LossMetrics | None = None
    cache_seconds: float = 0.0
    cache_keyboard: KeyboardMetrics | None = None
    cache_keyboard_seconds: float = 0.0
    adapt_loss: LossMetrics | None = None  # with dynamic evaluation (one stream, as stream_loss)
    adapt_cache_loss: LossMetrics | None = None  # with dynamic evaluation and the cache together
    adapt_seconds: float = 0.0
    # With the n-gram (over the model with its cache, when on): its weight, one stream's loss and
    # the keyboard metrics.
    ngram_weight: float | None = None
    ngram_loss: LossMetrics | None = None
    ngram_keyboard: KeyboardMetrics | None = None
    ngram_keyboard_seconds: float = 0.0

    @property
    def sampled(self) -> bool:
        return self.loss.words < self.total_words

    @property
    def words_per_s(self) -> float:
        return self.loss.words / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        keyboard = None
        if self.keyboard is not None:
            keyboard = {**self.keyboard.to_dict(), "seconds": self.keyboard_seconds}
        cache = None
        if self.cache_loss is not None:
            cache = {"settings": self.cache.to_dict(), "without": self.stream_loss.to_dict(), "with": self.cache_loss.to_dict(),
                     "seconds": self.cache_seconds, "keyboard": None}
            if self.cache_keyboard is not None:
                cache["keyboard"] = {**self.cache_keyboard.to_dict(), "seconds": self.cache_keyboard_seconds}
        adapt = None
        if self.adapt_loss is not None:
            adapt = {"without": self.stream_loss.to_dict(), "with": self.adapt_loss.to_dict(),
                     "with_cache": self.adapt_cache_loss.to_dict() if self.adapt_cache_loss else None,
                     "seconds": self.adapt_seconds,
                     "tokens_per_s": self.adapt_loss.tokens / max(self.adapt_seconds, 1e-9)}
        ngram = None
        if self.ngram_loss is not None:
            ngram = {"weight": self.ngram_weight, "with_cache": self.cache_loss is not None,
                     "with": self.ngram_loss.to_dict(), "keyboard": None}
            if self.ngram_keyboard is not None:
                ngram["keyboard"] = {**self.ngram_keyboard.to_dict(), "seconds": self.ngram_keyboard_seconds}
        return {
            "checkpoint": self.checkpoint, "sources": self.sources, "device": self.device,
            "total_words": self.total_words, "sampled": self.sampled, **self.loss.to_dict(),
            "seconds": self.seconds, "words_per_s": self.words_per_s, "keyboard": keyboard,
            "cache": cache, "ngram": ngram, "adapt": adapt, "config": self.config.to_dict(),
        }


def evaluate_paths(
    paths: list[str], checkpoint: str | Path | None = None, config: EvalConfig | None = None,
    progress: EvalProgress | None = None,
) -> EvalResult:
    """Evaluate a checkpoint (the newest when None) on text files, folders or hf:NAME[:CONFIG].

    Raises:
        CorpusError: a path is missing or holds no text.
        CheckpointError: the checkpoint is missing or damaged.
    """
    config = config or EvalConfig()
    config.validate()
    progress = progress or EvalProgress()  # the quiet one: the steps below never ask whether there is one
    text, sources = read_eval_text(paths, config.encoding, config.split)
    # Perplexity is PyTorch's job: the model reads whole texts in batches, on a GPU when there is one.
    predictor = load(checkpoint, "cpu" if config.int8 else config.device, cache=config.cache, ngram=config.ngram,
                     backend="torch")
    if config.tune_cache:
        progress.start("tuning the cache", 1)
        tune_cache(predictor)
        progress.advance(1)
        predictor = load(predictor.path, predictor.device, cache=config.cache, ngram=config.ngram, backend="torch")  # as tuned
    predictor = predictor.to_int8() if config.int8 else predictor
    result = evaluate_text(predictor.model, predictor.tokenizer, text, config, progress, predictor.lexicon,
                           predictor.cache, predictor.ngram)
    result.checkpoint, result.sources = str(predictor.path), sources
    return result


def tune_cache(ckpt) -> dict:
    """Tune a checkpoint's continuous cache (and a word model's n-gram) on its own validation text
    (lm/mix/tune.py, as `lm train` does at its end); saves them and returns the cache's settings."""
    sources = ckpt.config.get("corpus", {}).get("sources")
    if not sources:
        raise ConfigError(f"{ckpt.path} does not record its training corpus, so it has no validation text to tune "
                          "the cache on — train it again with this lm, or evaluate without --tune-cache")
    corpus = load_corpus(sources)
    tuned = tune(ckpt.model.eval(), ckpt.tokenizer, token_ids(corpus.valid, ckpt.tokenizer),
                 lambda: token_ids(corpus.train, ckpt.tokenizer))
    update_config(ckpt.path, cache=tuned.cache_settings)
    if tuned.ngram_settings is not None:  # a word model
        if tuned.ngram is not None:
            tuned.ngram.save(ckpt.path)
        update_config(ckpt.path, ngram=tuned.ngram_settings)
        ckpt.config["ngram"] = tuned.ngram_settings
    return tuned.cache_settings


def evaluate_text(model, tokenizer, text: str, config: EvalConfig | None = None, progress: EvalProgress | None = None,
                  lexicon=None, cache: CacheConfig | None = None, ngram=None) -> EvalResult:
    """Likelihood metrics over the whole text (or its first max_words words) and keyboard metrics on a sample.

    lexicon: what the suggester may offer (lm.load(checkpoint).lexicon), as `lm suggest` runs it.
    cache: a continuous cache (lm.mix.cache); when on, the text is also read as one stream without
        and with it, and typed again with it.
    ngram: a word model's lm.mix.ngram.Ngram; when given, that stream is scored and the text typed
        again with it mixed in too (over the cache, when on).
    """
    config = config or EvalConfig()
    config.validate()
    progress = progress or EvalProgress()
    total_words = count_words(text)
    if config.max_words is not None:
        text = leading_words(text, config.max_words)
    # Score the text's first token too: after a newline, the natural start-of-text context.
    context = tokenizer.encode(START_TEXT)
    ids = np.concatenate([np.asarray(context, dtype=np.int64), token_ids(text, tokenizer)])  # [context + text]
    progress.start("loss", len(ids) - len(context))
    started = time.perf_counter()  # speed counts the model, not the (cached) tokenization
    total, scored = total_nll(model, ids, config.batch, config.bptt, overlap=config.overlap,
                              first=len(context), advance=progress.advance, vocab_size=tokenizer.vocab_size)
    loss = LossMetrics(loss=total.item() / max(scored, 1), tokens=scored, chars=len(text), words=count_words(text))
    result = EvalResult("", [], total_words, loss, time.perf_counter() - started,
                        device=str(next(model.parameters()).device), config=config)
    if config.keyboard:
        started = time.perf_counter()
        result.keyboard = text_keyboard_metrics(model, tokenizer, leading_words(text, config.keyboard_words), progress, lexicon)
        result.keyboard_seconds = time.perf_counter() - started
    cache = cache if cache is not None and cache.enabled else None
    if cache is not None:
        stream = _evaluate_cache(model, tokenizer, text, ids, config, progress, lexicon, cache, result)
    else:
        stream = None
    if ngram is not None and ngram.weight > 0 and tokenizer.word_level:
        _evaluate_ngram(model, tokenizer, text, ids, config, progress, lexicon, cache, ngram, result, stream)
    if config.adapt:
        _evaluate_adapt(model, text, ids, config, progress, result, cache)
    return result


def _evaluate_adapt(model, text, ids, config, progress, result, cache: CacheConfig | None) -> None:
    """Dynamic evaluation's figure, beside the same single stream read without it; with a cache,
    also both together (the cache remembers the adapting model's features)."""
    counts = dict(chars=len(text), words=count_words(text))
    if result.stream_loss is None:
        without, _ = cache_nll(model, ids, CacheConfig())
        result.stream_loss = LossMetrics(loss=without.mean().item(), tokens=len(without), **counts)
    progress.start("adapting", len(ids) - 1)
    started = time.perf_counter()
    features, nll = adapted_read(model, ids, AdaptConfig(config.adapt_lr, config.adapt_decay), progress.advance)
    result.adapt_seconds = time.perf_counter() - started
    result.adapt_loss = LossMetrics(loss=nll.mean().item(), tokens=len(nll), **counts)
    if cache is not None and cache.enabled:
        targets = torch.tensor(np.asarray(ids[1:]), dtype=torch.long)
        both = mixed_nll(nll, target_probs(features, targets, cache.window, cache.sharpness), cache.weight, cache.window)
        result.adapt_cache_loss = LossMetrics(loss=both.mean().item(), tokens=len(both), **counts)


def _evaluate_cache(model, tokenizer, text, ids, config, progress, lexicon, cache, result):
    """The cache's figures: one stream read without and with it, and the keyboard with it.
    Returns that stream's nll per token (without, with the cache), for the n-gram's figures."""
    progress.start("cache", 1)
    started = time.perf_counter()
    without, with_cache = cache_nll(model, ids, cache)
    counts = dict(tokens=len(without), chars=len(text), words=count_words(text))
    result.cache, result.cache_seconds = cache, time.perf_counter() - started
    result.stream_loss = LossMetrics(loss=without.mean().item(), **counts)
    result.cache_loss = LossMetrics(loss=with_cache.mean().item(), **counts)
    progress.advance(1)
    if config.keyboard:
        started = time.perf_counter()
        result.cache_keyboard = text_keyboard_metrics(model, tokenizer, leading_words(text, config.keyboard_words),
                                                      progress, lexicon, cache)
        result.cache_keyboard_seconds = time.perf_counter() - started
    return without, with_cache


def _evaluate_ngram(model, tokenizer, text, ids, config, progress, lexicon, cache, ngram, result, stream=None) -> None:
    """The n-gram's figures: the one stream read with it mixed in, and the keyboard with it."""
    progress.start("n-gram", 1)
    without, with_cache = stream or cache_nll(model, ids, cache or CacheConfig())  # the cache's read, when it ran
    mixed = ngram.mixed_nll(with_cache, ids, ngram.weight)
    result.ngram_weight = ngram.weight
    result.ngram_loss = LossMetrics(loss=mixed.mean().item(), tokens=len(mixed), chars=len(text), words=count_words(text))
    if result.stream_loss is None:
        result.stream_loss = LossMetrics(loss=without.mean().item(), tokens=len(without), chars=len(text),
                                         words=count_words(text))
    progress.advance(1)
    if config.keyboard:
        started = time.perf_counter()
        result.ngram_keyboard = text_keyboard_metrics(model, tokenizer, leading_words(text, config.keyboard_words),
                                                      progress, lexicon, cache, ngram)
        result.ngram_keyboard_seconds = time.perf_counter() - started


def text_keyboard_metrics(model, tokenizer, text: str, progress: EvalProgress, lexicon=None, cache=None,
                          ngram=None) -> KeyboardMetrics:
    """Keyboard metrics of the model's own suggester: the numbers of typing through a
    SuggestionSession, computed from chunked reads where the model allows (lm/evaluate/fast_keyboard.py)."""
    suggester = Suggester(model, tokenizer, lexicon=lexicon, cache=cache, ngram=ngram)
    progress.start("keyboard", count_words(text))
    return fast_keyboard_metrics(suggester, text, is_unknown=unknown_word_test(tokenizer), advance=progress.advance)


def unknown_word_test(tokenizer) -> Callable[[str], bool]:
    """Whether a word is <unk> to the tokenizer: the literal <unk> (as in WikiText) or encoded with it."""
    return lambda word: word == UNK or tokenizer.unk_id in tokenizer.encode(word)


def read_eval_text(paths: list[str], encoding: str = "utf-8", split: str = "test") -> tuple[str, list[str]]:
    """The whole text of files, folders (their text files) and hf:NAME[:CONFIG] datasets, and its sources."""
    if not paths:
        raise CorpusError("no text given — pass a text file, a folder or hf:NAME")
    parts, sources = [], []
    for raw in paths:
        if raw.startswith(HF_PREFIX):
            text = getattr(load_hf_dataset(raw), split)
            if not text.strip():
                raise CorpusError(f"{raw} has no {split} text — pick another --split")
            parts.append(text)
            sources.append(f"{raw} ({split})")
            continue
        for path in expand_paths([raw]):
            text = read_text(path, encoding)
            parts.append(text if text.endswith("\n") else text + "\n")
            sources.append(str(path))
    return "".join(parts), sources
