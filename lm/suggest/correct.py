"""The noisy-channel decoder: which word was meant, given what was typed and what came before.

An intended word w for a typed t is ranked by

    log P(t | w) + prior_weight * log P(w | context)

the channel (lm/suggest/channel.py: the keyboard's geometry and the slips fingers make) plus the
prior (a callable: the language model's distribution over the candidates, supplied by the
engine; `frequency_prior` is a context-free stand-in). Candidates come from the index
(lm/suggest/index.py) within a bounded number of edits, the best by channel and frequency are
shortlisted, and only those are given to the prior, which is the costly part.

While a word is typed, `complete` ranks words whose start matches the typed prefix with slips
allowed ("recie" -> received). When it is finished, `correct` decides: keep the typed word, or
replace it by the best candidate when that candidate's posterior, normalised over the
candidates and the typed word itself, reaches a threshold set for precision (a clean word
wrongly changed is the error users hate most; bench/NOTES.md has the tuning). Some words are
never changed: the user's and the session's own words, numbers, web and e-mail addresses,
emoji, words in a script other than Latin, and words in capitals unless asked. The typed casing
is kept ("Teh" -> "The"). The result keeps the typed word and the alternatives beside the
correction, as Android's keyboard (LatinIME) does, so one backspace can undo it.

Nothing here imports torch: the prior is a plain callable.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

from ..errors import ConfigError
from .channel import NEG_INF, Channel, Point
from .index import CandidateIndex
from .typed import Slot

Prior = Callable[[list[str]], list[float]]  # candidates (case-folded; "in the" for two words) -> log P(w | context)

URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)|^[\w-]+(?:\.[\w-]+)+(?:/\S*)?$", re.IGNORECASE)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class Action(str, Enum):
    """What happens to a finished word."""

    KEEP = "keep"
    CORRECT = "correct"


@dataclass
class CorrectConfig:
    """How far the decoder searches and how sure it must be to change a word."""

    # The four below were tuned on WikiText-2's raw valid split typed by bench/typing.py, with the
    # prior of a 15-minute word model (bench/NOTES.md, "The keyboard wired in"): the highest
    # threshold within 0.004 of valid's best F, with at most 1 % of clean words changed.
    threshold: float = 0.7  # posterior the best candidate needs to replace the typed word
    prior_weight: float = 0.8  # weight of log P(w | context) against the channel's log P(t | w)
    unknown_prior: float = -24.0  # log P(w | context) of a typed word outside the lexicon, in lower case
    unknown_name_prior: float = -20.0  # the same for one with a capital: more often a name than a slip
    max_edits: int = 2  # edits a candidate may be from the typed word
    short_word: int = 4  # words (and prefixes) of up to this many letters: one edit; a single letter: none
    short_prefix: int = 3  # completions: prefixes of up to this many letters are taken as typed (bench/NOTES.md)
    shortlist: int = 24  # candidates, best by channel and frequency, that the prior scores
    slip_shortlist: int = 8  # the same for completions that fix a slip (asked at every keystroke; bench/NOTES.md)
    per_prefix: int = 8  # completions: the most frequent words under each matching start
    split_words: bool = True  # consider a missed space: "inthe" -> "in the"
    correct_caps: bool = False  # words in capitals may be corrected too

    def validate(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"the correction threshold must be in (0, 1], not {self.threshold!r} — 1.0 never corrects")
        for name in ("max_edits", "short_word", "short_prefix", "shortlist", "slip_shortlist", "per_prefix"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0 or name in ("shortlist", "slip_shortlist", "per_prefix") and value < 1:
                raise ConfigError(f"the decoder's {name} must be a non-negative integer (shortlist and "
                                  f"per_prefix at least 1), not {value!r}")

    def edits_for(self, letters: int, prefix: bool = False) -> int:
        """The edit bound for a typed word, or a typed prefix, of this many letters."""
        if letters <= (self.short_prefix if prefix else 1):
            return 0
        return min(1, self.max_edits) if letters <= self.short_word else self.max_edits


@dataclass
class Candidate:
    """One intended word and the evidence for it."""

    word: str  # as shown: cased like the typed word
    channel: float  # log P(typed | word)
    prior: float  # log P(word | context)
    posterior: float = 0.0  # normalised over the candidates weighed together
    typed: bool = False  # the typed word itself

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Correction:
    """The decision on a finished word, with what the strip shows beside it."""

    typed: str
    action: Action
    reason: str  # why: "corrected", "typed word likeliest", "below threshold", or what protects the word
    candidates: list[Candidate] = field(default_factory=list)  # best first, the typed word among them

    @property
    def word(self) -> str:
        """The word the text holds now: the correction, or the typed word."""
        return self.candidates[0].word if self.action is Action.CORRECT else self.typed

    def undo(self) -> str:
        """The word one backspace puts back: the typed word."""
        return self.typed

    def strip(self, k: int = 3) -> list[tuple[str, Slot]]:
        """The strip, left to right, as LatinIME lays it out: after a correction the typed word on
        the left, the correction in the centre, then alternatives; otherwise the typed word in
        the centre with the best alternatives around it."""
        others = [c.word for c in self.candidates if not c.typed and c.word != self.word]
        if self.action is Action.CORRECT:
            items = [(self.typed, Slot.TYPED), (self.word, Slot.CORRECTION)]
        else:
            items = [(w, Slot.ALTERNATIVE) for w in others[:1]] + [(self.typed, Slot.TYPED)]
            others = others[1:]
        items += [(w, Slot.ALTERNATIVE) for w in others]
        return items[:k]

    def to_dict(self) -> dict:
        return {"typed": self.typed, "word": self.word, "action": self.action.value, "reason": self.reason,
                "strip": [{"word": w, "slot": s.value} for w, s in self.strip()],
                "candidates": [c.to_dict() for c in self.candidates]}


class Decoder:
    """Completions and corrections from a channel model, a candidate index and a prior."""

    def __init__(self, index: CandidateIndex, channel: Channel | None = None, config: CorrectConfig | None = None,
                 user_words: Sequence[str] = ()):
        """
        Args:
            index: the words that may be meant (the lexicon); user and learned words join it.
            user_words: a user dictionary: offered, and never corrected.
        """
        self.index = index
        self.channel = channel or Channel()
        self.config = config or CorrectConfig()
        self.config.validate()
        self.user_words: set[str] = set()
        self.add_user_words(user_words)

    def add_user_words(self, words: Sequence[str]) -> None:
        """Words of the user (a dictionary, or learned in the session): candidates, never corrected."""
        words = [w for w in words if w]
        self.index.add({w: 1 for w in words if w not in self.index})
        self.user_words.update(w.casefold() for w in words)

    learn = add_user_words

    def correct(self, typed: str, prior: Prior, touches: Sequence[Point] | None = None,
                keep: frozenset = frozenset()) -> Correction:
        """Keep a finished word or correct it.

        Args:
            typed: the word as typed (one space inside it: perhaps a word split by a stray space).
            prior: log P(w | context) for a list of case-folded candidates.
            touches: the touch points that typed it (x, y in key widths), one per character;
                the channel then weighs the points instead of the keys they fell on.
            keep: case-folded words a session never changes (learned in it, or put back by an undo).
        """
        reason = "kept in this session" if typed.casefold() in keep else self.protection(typed)
        if reason:
            return Correction(typed, Action.KEEP, reason)
        scores = self._channel_scores(typed, touches, prefix=False)
        candidates = self._rank(typed, scores, prior, with_typed=True, touches=touches)
        best = candidates[0]
        if best.typed:
            return Correction(typed, Action.KEEP, "typed word likeliest", candidates)
        if best.posterior < self.config.threshold:
            return Correction(typed, Action.KEEP, "below threshold", candidates)
        return Correction(typed, Action.CORRECT, "corrected", candidates)

    def complete(self, prefix: str, prior: Prior, k: int = 3, touches: Sequence[Point] | None = None) -> list[Candidate]:
        """The words the typed prefix most likely starts, slips allowed, best first; the typed
        string itself is not among them (it is typed already)."""
        if not prefix or self.protection(prefix) not in (None, "user word"):
            return []
        scores = self._channel_scores(prefix, touches, prefix=True)
        return self._rank(prefix, scores, prior, with_typed=False)[:k]

    def slipped(self, prefix: str, touches: Sequence[Point] | None = None, stuck: bool = False) -> dict[str, float]:
        """Completions of a typed prefix that assume a slip in it, with their channel score
        log P(prefix | word): the shortlist by channel and frequency, words that start with the
        typed letters left out (the engine's own search completes those). The engine weighs
        them with its prior (lm/suggest/keyboard.py).

        Args:
            stuck: the engine found no completion of the prefix as typed: prefixes short enough
                to be taken as typed (CorrectConfig.short_prefix) get one edit too.
        """
        if not prefix or self.protection(prefix) not in (None, "user word"):
            return {}
        folded = prefix.casefold()
        edits = self.config.edits_for(len(folded), prefix=True)
        if stuck and len(folded) > 1:  # nothing completes it as typed ("teh"): a short prefix may have a slip too
            edits = max(edits, 1)
        scores = self._channel_scores(prefix, touches, prefix=True, edits=edits)
        counts = self.index.count
        ranked = sorted((w for w in scores if not w.startswith(folded)),
                        key=lambda w: -(scores[w] + math.log(counts(w) + 1)))
        return {w: scores[w] for w in ranked[: self.config.slip_shortlist]}

    def protection(self, typed: str) -> str | None:
        """Why a typed word must not be changed, or None when it may be."""
        if not typed.strip():
            return "empty"
        if typed.casefold() in self.user_words:
            return "user word"
        if any(ch.isdigit() for ch in typed):
            return "number"
        if EMAIL.match(typed):
            return "e-mail address"
        if URL.match(typed):
            return "web address"
        if any(unicodedata.category(ch) in ("So", "Sk", "Cs") or 0x1F000 <= ord(ch) for ch in typed):
            return "emoji"
        if any(ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN") for ch in typed):
            return "not Latin script"
        if not self.config.correct_caps and len(typed) > 1 and typed.isupper():
            return "capitals"
        return None

    def _channel_scores(self, typed: str, touches, prefix: bool, edits: int | None = None) -> dict[str, float]:
        """log P(typed | w) for the index's words near the typed string (case-folded), within
        `edits` edits (None: the config's bound for its length)."""
        keys = typed if touches is None else self.channel.keys_of(touches)
        folded = keys.casefold()
        if edits is None:
            edits = self.config.edits_for(len(folded.replace(" ", "")), prefix)
        if touches is None:
            score = self.channel.log_prob_prefix if prefix else self.channel.log_prob
        else:
            score = lambda t, w: self.channel.log_prob_touches(touches, w, prefix)
        if prefix:
            return self._prefix_scores(typed, folded, edits, score)
        words = set(self.index.near(folded, edits))
        if " " in folded:  # a stray space: the two parts may be one word
            words.update(self.index.near(folded.replace(" ", ""), edits))
        elif self.config.split_words and folded not in self.index:  # a known word is no two words run together
            words.update(self._splits(folded))
        return {w: score(typed, w) for w in words}

    def _prefix_scores(self, typed: str, folded: str, edits: int, score) -> dict[str, float]:
        """Completions: each matching start is weighed once, and its most frequent words take its
        score (a word under several matching starts, its best)."""
        scores: dict[str, float] = {}
        for start in self.index.near_prefix(folded, edits):
            value = score(typed, start)
            for word in self.index.most_frequent(start, self.config.per_prefix):
                if value > scores.get(word, NEG_INF):
                    scores[word] = value
        return scores

    def _splits(self, folded: str) -> list[str]:
        """Two words run together: each cut whose both parts are words ("inthe" -> "in the")."""
        return [f"{folded[:i]} {folded[i:]}" for i in range(1, len(folded))
                if folded[:i] in self.index and folded[i:] in self.index]

    def _rank(self, typed: str, scores: dict[str, float], prior: Prior, with_typed: bool,
              touches: Sequence[Point] | None = None) -> list[Candidate]:
        """The shortlist weighed by the prior, best first, with posteriors (the typed word included
        when `with_typed`, weighed by the same channel: the touches when there are some)."""
        folded = typed.casefold()
        counts = self.index.count
        ranked = sorted(scores, key=lambda w: -(scores[w] + sum(math.log(counts(p) + 1) for p in w.split())))
        shortlist = [w for w in ranked[: self.config.shortlist] if w != folded]
        known = with_typed and folded in self.index
        asked = shortlist + [folded] if known else shortlist
        priors = dict(zip(asked, prior(asked))) if asked else {}
        candidates = [Candidate(present(w, typed), scores[w], priors[w]) for w in shortlist]
        if not candidates and not with_typed:
            return []
        if with_typed:
            own = self.channel.log_prob(typed, folded) if touches is None else \
                self.channel.log_prob_touches(touches, folded)
            unknown = self.config.unknown_name_prior if typed[:1].isupper() else self.config.unknown_prior
            candidates.append(Candidate(typed, own, priors[folded] if known else unknown, typed=True))
        weight = self.config.prior_weight
        totals = [c.channel + weight * c.prior for c in candidates]
        top = max(totals)
        norm = top + math.log(sum(math.exp(t - top) for t in totals))
        for c, t in zip(candidates, totals):
            c.posterior = math.exp(t - norm)
        candidates.sort(key=lambda c: (-c.posterior, not c.typed, c.word))
        return candidates


def present(word: str, typed: str) -> str:
    """A candidate cased like the typed word: "Teh" -> "The", "TEH" -> "THE"."""
    if typed[:1].isupper():
        return word.upper() if len(typed) > 1 and typed.isupper() else word[:1].upper() + word[1:]
    return word


def frequency_prior(index: CandidateIndex) -> Prior:
    """A context-free prior: each word's share of the index's counts (add-one), words of a
    two-word candidate multiplied."""
    norm = math.log(index.total + len(index) + 1)

    def prior(words: list[str]) -> list[float]:
        return [sum(math.log(index.count(part) + 1) - norm for part in w.split()) for w in words]

    return prior
