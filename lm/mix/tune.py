"""Tuning what inference mixes in over the model, on the validation text: the continuous cache,
then (word models) the training text's n-gram over the model with its cache.

Written once for both places that tune: the end of `lm train` and `lm eval --tune-cache`. The
caller saves the result (config.json's "cache" and "ngram", and ngram.safetensors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .cache_tune import tune_on
from .config import CacheConfig, NgramConfig
from .ngram import Ngram, fit as fit_ngram


@dataclass
class Tuned:
    """What tuning chose, and the entries config.json records for it."""

    cache: CacheConfig  # off (weight 0) when no setting lowered the validation perplexity
    cache_settings: dict  # config.json's "cache": the settings and the validation perplexity without and with it
    ngram: Ngram | None = None  # the n-gram, when mixing it in lowered the validation perplexity
    ngram_settings: dict | None = None  # config.json's "ngram"; None for a model that is not word-level


def tune(model, tokenizer, valid_ids: np.ndarray, train_ids: Callable[[], np.ndarray],
         say: Callable[[str], None] = lambda text: None) -> Tuned:
    """Tune the cache on the validation ids and, for a word model, weigh an n-gram of the training ids against it.

    Args:
        model: the model in eval mode (the best weights).
        train_ids: returns the training text's ids; called only for a word model.
        say: receives a line for the user at each stage and for each result.
    """
    say("Tuning the continuous cache on the validation text…")
    cache, report = tune_on(model, valid_ids)
    model_ppl, cache_ppl = math.exp(report["model_nll"]), math.exp(report["cache_nll"])
    tuned = Tuned(cache, {**cache.to_dict(), "valid_perplexity": model_ppl, "valid_perplexity_with_cache": cache_ppl})
    if cache.enabled:
        say(f"Cache: validation perplexity {model_ppl:.2f} → {cache_ppl:.2f} "
            f"(window {cache.window}, weight {cache.weight}); suggestions use it.")
    else:
        say("Cache: no setting lowered the validation perplexity; it stays off.")
    if tokenizer.word_level:
        nll = report["nll"]  # over the model with its cache, per position of valid_ids[1:]
        _tune_ngram(tuned, train_ids(), tokenizer.vocab_size, nll, valid_ids[: len(nll) + 1], say)
    return tuned


def _tune_ngram(tuned: Tuned, train_ids, vocab_size: int, nll, valid_ids, say) -> None:
    """Count the training ids into an n-gram, kept when mixing it in lowers the validation perplexity."""
    say(f"Counting the training text into a {NgramConfig.order}-gram…")
    ngram, tuned.ngram_settings = fit_ngram(train_ids, vocab_size, nll, valid_ids)
    tuned.ngram = ngram if ngram.weight > 0 else None
    if tuned.ngram is None:
        say("N-gram: it did not lower the validation perplexity; suggestions leave it out.")
    else:
        say(f"N-gram: validation perplexity {math.exp(nll.mean().item()):.2f} → "
            f"{tuned.ngram_settings['valid_perplexity_with_ngram']:.2f} (weight {ngram.weight}); suggestions mix it in.")
