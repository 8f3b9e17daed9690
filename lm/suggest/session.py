"""The one session type: suggestions that follow a text as it is typed, reading each word once.

The model's state is kept at every word boundary of the context (a stack of marks), so a
keystroke reads at most the last word, and a deletion falls back to an earlier mark. The
context is read in a canonical way, word groups first and then word by word, so that the
session gives exactly the numbers `Suggester.suggest` gives for the whole text (which asks a
fresh session). The CLI, the REPL, the server and the keyboard simulation all type through it.
"""
from __future__ import annotations

import copy
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..data.lexicon import WORD
from ..data.text import START_TEXT
from ..mix.cache import CacheMemory
from .typed import Suggestion, split_typed

if TYPE_CHECKING:
    from .engine import Suggester

GROUP_WORDS = 32  # whole groups of this many words are read in one model call
MAX_MARKS = 4 * GROUP_WORDS  # word-boundary states a session keeps (older ones are re-read)
SEGMENT = re.compile(r"\s*\S+|\s+")  # one word with the whitespace before it


@dataclass
class Mark:
    """The model after reading the text up to `end` (`words` words of the context)."""

    end: int
    words: int
    state: object
    logits: np.ndarray  # [vocab] next-token logits (with a cache: mixed log-probabilities)
    unknown: tuple = ()  # words outside the lexicon read since the previous mark (case-folded)
    feature: np.ndarray | None = None  # with a cache: what the output layer read last [emb]
    count: int = 0  # with a cache: entries of the text before this mark
    view: tuple | None = None  # with a cache, while suggesting: the memory (keys, values) before it
    context: tuple = ()  # with an n-gram: the last token ids read
    probs: np.ndarray | None = None  # word models: softmax(logits), worked out once per mark
    # Search steps taken from this mark while the beam had one hypothesis (through the typed
    # prefix of a char model): piece ids -> (state, logits). The next keystroke's search
    # starts with the same steps. Only one-stream steps are kept: a row's logits depend in
    # their low bits on the rows batched with it, so a kept step is exactly the step retaken.
    alone: dict = field(default_factory=dict)


class SuggestionSession:
    """Suggestions that follow a text as it is typed (see the module's docstring).

    Results equal `Suggester.suggest(text)`.
    """

    def __init__(self, suggester: Suggester, text: str = "", adapt=None):
        """
        Args:
            adapt: an lm.mix.adapt.AdaptConfig: dynamic evaluation as the text is typed. The session
                gets its own copy of the model (float weights), which takes one small gradient
                step on every 20 tokens it reads and keeps the change, so names and topics
                of the text become likelier. Off by default: a step is a backward pass (about
                0.1 s for the default word model, bench/NOTES.md) paid on the keystroke that
                completes a segment, and the strips then depend on everything typed,
                deletions included.
        """
        self.adapter = None
        if adapt is not None:
            from ..mix.adapt import Adapter

            suggester = suggester.with_model(copy.deepcopy(suggester.model))
            self.adapter = Adapter(suggester.model, adapt)
            self.adapter.read(suggester.tokenizer.encode(START_TEXT))
        self.suggester = suggester
        self._text = ""
        self._marks: list[Mark] = [suggester.start()]
        self.memory = CacheMemory(suggester.cache) if suggester.cache is not None else None
        self._unknown: Counter = Counter()  # finished words outside the lexicon, as read so far
        self.set_text(text)

    @property
    def text(self) -> str:
        return self._text

    def type(self, chars: str) -> None:
        """Append typed characters."""
        self.set_text(self._text + chars)

    def delete(self, n: int = 1) -> None:
        """Delete the last `n` characters (all of them if fewer)."""
        self.set_text(self._text[: max(len(self._text) - max(n, 0), 0)])

    def set_text(self, text: str) -> None:
        """Replace the text; marks before the first changed character are kept."""
        same = _common_prefix(self._text, text)
        while len(self._marks) > 1 and self._marks[-1].end > same:
            self._pop()
        self._text = text

    def suggestions(self, k: int | None = None) -> list[Suggestion]:
        """Suggestions for the text typed so far (see `Suggester.suggest`)."""
        typed = split_typed(self._text, self.suggester.by_whitespace)
        if typed.too_long:
            return []
        mark = self._sync(typed.context_end)
        return self.suggester.suggest_after(mark, typed, k, self.learned(), self._view(mark))

    def score_words(self, words: list[str]) -> list[float]:
        """log P(word | context) for candidates of the word being typed, as the strip weighs them.

        The candidates stand in for the word at the end of the text (what `suggestions` would
        complete; nothing after whitespace), so to weigh corrections of a finished word, ask
        with the text up to the word's last letter. See `Suggester.score_after`.
        """
        typed = split_typed(self._text, self.suggester.by_whitespace)
        if typed.too_long:  # no word is being typed: nothing stands in for it
            return [-math.inf] * len(words)
        mark = self._sync(typed.context_end)
        return self.suggester.score_after(mark, typed.lead, words, self._view(mark))

    def learned(self) -> frozenset:
        """Words outside the lexicon typed and finished often enough to be offered (case-folded)."""
        return frozenset(self.learned_counts())

    def learned_counts(self) -> dict[str, int]:
        """The learned words with how often each was typed and finished in the text read so far."""
        return {w: n for w, n in self._unknown.items() if n >= self.suggester.config.learn_after}

    @property
    def words_read(self) -> int:
        """Words of the text read so far (up to the last word boundary `suggestions` needed)."""
        return self._marks[-1].words

    def read(self) -> None:
        """Read the context the next suggestions need, e.g. while the keyboard is idle.

        Reading a long text takes far longer than a suggestion (400 characters: ~20 ms for a
        2×512 char model with int8 weights, one LSTM step per token); afterwards `suggestions`
        only searches.
        """
        typed = split_typed(self._text, self.suggester.by_whitespace)
        if not typed.too_long:
            self._sync(typed.context_end)

    def _view(self, mark: Mark) -> tuple | None:
        """With a cache: the memory (keys, values) of the text before the mark."""
        return self.memory.view(mark.count) if self.memory is not None else None

    def _sync(self, end: int) -> Mark:
        """The mark for text[:end], reading only what the kept marks do not cover."""
        self._drop_stale(end)
        ends = _segment_ends(self._text, self._marks[-1].end, end)
        if self._marks[-1].words % GROUP_WORDS + len(ends) >= GROUP_WORDS:
            # A group completes: read it whole from its start, as a fresh read of the text would.
            while self._marks[-1].words % GROUP_WORDS:
                self._pop()
            ends = _segment_ends(self._text, self._marks[-1].end, end)
            whole = len(ends) // GROUP_WORDS * GROUP_WORDS
            for stop in ends[GROUP_WORDS - 1: whole: GROUP_WORDS]:
                self._push(stop, GROUP_WORDS)
            ends = ends[whole:]
        for stop in ends:
            self._push(stop, 1)
        return self._marks[-1]

    def _drop_stale(self, end: int) -> None:
        """Drop marks past `end` or at what is no longer a word boundary of text[:end]."""
        text = self._text
        while len(self._marks) > 1:
            at = self._marks[-1].end
            if at == end or at < end and not text[at - 1].isspace() and text[at].isspace():
                return
            self._pop()

    def _pop(self) -> None:
        self._unknown.subtract(self._marks.pop().unknown)

    def _push(self, stop: int, words: int) -> None:
        mark, segment = self._marks[-1], self._text[self._marks[-1].end: stop]
        feature, count = None, 0
        if self.memory is None:
            state, logits = self.suggester.read(mark.state, mark.logits, segment)
        else:
            state, logits, feature, count, _ = self.suggester.read_cached(mark, segment, self.memory)
        lexicon = self.suggester.lexicon
        unknown = () if lexicon is None else tuple(w.casefold() for w in WORD.findall(segment) if not lexicon.allows(w))
        self._unknown.update(unknown)
        logits, context = self.suggester.with_ngram(mark, segment, logits)
        if self.adapter is not None:
            self.adapter.read(self.suggester.tokenizer.encode(segment))
        if len(self._marks) > 1:
            mark.alone.clear()  # typing has moved on to the next word (the start mark's are shared)
        self._marks.append(Mark(stop, mark.words + words, state, logits, unknown, feature, count, context=context))
        if len(self._marks) > MAX_MARKS:
            del self._marks[1]  # the oldest group; a deletion that far back re-reads from the start
        if self.memory is not None:  # marks whose memory the cache has dropped are read again if needed
            self._marks[1:-1] = [m for m in self._marks[1:-1] if self.memory.covers(m.count)]


def _segment_ends(text: str, start: int, end: int) -> list[int]:
    """End positions of the words (each with the whitespace before it) in text[start:end]."""
    return [m.end() for m in SEGMENT.finditer(text, start, end)]


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of two strings (slices compared in C: fast on megabytes)."""
    if b.startswith(a):
        return len(a)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
