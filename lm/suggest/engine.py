"""Keyboard-style suggestions: the next words, or the rest of a half-typed word.

Suggestions are whole words for every tokenizer. A word model ranks its vocabulary. Char and
subword models search over pieces with a small beam, one model call per step for all beams;
a word's probability is the product of its pieces' probabilities times the probability that
the word ends there (the next piece starts with whitespace or punctuation), summed over the
piece sequences that spell it.

A half-typed word backs off to the last word boundary: the context before it is read once and
the search follows only pieces that agree with the typed prefix, so "s" still finds "sky"
when the model spells it " sk" + "y". Probabilities are conditional on the typed prefix. The
typed word never takes a slot: when it may already be whole ("the clouds are in the"), the
words after it ("sky") compete with its completions, weighted by that probability.

The context is read in a canonical way, word groups first and then word by word, so that a
`SuggestionSession` which keeps the state of every word boundary as the text is typed gives
exactly the numbers `Suggester.suggest` gives for the whole text.
"""
from __future__ import annotations

import bisect
import copy
import heapq
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import torch

from .._util import flag
from ..errors import ConfigError
from ..data.lexicon import WORD, Lexicon, continuations
from ..mix.cache import CacheConfig, CacheMemory, mix
from ..model.reading import read_chunk, read_features, read_ids
from ..model.state import select_state
from ..data.text import LETTER, PUNCT, SENTENCE_END, SPACE, START_TEXT, char_class

GROUP_WORDS = 32  # whole groups of this many words are read in one model call
MAX_MARKS = 4 * GROUP_WORDS  # word-boundary states a session keeps (older ones are re-read)
MAX_WORD_CHARS = 64  # a longer run of letters is not a word being typed: no suggestions
ALONE_FLOATS = 2**18  # logits floats a mark may keep of its one-stream search steps (1 MB)
SEGMENT = re.compile(r"\s*\S+|\s+")  # one word with the whitespace before it

# What a beam hypothesis is doing, beside the character classes LETTER and PUNCT of lm.data.text.
START_WORD, INSIDE = 2, 3  # no letter of the word yet; still inside the typed prefix


@dataclass
class SuggestConfig:
    """How many suggestions and how hard to search for them."""

    k: int = 3
    beam_width: int = 8  # live piece sequences per search step
    max_depth: int = 16  # search steps after the typed prefix (char models: longest word)
    punctuation_min: float = 0.3  # punctuation is offered only when at least this likely
    any_word: bool = False  # char and subword models: offer spellings outside the lexicon too
    learn_after: int = 2  # a word typed and finished this often in a session joins its lexicon

    def validate(self) -> None:
        for name in ("k", "beam_width", "max_depth", "learn_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag(name)} must be a positive integer, not {value!r} — pass 1 or more")
        if not 0.0 <= self.punctuation_min <= 1.0:
            raise ConfigError(f"--punctuation-min must be in [0, 1], not {self.punctuation_min!r} — 0 offers all punctuation")


@dataclass
class Suggestion:
    """One word on the suggestion strip."""

    word: str  # the whole word as shown
    probability: float  # for a half-typed word: conditional on the typed prefix
    completion: str  # text to append to the typed text to get the word

    def to_dict(self) -> dict:
        return asdict(self)


def word_end(text: str, cls: int) -> int:
    """Index of the first character of `text` that cannot continue a word of class `cls`."""
    for i, ch in enumerate(text):
        if char_class(ch) != cls:
            return i
    return len(text)


@dataclass(frozen=True)
class Typed:
    """A typed text split where decoding backs off to: context, whitespace, typed part of the word."""

    context_end: int  # text[:context_end] is read as context
    lead: str  # whitespace the next word starts with ("" at a line start or after a bracket)
    partial: str  # the typed part of the word ("" for next-word suggestions)
    prefix: str  # put before each completion: " " after punctuation typed without a space
    sentence_start: bool  # capitalise the suggestions

    @property
    def too_long(self) -> bool:
        return len(self.partial) > MAX_WORD_CHARS

    def fragments(self) -> list[str]:
        """What the next text must start with; a capitalised prefix also matches the word in lower case."""
        variants = [self.partial]
        if self.partial[:1].isupper():
            variants += [self.partial[:1].lower() + self.partial[1:], self.partial.lower()]
        # Lower-casing can change the length ("İ"): such variants would not line up with the typed text.
        kept = [v for v in dict.fromkeys(variants) if len(v) == len(self.partial)]
        return [self.lead + v for v in kept]

    def present(self, word: str) -> str:
        """The word as typed so far, with the rest cased like the typed prefix or the sentence."""
        if self.partial:
            rest = word[len(self.partial):]
            return self.partial + (rest.upper() if len(self.partial) > 1 and self.partial.isupper() else rest)
        return word[:1].upper() + word[1:] if self.sentence_start else word


def split_typed(text: str, by_whitespace: bool = False) -> Typed:
    """Split a text into the context to read and the word being typed.

    Args:
        by_whitespace: word models: a word is any run of non-whitespace (their vocabulary's unit).
    """
    if by_whitespace:
        in_word = lambda ch: not ch.isspace()  # noqa: E731
    else:
        in_word = lambda ch: char_class(ch) == LETTER  # noqa: E731
    start = len(text)
    while start > 0 and in_word(text[start - 1]) and len(text) - start <= MAX_WORD_CHARS:
        start -= 1
    partial, before = text[start:], text[start - 1] if start else START_TEXT
    sentence_start = _sentence_start(text, start)
    if by_whitespace:
        return Typed(start, "", partial, "", sentence_start)
    if before.isspace() and before != START_TEXT:  # "the s", "the ": the word starts with this space
        return Typed(start - 1, before, partial, "", sentence_start)
    if partial or before == START_TEXT:  # a line start, or a word right after punctuation ("hi,th")
        return Typed(start, "", partial, "", sentence_start)
    # Punctuation typed without a space after it: the next word follows a space, except after
    # an opening bracket or quote.
    space = "" if unicodedata.category(before) in ("Ps", "Pi") else " "
    return Typed(start, space, "", space, sentence_start)


def _sentence_start(text: str, end: int) -> bool:
    while end > 0 and text[end - 1] in " \t":
        end -= 1
    return end == 0 or text[end - 1] in SENTENCE_END


class _PieceTable:
    """What each piece does to a word, worked out once per tokenizer.

    For a word of class LETTER or PUNCT, and for a word not started yet (START_WORD), a piece
    either ends the word (`ends_by_mode`), extends it and leaves it open (`closed` is 0 there,
    -inf elsewhere), finishes it inside the piece (`splits`: id and the cut), or is not allowed
    (byte, <unk> and control pieces, and whitespace where the word has not started).
    """

    def __init__(self, pieces: list[str], device: torch.device):
        self.pieces = pieces
        self.first = [char_class(p[0]) if p else SPACE for p in pieces]
        ends = torch.zeros(4, len(pieces), dtype=torch.bool)  # [mode, vocab]; INSIDE rows stay empty
        grows = torch.zeros(4, len(pieces), dtype=torch.bool)  # [mode, vocab]
        splits: dict[int, list[tuple[int, int]]] = {LETTER: [], PUNCT: [], START_WORD: []}
        for i, piece in enumerate(pieces):
            if not piece:
                continue
            for mode in (LETTER, PUNCT, START_WORD):
                first = self.first[i]
                if mode != START_WORD and first != mode:
                    ends[mode, i] = True
                elif first != SPACE:
                    cut = word_end(piece, first)
                    if cut == len(piece):
                        grows[mode, i] = True
                    else:
                        splits[mode].append((i, cut))
        # Per step, one product gives every hypothesis the mass of the pieces that end its word,
        # and one addition hides the pieces that may not extend it.
        self.ends_by_mode = ends.T.float().contiguous().to(device)  # [vocab, mode]
        self.closed = torch.zeros(4, len(pieces)).masked_fill(~grows, -math.inf).to(device)  # [mode, vocab]
        # mode -> (ids on the device, the same ids as a list, cuts)
        self.splits = {m: (torch.tensor([i for i, _ in s], dtype=torch.long, device=device), [i for i, _ in s],
                           [c for _, c in s]) for m, s in splits.items()}
        ordered = sorted((p, i) for i, p in enumerate(pieces) if p)
        self.sorted_texts = [p for p, _ in ordered]
        self.sorted_ids = [i for _, i in ordered]
        self.by_text: dict[str, list[int]] = defaultdict(list)
        for p, i in ordered:
            self.by_text[p].append(i)
        self.longest = max((len(p) for p in pieces), default=0)
        self.by_folded: dict[str, list[int]] = defaultdict(list)  # pieces that start with a letter, case-folded
        for i, p in enumerate(pieces):
            if self.first[i] == LETTER:
                self.by_folded[p.casefold()].append(i)
        self.letter_first = torch.tensor([i for i, c in enumerate(self.first) if c == LETTER], dtype=torch.long, device=device)

    def ids_of(self, folded: set[str]) -> list[int]:
        """Ids of the pieces starting with a letter whose case-folded text is in `folded`."""
        return [i for text in folded for i in self.by_folded.get(text, ())]

    def agreeing(self, rest: str) -> list[int]:
        """Ids of pieces that agree with `rest` on their common length (either may be longer)."""
        ids = [i for n in range(1, min(len(rest), self.longest + 1)) for i in self.by_text.get(rest[:n], ())]
        j = bisect.bisect_left(self.sorted_texts, rest)
        while j < len(self.sorted_texts) and self.sorted_texts[j].startswith(rest):
            ids.append(self.sorted_ids[j])
            j += 1
        return ids


@dataclass
class _Options:
    """What each allowed piece does to a hypothesis still inside the typed prefix."""

    next: dict[int, tuple[str, int]]  # piece id -> (text, mode) of the hypothesis it leads to
    crossing_ids: torch.Tensor  # pieces that reach the end of the typed prefix
    finished_ids: torch.Tensor  # pieces that also finish a word...
    finished_words: list[str]  # ...this one
    to_letters: list[tuple[int, str]]  # pieces that cross into a word of letters, and the word so far
    closed: torch.Tensor  # [vocab] 0 for the pieces in `next`, -inf for the others


class _Vocabulary:
    """Word-model vocabulary sorted by text, so a prefix is one contiguous range."""

    def __init__(self, tokenizer, device: torch.device):
        special = tokenizer.special_ids
        ordered = sorted((w, i) for i, w in enumerate(tokenizer.pieces) if i not in special)
        self.texts = [w for w, _ in ordered]
        self.ids = torch.tensor([i for _, i in ordered], dtype=torch.long, device=device)

    def matching(self, prefix: str) -> torch.Tensor:
        """Ids of the words that start with `prefix`."""
        lo = bisect.bisect_left(self.texts, prefix)
        hi = bisect.bisect_left(self.texts, prefix + "\U0010ffff")
        return self.ids[lo:hi]


@dataclass
class _Mark:
    """The model after reading the text up to `end` (`words` words of the context)."""

    end: int
    words: int
    state: object
    logits: torch.Tensor  # [vocab] next-token logits (with a cache: mixed log-probabilities)
    unknown: tuple = ()  # words outside the lexicon read since the previous mark (case-folded)
    feature: torch.Tensor | None = None  # with a cache: what the output layer read last [emb]
    count: int = 0  # with a cache: entries of the text before this mark
    view: tuple | None = None  # with a cache, while suggesting: the memory (keys, values) before it
    context: tuple = ()  # with an n-gram: the last token ids read
    # Search steps taken from this mark while the beam had one hypothesis (through the typed
    # prefix of a char model): piece ids -> (state, logits). The next keystroke's search
    # starts with the same steps. Only one-stream steps are kept: a row's logits depend in
    # their low bits on the rows batched with it, so a kept step is exactly the step retaken.
    alone: dict = field(default_factory=dict)


class _Allowed:
    """The words a strip may offer: the lexicon's, those learned in the session, and punctuation."""

    def __init__(self, lexicon: Lexicon, learned: frozenset, table: _PieceTable, lexicon_closed):
        self.lexicon, self.learned, self.table, self.lexicon_closed = lexicon, learned, table, lexicon_closed

    def word(self, word: str) -> bool:
        return char_class(word[0]) != LETTER or self.lexicon.allows(word) or word.casefold() in self.learned

    def prefix(self, text: str) -> bool:
        """Whether a word being spelled can still become an allowed word."""
        key = text.casefold()
        return self.lexicon.allows_prefix(text) or bool(self.learned) and any(w.startswith(key) for w in self.learned)

    def closed(self, text: str, mode: int) -> torch.Tensor:
        """[vocab] 0 for the pieces that may extend `text` (a word of letters, or one not
        started, `mode`) so that it can still become an allowed word; -inf for the others."""
        key = text.casefold()
        closed = self.lexicon_closed(key, mode, self.lexicon.version)
        learned = [w for w in self.learned if w.startswith(key)]
        if learned:
            ids = self.table.ids_of(continuations(learned, len(key), self.table.longest))
            closed = closed.clone()
            closed[ids] = self.table.closed[mode, ids]
        return closed


class Suggester:
    """Suggests whole next words, or completions of a half-typed word, from a model."""

    def __init__(self, model, tokenizer, config: SuggestConfig | None = None, lexicon: Lexicon | None = None,
                 cache: CacheConfig | None = None, ngram=None):
        """
        Args:
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
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or SuggestConfig()
        self.config.validate()
        self.lexicon = None if tokenizer.word_level or self.config.any_word else lexicon
        self.device = next(model.parameters()).device
        self.chunk = read_chunk(tokenizer.vocab_size)
        self.by_whitespace = tokenizer.word_level
        if self.by_whitespace:
            self._vocabulary, self._find = _Vocabulary(tokenizer, self.device), self._rank
        else:
            self._table, self._find = _PieceTable(tokenizer.pieces, self.device), self._search
        self._options = lru_cache(maxsize=1024)(self._fragment_options)
        # A closed row per word prefix spelled: 16 MB of them at most, few for a big vocabulary.
        self._lexicon_rows = lru_cache(maxsize=min(8192, 2**22 // tokenizer.vocab_size))(self._lexicon_closed)
        self._start: _Mark | None = None
        self.cache = cache if cache is not None and cache.enabled else None
        self.ngram = ngram if ngram is not None and ngram.weight > 0 and tokenizer.word_level else None

    @classmethod
    def load(cls, predictor, config: SuggestConfig | None = None) -> "Suggester":
        """The suggester over a loaded checkpoint (lm.load): its model, lexicon, cache and n-gram."""
        return cls(predictor.model, predictor.tokenizer, config, predictor.lexicon, predictor.cache, predictor.ngram)

    def with_model(self, model) -> "Suggester":
        """The same suggester over another model (a session's own copy that adapts to its text)."""
        other = copy.copy(self)
        other.model, other._start = model.eval(), None
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

    def start(self) -> _Mark:
        """The model at the start of a text (after a newline)."""
        if self._start is None:
            if self.cache is None:
                state, logits = self.read(None, None, START_TEXT)
                self._start = _Mark(0, 0, state, logits)
            else:
                state, features, logits = read_features(self.model, self.tokenizer.encode(START_TEXT), None, self.chunk)
                self._start = _Mark(0, 0, state, torch.log_softmax(logits, -1), feature=features[-1])
            self._start.logits, self._start.context = self.with_ngram(self._start, START_TEXT, self._start.logits)
        return self._start

    def with_ngram(self, mark: _Mark, text: str, logits: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """The distribution after `text` read past `mark` (the model's `logits`), mixed with the
        n-gram when there is one, and the token context the n-gram reads next."""
        if self.ngram is None:
            return logits, ()
        ids = self.tokenizer.encode(text)
        if not ids:  # nothing read: the mark's distribution, mixed already
            return mark.logits, mark.context
        context = (mark.context + tuple(ids))[-(self.ngram.order - 1):]
        return self.ngram.mix(torch.log_softmax(logits.float(), -1), context), context

    def read(self, state, logits, text: str):
        """Advance (state, logits) over a text, a bounded number of tokens per model call."""
        new_state, new_logits = read_ids(self.model, self.tokenizer.encode(text), state, self.chunk)
        return (state, logits) if new_logits is None else (new_state, new_logits)

    def read_cached(self, mark: _Mark, text: str, memory: CacheMemory | None):
        """With the cache: (state, mixed log-probs, last feature, entries count, (keys, values)) after `text`.

        The text's entries are written to `memory` (a session's); with None they are kept
        only in the returned view (the typed word taken as finished).
        """
        ids = self.tokenizer.encode(text)
        if not ids:
            return mark.state, mark.logits, mark.feature, mark.count, memory.view(mark.count) if memory is not None else mark.view
        state, features, logits = read_features(self.model, ids, mark.state, self.chunk)
        new_keys = torch.cat([mark.feature[None], features[:-1]])  # each position with the token after it
        new_values = torch.tensor(ids, dtype=torch.long, device=features.device)
        if memory is not None:
            count = memory.write(mark.count, new_keys, new_values)
            view = memory.view(count)
        else:
            count = mark.count + len(ids)
            window = self.cache.window
            keys, values = mark.view
            if len(values):
                new_keys, new_values = torch.cat([keys, new_keys]), torch.cat([values, new_values])
            view = (new_keys[-window:], new_values[-window:])
        return state, mix(logits[None], features[-1:], *view, self.cache)[0], features[-1], count, view

    def suggest_after(self, mark: _Mark, typed: Typed, k: int | None = None, learned: frozenset = frozenset(),
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
        allowed = None if self.lexicon is None else _Allowed(self.lexicon, learned, self._table, self._lexicon_rows)
        if self.cache is not None:  # a copy: marks are shared (the start mark by every session)
            mark = replace(mark, view=view if view is not None else (torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)))
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

    def _conditional(self, mark: _Mark, typed: Typed, k: int, allowed: _Allowed | None) -> dict[str, float]:
        """Words that can follow the context, with their probability given the typed prefix."""
        words: dict[str, float] = defaultdict(float)
        reached = 0.0  # probability that the text goes on with the typed prefix
        for fragment in typed.fragments():
            found, mass = self._find(mark, fragment, len(typed.lead), k, allowed)
            reached += mass
            for word, p in found.items():
                words[word] += p
        return {w: min(p / reached, 1.0) for w, p in words.items()} if reached > 0.0 else {}

    def _after_typed_word(self, mark: _Mark, typed: Typed, complete: float, k: int, allowed) -> list[Suggestion]:
        """Next words after the typed word taken as finished, weighted by how likely it is finished."""
        text = typed.lead + typed.partial
        if self.cache is None:
            state, logits = self.read(mark.state, mark.logits, text)
            after_mark = _Mark(mark.end, mark.words, state, logits)
        else:
            state, logits, feature, count, view = self.read_cached(mark, text, None)
            after_mark = _Mark(mark.end, mark.words, state, logits, feature=feature, count=count, view=view)
        after_mark.logits, after_mark.context = self.with_ngram(mark, text, after_mark.logits)
        after = Typed(mark.end, "" if self.by_whitespace else " ", "", " ", False)
        words = self._conditional(after_mark, after, k, allowed)
        return self._present({w: p * complete for w, p in words.items()}, after)

    def _present(self, words: dict[str, float], typed: Typed) -> list[Suggestion]:
        """Keyboard conventions: punctuation only when likely, casing from the context; best first."""
        shown: dict[str, float] = defaultdict(float)
        for word, p in words.items():
            if char_class(word[0]) == PUNCT and p < self.config.punctuation_min:
                continue
            shown[typed.present(word)] += p
        best = sorted(shown.items(), key=lambda wp: (-wp[1], wp[0]))
        return [Suggestion(w, min(p, 1.0), typed.prefix + w[len(typed.partial):]) for w, p in best]

    @torch.inference_mode()
    def _rank(self, mark: _Mark, fragment: str, lead: int, k: int, allowed=None) -> tuple[dict[str, float], float]:
        """Word models: the vocabulary's words that start with `fragment`, and their total probability."""
        probs = torch.softmax(mark.logits, -1)  # [vocab]
        ids = self._vocabulary.matching(fragment)
        matching = probs[ids]  # [matching]
        # Extra candidates leave room for punctuation dropped and cases merged later.
        top = matching.topk(min(len(ids), 4 * k + 8))
        pieces = self.tokenizer.pieces
        words = {pieces[i]: p for p, i in zip(top.values.tolist(), ids[top.indices].tolist())}
        return words, matching.sum().item()

    @torch.inference_mode()
    def _search(self, mark: _Mark, fragment: str, lead: int, k: int, allowed: _Allowed | None) -> tuple[dict[str, float], float]:
        """Char and subword models: beam search over pieces for words that start with `fragment`.

        Returns:
            word -> probability that the text goes on with `fragment` and then exactly this word,
            and the probability that it goes on with `fragment` at all.
        """
        words: dict[str, float] = defaultdict(float)
        texts, modes = [""], [INSIDE if fragment else START_WORD]
        reached = 0.0 if fragment else 1.0
        state, logits = mark.state, mark.logits[None]  # [beam, vocab]
        logp = torch.zeros(1, device=self.device)  # [beam]
        path = ()  # the pieces read since the mark, while every step so far had one hypothesis
        steps = len(fragment) + self.config.max_depth
        for step in range(steps):
            scores = torch.log_softmax(logits.float(), -1) + logp[:, None]  # [beam, vocab]
            reached += self._collect(texts, modes, scores.exp(), fragment, lead, words, allowed)
            if step == steps - 1:
                break
            parents, ids, texts, modes, logp = self._extend(texts, modes, scores, fragment, lead, _floor(words, k), allowed)
            if not texts:
                break
            if path is not None and len(texts) == 1:
                path += (ids.item(),)
                state, logits = self._step_alone(mark, path, state)
            else:
                path = None
                state = select_state(state, parents)
                logits, state = self._step(ids[:, None], state, mark)  # ids [beam, 1] -> logits [beam, vocab]
        return words, reached

    def _step_alone(self, mark: _Mark, path: tuple, state):
        """(state, logits [1, vocab]) after `path` read one piece per step from the mark, as kept there."""
        kept = mark.alone.get(path)
        if kept is None:
            logits, new_state = self._step(torch.tensor([[path[-1]]], device=self.device), state, mark)
            if len(mark.alone) * logits.shape[-1] >= ALONE_FLOATS:
                mark.alone.clear()
            kept = mark.alone[path] = (new_state, logits)
        return kept

    def _step(self, ids: torch.Tensor, state, mark: _Mark):
        """One model step of every beam; with the cache, mixed with the mark's memory."""
        if self.cache is None:
            logits, state = self.model(ids, state)
            return logits[:, -1], state
        features, state = self.model.features(ids, state)  # [beam, 1, emb]
        return mix(self.model.output(features)[:, -1], features[:, -1], *mark.view, self.cache), state

    def _collect(self, texts, modes, probs, fragment, lead, words, allowed) -> float:
        """Add the words each hypothesis finishes at this step; returns the mass reaching the prefix's end.

        Args:
            probs: [beam, vocab] probability of each hypothesis followed by each piece.
        """
        table, reached = self._table, []
        ended = (probs @ table.ends_by_mode).tolist()  # [beam][mode]: mass of the pieces ending the word
        for b, (text, mode) in enumerate(zip(texts, modes)):
            if mode == INSIDE:
                options = self._options(fragment, lead, len(text))
                reached.append(probs[b, options.crossing_ids].sum())
                finishing = zip(options.finished_words, probs[b, options.finished_ids].tolist())
            else:
                if text and (allowed is None or allowed.word(text)):
                    words[text] += ended[b][mode]
                split_ids, id_list, cuts = table.splits[mode]
                if not id_list:
                    continue
                chosen = probs[b, split_ids].tolist()
                finishing = ((text + table.pieces[i][:c], p) for i, c, p in zip(id_list, cuts, chosen))
            for word, p in finishing:
                if p > 0.0 and (allowed is None or allowed.word(word)):
                    words[word] += p
        return sum(reached).item() if reached else 0.0

    def _extend(self, texts, modes, scores, fragment, lead, floor, allowed):
        """The best `beam_width` one-piece extensions of all hypotheses together (spelling words
        of the lexicon, when there is one)."""
        closed = torch.stack([self._closed(text, mode, fragment, lead, allowed) for text, mode in zip(texts, modes)])
        flat = (scores + closed).flatten()  # [beam * vocab]
        top = flat.topk(min(self.config.beam_width, flat.numel()))  # best first
        # Those above the floor (which also stops at the -inf of pieces not allowed).
        kept = next((n for n, value in enumerate(top.values.tolist()) if value <= floor), len(top.values))
        index, vocab = top.indices[:kept], scores.shape[1]
        grown = [self._grow(texts[i // vocab], modes[i // vocab], i % vocab, fragment, lead) for i in index.tolist()]
        return index // vocab, index % vocab, [t for t, _ in grown], [m for _, m in grown], top.values[:kept]

    def _closed(self, text: str, mode: int, fragment: str, lead: int, allowed: _Allowed | None) -> torch.Tensor:
        """[vocab] 0 for the pieces that may extend a hypothesis, -inf for the others."""
        if mode == INSIDE:
            options = self._options(fragment, lead, len(text))
            if allowed is None or not options.to_letters:
                return options.closed
            # Pieces that finish the typed prefix start a word of letters: one of the lexicon's?
            blocked = [i for i, word in options.to_letters if not allowed.prefix(word)]
            return options.closed.index_fill(0, torch.tensor(blocked, dtype=torch.long, device=self.device), -math.inf)
        if allowed is None or mode == PUNCT:
            return self._table.closed[mode]
        return allowed.closed(text, mode)

    def _lexicon_closed(self, key: str, mode: int, version: int) -> torch.Tensor:
        """The piece table's closed row for `mode`, with the pieces after which a case-folded
        `key` starts no word of the lexicon closed too."""
        table = self._table
        mask = torch.zeros(len(table.pieces), device=self.device)
        mask[table.letter_first] = -math.inf
        mask[table.ids_of(self.lexicon.continuations(key, table.longest))] = 0.0
        return table.closed[mode] + mask

    def _grow(self, text: str, mode: int, piece_id: int, fragment: str, lead: int) -> tuple[str, int]:
        if mode == INSIDE:
            return self._options(fragment, lead, len(text)).next[piece_id]
        if mode == START_WORD:
            return self._table.pieces[piece_id], self._table.first[piece_id]
        return text + self._table.pieces[piece_id], mode

    def _fragment_options(self, fragment: str, lead: int, pos: int) -> _Options:
        """What each piece does to a hypothesis that has produced fragment[:pos] so far."""
        table = self._table
        following: dict[int, tuple[str, int]] = {}
        crossing, finished = [], []
        for i in table.agreeing(fragment[pos:]):
            text = fragment[:pos] + table.pieces[i]
            if len(text) < len(fragment):
                following[i] = (text, INSIDE)
                continue
            word = text[lead:]  # the typed prefix is covered: what follows the lead is the word
            mode = char_class(word[0]) if word else START_WORD
            if mode == SPACE:
                continue
            crossing.append(i)
            cut = len(word) if mode == START_WORD else word_end(word, mode)
            if cut == len(word):
                following[i] = (word, mode)
            else:
                finished.append((i, word[:cut]))
        as_ids = lambda ids: torch.tensor(ids, dtype=torch.long, device=self.device)  # noqa: E731
        to_letters = [(i, text) for i, (text, mode) in following.items() if mode == LETTER]
        closed = torch.full((len(table.pieces),), -math.inf, device=self.device)
        closed[as_ids(list(following))] = 0.0
        return _Options(following, as_ids(crossing),
                        as_ids([i for i, _ in finished]), [w for _, w in finished], to_letters, closed)


def _floor(words: dict[str, float], k: int) -> float:
    """Log-probability a hypothesis needs to beat the k-th best letter word found so far."""
    found = heapq.nlargest(k, (p for w, p in words.items() if char_class(w[0]) == LETTER))
    return math.log(found[k - 1]) if len(found) >= k and found[k - 1] > 0.0 else -math.inf


class SuggestionSession:
    """Suggestions that follow a text as it is typed, reading each word once.

    The model's state is kept at every word boundary of the context (a stack of marks), so a
    keystroke reads at most the last word, and a deletion falls back to an earlier mark. The
    context is read like `Suggester.suggest` reads it: a word group whole once it is complete,
    the words after the last complete group one by one. Results equal `suggest(text)`.
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
        self._marks: list[_Mark] = [suggester.start()]
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
        view = self.memory.view(mark.count) if self.memory is not None else None
        return self.suggester.suggest_after(mark, typed, k, self.learned(), view)

    def learned(self) -> frozenset:
        """Words outside the lexicon typed and finished often enough to be offered (case-folded)."""
        return frozenset(w for w, n in self._unknown.items() if n >= self.suggester.config.learn_after)

    def read(self) -> None:
        """Read the context the next suggestions need, e.g. while the keyboard is idle.

        Reading a long text takes far longer than a suggestion (400 characters: ~20 ms for a
        2×512 char model with int8 weights, one LSTM step per token); afterwards `suggestions`
        only searches.
        """
        typed = split_typed(self._text, self.suggester.by_whitespace)
        if not typed.too_long:
            self._sync(typed.context_end)

    def _sync(self, end: int) -> _Mark:
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
        self._marks.append(_Mark(stop, mark.words + words, state, logits, unknown, feature, count, context=context))
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


def suggest_words(text: str, checkpoint=None, config: SuggestConfig | None = None, device: str = "cpu",
                  int8: bool = False, words: list[str] = (), cache: bool = True, adapt=None,
                  ngram: bool = True) -> list[Suggestion]:
    """Load a checkpoint (the newest under checkpoints/ when None) and suggest for a text.

    int8=True runs the model quantized on the CPU: faster, very slightly different odds.
    words: a user dictionary added to the checkpoint's lexicon.
    cache: use the continuous cache tuned for the checkpoint (when it has one) over the text.
    ngram: mix in the checkpoint's n-gram (word models, when it has one).
    adapt: an lm.mix.adapt.AdaptConfig: first adapt the weights to the text by dynamic evaluation.
    """
    from ..checkpoint.loader import load

    config = config or SuggestConfig()
    config.validate()
    predictor = load(checkpoint, device, int8=int8 and adapt is None, cache=cache, ngram=ngram, words=words)
    if adapt is not None:
        from ..mix.adapt import adapt_to

        adapt_to(predictor.model, predictor.tokenizer.encode(START_TEXT + text), adapt)
        predictor = predictor.to_int8() if int8 else predictor
    return Suggester.load(predictor, config).suggest(text)
