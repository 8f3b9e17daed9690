"""Keyboard-style suggestions: the next words, or the rest of a half-typed word.

Suggestions are whole words for every tokenizer. A word model ranks its vocabulary
(lm/suggest/vocabulary.py); char and subword models search over pieces with a small beam
(lm/suggest/search.py). A half-typed word backs off to the last word boundary
(lm/suggest/typed.py): the context before it is read once and only words that agree with the
typed prefix are offered. Probabilities are conditional on the typed prefix. The typed word
never takes a slot: when it may already be whole ("the clouds are in the"), the words after
it ("sky") compete with its completions, weighted by that probability.

The `Suggester` reads the context and mixes the continuous cache and the n-gram into the
model's distribution; a `SuggestionSession` (lm/suggest/session.py) keeps what it has read
as the text is typed. `score_after` gives the noisy-channel decoder its prior: log P(w |
context) for given words, by the same definition as the strip's probabilities.
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import replace

import numpy as np

from .._arrays import log_softmax
from ..backend.base import as_backend
from ..errors import ConfigError
from ..data.lexicon import Lexicon
from ..data.text import PUNCT, START_TEXT, char_class
from ..mix.cache import CacheConfig, CacheMemory, mix
from .config import SuggestConfig
from .pieces import Allowed
from .search import PieceSearch
from .session import Mark, SuggestionSession
from .spelling import spelling_log_probs
from .typed import Suggestion, Typed
from .vocabulary import Vocabulary


class Suggester:
    """Suggests whole next words, or completions of a half-typed word, from a model."""

    def __init__(self, model, tokenizer, config: SuggestConfig | None = None, lexicon: Lexicon | None = None,
                 cache: CacheConfig | None = None, ngram=None):
        """
        Args:
            model: the backend that steps the model (lm.load(path).backend: ONNX Runtime or
                PyTorch), or a PyTorch LanguageModel.
            lexicon: the words char and subword models may offer (a checkpoint's: lm.load(path).lexicon);
                None, or config.any_word, lets them spell anything. Word models offer their
                vocabulary.
            cache: a continuous cache over the text typed so far (lm/mix/cache.py; the checkpoint's
                tuned settings: lm.load(path).cache); None or a weight of 0: off.
                Its memory holds the text's tokens up to the last word boundary; the pieces
                of the word being typed are not in it.
            ngram: an lm.mix.ngram.Ngram mixed into a word model's next-word distribution at its
                weight (lm.load(path).ngram); None: off. Char and subword models leave it out.
        """
        self.backend = as_backend(model, tokenizer.vocab_size)
        self.tokenizer = tokenizer
        self.config = config or SuggestConfig()
        self.config.validate()
        self.lexicon = None if tokenizer.word_level or self.config.any_word else lexicon
        self.by_whitespace = tokenizer.word_level
        if self.by_whitespace:
            self._vocabulary, self._pieces = Vocabulary(tokenizer), None
        else:
            self._vocabulary = None
            self._pieces = PieceSearch(tokenizer.pieces, self.config, self.lexicon, lambda state, rows: self.backend.select(state, rows))
        self._start: Mark | None = None
        self.cache = cache if cache is not None and cache.enabled else None
        self.ngram = ngram if ngram is not None and ngram.weight > 0 and tokenizer.word_level else None

    @classmethod
    def load(cls, predictor, config: SuggestConfig | None = None) -> "Suggester":
        """The suggester over a loaded checkpoint (lm.load): its model, lexicon, cache and n-gram."""
        return cls(predictor.backend, predictor.tokenizer, config, predictor.lexicon, predictor.cache, predictor.ngram)

    @property
    def model(self):
        """The PyTorch model behind the torch backend (dynamic evaluation trains it)."""
        model = getattr(self.backend, "model", None)
        if model is None:
            raise ConfigError(f"this needs the PyTorch model, and the suggester runs on {self.backend.name} — "
                              "load the checkpoint with backend='torch' (--backend torch)")
        return model

    def with_model(self, model) -> "Suggester":
        """The same suggester over another model (a session's own copy that adapts to its text)."""
        other = copy.copy(self)
        other.backend, other._start = as_backend(model, self.tokenizer.vocab_size), None
        return other

    def suggest(self, text: str, k: int | None = None) -> list[Suggestion]:
        """What the user will type next after `text`: the next words, or the rest of a half-typed word.

        After whitespace (or no text) the strip holds the next words. Inside a word it holds the
        word's completions and, weighted by the probability that the typed word is already whole,
        the words that follow it (their completion starts with a space); the typed word itself
        never takes a slot.

        Args:
            k: how many (default: the config's k).
        Returns:
            Up to k suggestions, most likely first; empty when nothing fits the typed prefix.
        """
        return SuggestionSession(self, text).suggestions(k)

    def score_words(self, text: str, words: list[str]) -> list[float]:
        """log P(word | context) for candidates of the word being typed at the end of `text`
        (`SuggestionSession.score_words` over a fresh session; see `score_after`)."""
        return SuggestionSession(self, text).score_words(words)

    # --- reading the context: the model, mixed with the cache and the n-gram

    def start(self) -> Mark:
        """The model at the start of a text (after a newline)."""
        if self._start is None:
            if self.cache is None:
                state, logits = self.read(None, None, START_TEXT)
                self._start = Mark(0, 0, state, logits)
            else:
                state, features, logits = self.backend.read_features(self.tokenizer.encode(START_TEXT), None)
                self._start = Mark(0, 0, state, log_softmax(logits), feature=features[-1])
            self._start.logits, self._start.context = self.with_ngram(self._start, START_TEXT, self._start.logits)
        return self._start

    def with_ngram(self, mark: Mark, text: str, logits: np.ndarray) -> tuple[np.ndarray, tuple]:
        """The distribution after `text` read past `mark` (the model's `logits`), mixed with the
        n-gram when there is one, and the token context the n-gram reads next."""
        if self.ngram is None:
            return logits, ()
        ids = self.tokenizer.encode(text)
        if not ids:  # nothing read: the mark's distribution, mixed already
            return mark.logits, mark.context
        context = (mark.context + tuple(ids))[-(self.ngram.order - 1):]
        return self.ngram.mix(log_softmax(logits), context), context

    def read(self, state, logits, text: str):
        """Advance (state, logits) over a text, a bounded number of tokens per model call."""
        new_state, new_logits = self.backend.read(self.tokenizer.encode(text), state)
        return (state, logits) if new_logits is None else (new_state, new_logits)

    def read_cached(self, mark: Mark, text: str, memory: CacheMemory | None):
        """With the cache: (state, mixed log-probs, last feature, entries count, (keys, values)) after `text`.

        The text's entries are written to `memory` (a session's); with None they are kept
        only in the returned view (the typed word taken as finished).
        """
        ids = self.tokenizer.encode(text)
        if not ids:
            return mark.state, mark.logits, mark.feature, mark.count, memory.view(mark.count) if memory is not None else mark.view
        state, features, logits = self.backend.read_features(ids, mark.state)
        new_keys = np.concatenate([mark.feature[None], features[:-1]])  # each position with the token after it
        new_values = np.array(ids, np.int64)
        if memory is not None:
            count = memory.write(mark.count, new_keys, new_values)
            view = memory.view(count)
        else:
            count = mark.count + len(ids)
            window = self.cache.window
            keys, values = mark.view
            if len(values):
                new_keys, new_values = np.concatenate([keys, new_keys]), np.concatenate([values, new_values])
            view = (new_keys[-window:], new_values[-window:])
        return state, mix(logits[None], features[-1:], *view, self.cache)[0], features[-1], count, view

    def _mark_after(self, mark: Mark, text: str) -> Mark:
        """The mark after `text` read past `mark`, kept out of the session (a word taken as finished)."""
        if self.cache is None:
            state, logits = self.read(mark.state, mark.logits, text)
            after = Mark(mark.end, mark.words, state, logits)
        else:
            state, logits, feature, count, view = self.read_cached(mark, text, None)
            after = Mark(mark.end, mark.words, state, logits, feature=feature, count=count, view=view)
        after.logits, after.context = self.with_ngram(mark, text, after.logits)
        return after

    def _with_view(self, mark: Mark, view: tuple | None) -> Mark:
        """With a cache, a copy of the mark that holds the session's memory (marks are shared: the
        start mark by every session)."""
        if self.cache is None:
            return mark
        if self._vocabulary is not None:  # the copy is made anew each time: keep the row's softmax on the mark
            self._vocabulary.probs(mark)
        return replace(mark, view=view if view is not None else (np.zeros((0, 1), np.float32), np.zeros(0, np.int64)))

    def _step(self, ids: np.ndarray, state, mark: Mark):
        """One model step of every beam (ids [beam, 1]); with the cache, mixed with the mark's memory."""
        if self.cache is None:
            return self.backend.step(ids, state)
        logits, features, state = self.backend.step_features(ids, state)  # [beam, vocab], [beam, emb]
        return mix(logits, features, *mark.view, self.cache), state

    # --- the strip

    def suggest_after(self, mark: Mark, typed: Typed, k: int | None = None, learned: frozenset = frozenset(),
                      view: tuple | None = None) -> list[Suggestion]:
        """Suggestions for the typed word, given the model after its context.

        Args:
            learned: words outside the lexicon that the session has learned (case-folded).
            view: with a cache, the mark's memory (keys, values) from the session.
        """
        k = self.config.k if k is None else k
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, not {k!r} — ask for at least one suggestion")
        if typed.too_long:
            return []
        allowed = None if self._pieces is None else self._pieces.allowed(learned)
        mark = self._with_view(mark, view)
        words = self._conditional(mark, typed, k + 1, allowed)
        # The typed word itself (in any case) takes no slot: it is typed already. The probability
        # that it is finished goes to the words after it ("the" -> " sky"), which compete with
        # its completions ("the" -> "their") on the same scale.
        typed_whole = [w for w in words if len(w) == len(typed.partial)] if typed.partial else []
        complete = sum(words.pop(w) for w in typed_whole)
        strip = self._present(words, typed)
        if complete > (strip[k - 1].probability if len(strip) >= k else 0.0):  # words after it can enter the strip
            strip += self._after_typed_word(mark, typed, complete, k, allowed)
        best: dict[str, Suggestion] = {}
        for s in sorted(strip, key=lambda s: (-s.probability, s.word, s.completion)):
            best.setdefault(s.word, s)
        return list(best.values())[:k]

    def _find(self, mark: Mark, fragment: str, lead: int, k: int, allowed: Allowed | None) -> tuple[dict[str, float], float]:
        """Words that start with `fragment` and their probability, and the probability of the fragment."""
        if self._vocabulary is not None:
            return self._vocabulary.find(mark, fragment, k)
        return self._pieces.find(mark, fragment, lead, k, allowed, self._step)

    def _conditional(self, mark: Mark, typed: Typed, k: int, allowed: Allowed | None) -> dict[str, float]:
        """Words that can follow the context, with their probability given the typed prefix."""
        words: dict[str, float] = defaultdict(float)
        reached = 0.0  # probability that the text goes on with the typed prefix
        for fragment in typed.fragments():
            found, mass = self._find(mark, fragment, len(typed.lead), k, allowed)
            reached += mass
            for word, p in found.items():
                words[word] += p
        return {w: min(p / reached, 1.0) for w, p in words.items()} if reached > 0.0 else {}

    def _after_typed_word(self, mark: Mark, typed: Typed, complete: float, k: int, allowed) -> list[Suggestion]:
        """Next words after the typed word taken as finished, weighted by how likely it is finished."""
        after_mark = self._mark_after(mark, typed.lead + typed.partial)
        after = Typed(mark.end, self._next_lead, "", " ", False)
        words = self._conditional(after_mark, after, k, allowed)
        return self._present({w: p * complete for w, p in words.items()}, after)

    @property
    def _next_lead(self) -> str:
        """The whitespace before the word after a finished one ("" for word models: their words have none)."""
        return "" if self.by_whitespace else " "

    def _present(self, words: dict[str, float], typed: Typed) -> list[Suggestion]:
        """Keyboard conventions: punctuation only when likely, casing from the context; best first."""
        shown: dict[str, float] = defaultdict(float)
        for word, p in words.items():
            if p <= 0.0:  # underflowed: a word the strip cannot rank
                continue
            if char_class(word[0]) == PUNCT and p < self.config.punctuation_min:
                continue
            shown[typed.present(word)] += p
        if self._pieces is not None:
            shown = _merge_case_variants(shown)
        best = sorted(shown.items(), key=lambda wp: (-wp[1], wp[0]))
        return [Suggestion(w, min(p, 1.0), typed.prefix + w[len(typed.partial):]) for w, p in best]

    # --- the prior of the noisy-channel decoder

    def score_after(self, mark: Mark, lead: str, words: list[str], view: tuple | None = None) -> list[float]:
        """log P(word | context) for each candidate word after a context mark, as the strip weighs it.

        The context is the text read up to the mark and `lead`, the whitespace the word starts
        with (`split_typed(text).lead`). A word model gives its next-word row (cache and n-gram
        mixed in), normalised like the strip over the words of its vocabulary; a word outside
        the vocabulary gets the <unk> row, the share of all the words the model does not know.
        A char or subword model spells each candidate piece by piece (lm/suggest/spelling.py),
        so a word's score is its probability on the next-word strip when the search finds it;
        a word it cannot spell (empty, or letters and punctuation mixed) gets -inf. Neither
        looks at the lexicon. Candidates of several words ("in the": a missed space) get the
        first word's score plus each next word's after it, the word before taken as finished.

        Args:
            view: with a cache, the mark's memory (keys, values) from the session.
        Returns:
            One log-probability per word, in order.
        """
        mark = self._with_view(mark, view)
        scores = self._score_words(mark, lead, [w.split(" ")[0] for w in words])
        read: dict[tuple[str, ...], Mark] = {}  # the words before, taken as finished: each read once
        for j, word in enumerate(words):
            parts = word.split(" ")
            at, text = mark, lead + parts[0]
            for i, part in enumerate(parts[1:], 1):
                if scores[j] == -math.inf:
                    break
                before = tuple(parts[:i])
                if before not in read:
                    read[before] = self._mark_after(at, text)
                at = read[before]
                scores[j] += self._score_words(at, self._next_lead, [part])[0]
                text = self._next_lead + part
        return scores

    def _score_words(self, mark: Mark, lead: str, words: list[str]) -> list[float]:
        if self._vocabulary is not None:
            return self._vocabulary.log_probs(mark, words)
        return spelling_log_probs(self._pieces, mark, lead, words, self._step)


def _merge_case_variants(shown: dict[str, float]) -> dict[str, float]:
    """Char and subword models: spellings of one lexicon word that differ only in case
    ("Zealous", "ZealOus") are one suggestion, shown as the likelier, with their probabilities summed.
    (A word model's vocabulary tells "The" from "the"; its strip keeps both.)"""
    merged: dict[str, tuple[str, float, float]] = {}  # folded -> (shown, its own p, summed p)
    for word, p in shown.items():
        key = word.casefold()
        if key in merged:
            best, best_p, total = merged[key]
            better = (p, word == key) > (best_p, best == key)  # ties: the lower-case spelling
            merged[key] = (word, p, total + p) if better else (best, best_p, total + p)
        else:
            merged[key] = (word, p, p)
    return {word: total for word, _, total in merged.values()}
