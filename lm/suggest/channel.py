"""The channel model: how likely a typed string is when a word was meant, log P(typed | intended).

The noisy-channel keyboard ranks an intended word w for a typed t by log P(t | w) + log P(w |
context) (lm/suggest/correct.py). This module is the first term. A finger aiming at a word's keys
makes slips of a few kinds, each with a rate per intended character (ChannelConfig):

  - it hits another key: a neighbour mostly (the share of each neighbour follows the key
    geometry of lm/suggest/layout.py: a 2-D Gaussian around the aimed key's centre), now and
    then any letter (a spelling error, not a slip);
  - with touch points instead of characters, the Gaussian itself weighs each point against the
    intended key's centre, so a touch on the edge of "s" still counts for "a";
  - it leaves a letter out (a doubled letter typed once more often), types an extra key (the
    same key twice more often), swaps two letters, misses the space between two words
    ("inthe" for "in the") or types one inside a word ("th e");
  - case and accents are cheap or free: "Teh" -> "the", "cafe" -> "café".

log P(t | w) is the best alignment of t against w under these costs (a weighted Damerau edit
distance computed by dynamic programming), not the sum over all alignments. The two differ by
at most the log of the number of equally good alignments, which for the one or two slips a
word has is small (an ambiguous doubled letter: log 2), and the best alignment allows a bound:
a candidate is dropped as soon as a whole row of the table falls below it, which the
decoder uses to skip far words after a few characters. `align` shows the alignment, and `fit`
re-estimates the rates from (typed, intended) pairs by counting its edits (hard EM).

The model is normalised per intended character only approximately (doubled letters and spaces
have rates of their own); scores are compared between candidates for one typed string, where
that does not matter.
"""
from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum

from ..errors import ConfigError
from .layout import Layout, load_layout

NEG_INF = -math.inf
PREFIX_SLACK = 3  # a typed prefix is aligned with at most this many more letters of a word
Point = tuple[float, float]


@dataclass
class ChannelConfig:
    """The rate of each kind of slip, per intended character (probabilities; the model takes logs).

    The defaults are of the size reported for phone typing: Palin et al., "How do people type on
    mobile devices?" (MobileHCI 2019, 37,000 volunteers) measured about 2 % of characters wrong
    before correction; substitutions of a neighbouring key are the commonest error, then
    omissions and insertions, with transpositions and doubled letters rarer (Kristensson and
    Zhai, "Relaxing stylus typing precision", 2005, on touch offsets). `fit` re-estimates them.
    """

    substitution: float = 0.03  # a neighbouring key hit instead (spread over neighbours by geometry)
    spelling: float = 0.003  # another letter typed, anywhere on the keyboard (split evenly over the letters)
    omission: float = 0.01  # an intended letter not typed
    undoubling: float = 0.05  # per doubled letter ("ll"): typed once ("leter")
    insertion: float = 0.008  # an extra letter typed (split evenly over the letters)
    doubling: float = 0.005  # a letter typed twice ("thee")
    transposition: float = 0.005  # per pair of letters: typed in the wrong order ("teh")
    missed_space: float = 0.02  # per space between words: not typed ("inthe")
    extra_space: float = 0.003  # a space typed inside a word ("th e")
    case_loss: float = 1.0  # a letter typed in the other case: 1.0 is free (the typed casing is kept anyway)
    accent_loss: float = 0.5  # an accented letter typed without its accent ("cafe" for "café")
    touch_sigma: float = 0.5  # key widths: how far touches stray from the centre of the key aimed at

    SLIPS = ("substitution", "spelling", "omission", "insertion", "doubling", "transposition")

    @property
    def keep(self) -> float:
        """The probability that an intended letter is typed right."""
        return 1.0 - sum(getattr(self, name) for name in self.SLIPS)

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            top = math.inf if f.name == "touch_sigma" else 1.0
            if not isinstance(value, (int, float)) or not 0.0 < value <= top:
                raise ConfigError(f"the channel's {f.name} must be in (0, {top}], not {value!r} — "
                                  "give a rate such as 0.01 (touch_sigma: key widths, such as 0.5)")
        if self.keep <= 0.0:
            raise ConfigError(f"the channel's slip rates ({', '.join(self.SLIPS)}) add up to 1 or more — lower them")


class Edit(str, Enum):
    """One step of an alignment of a typed string against an intended word."""

    KEEP = "keep"  # typed right (case and accent losses included)
    SUBSTITUTION = "substitution"  # another key typed: a neighbour or a spelling error
    OMISSION = "omission"
    UNDOUBLING = "undoubling"
    MISSED_SPACE = "missed_space"
    INSERTION = "insertion"
    DOUBLING = "doubling"
    EXTRA_SPACE = "extra_space"
    TRANSPOSITION = "transposition"


class Channel:
    """log P(typed | intended) over a keyboard layout, for characters or touch points."""

    def __init__(self, config: ChannelConfig | None = None, layout: Layout | None = None):
        self.config = config or ChannelConfig()
        self.config.validate()
        self.layout = layout or load_layout()
        c, letters = self.config, len(self.layout.letters)
        self.shares = self.layout.neighbour_shares(c.touch_sigma)
        self.log_keep = math.log(c.keep)
        self.log_spelling = math.log(c.spelling / letters)  # one given letter, typed by a spelling error
        self.log_insertion = math.log(c.insertion / letters)
        self.log_costs = {e: math.log(getattr(c, e.value)) for e in
                          (Edit.OMISSION, Edit.UNDOUBLING, Edit.MISSED_SPACE, Edit.DOUBLING, Edit.EXTRA_SPACE,
                           Edit.TRANSPOSITION)}
        self._rows: dict[str, _Row] = {}  # typed key -> its emissions

    # The three questions.

    def log_prob(self, typed: str, intended: str, bound: float = NEG_INF) -> float:
        """log P(typed | intended): the whole of `typed` is the whole of `intended`, slips included.

        Args:
            bound: give up (return -inf) once no alignment can stay above this log-probability.
        """
        return self._align(typed, intended, self._char_rows(typed), False, bound)

    def log_prob_prefix(self, typed: str, intended: str, bound: float = NEG_INF) -> float:
        """log P(typed | the start of intended): `typed` is a prefix of the word, slips included
        ("recie" against "received" aligns with "recei", one transposition).

        Only the first len(typed) + PREFIX_SLACK letters of `intended` are read: a longer
        start would need that many letters left out (a probability below 1e-6)."""
        return self._align(typed, intended[: len(typed) + PREFIX_SLACK], self._char_rows(typed), True, bound)

    def log_prob_touches(self, touches: Sequence[Point], intended: str, prefix: bool = False,
                         bound: float = NEG_INF) -> float:
        """log P(touches | intended), each touch point (x, y in key widths) weighed against the
        intended key's centre by the touch Gaussian instead of by the key it landed on."""
        keys = self.keys_of(touches)
        rows = [_Row(lambda c, point=point: self._touch_emission(point, c)) for point in touches]
        if prefix:
            intended = intended[: len(keys) + PREFIX_SLACK]
        return self._align(keys, intended, rows, prefix, bound)

    def keys_of(self, touches: Sequence[Point]) -> str:
        """The keys under a sequence of touch points: what a plain keyboard would have typed."""
        return "".join(self.layout.nearest(x, y) for x, y in touches)

    # Emissions: one typed key or touch against one intended character.

    def char_emission(self, t: str, c: str) -> float:
        """log P(typed key t | intended character c), the key typed in place of c."""
        return self._char_row(t)[c]

    def _char_rows(self, typed: str) -> list[_Row]:
        return [self._char_row(t) for t in typed]

    def _char_row(self, t: str) -> _Row:
        """log P(t | c) for every intended c, worked out when first asked."""
        row = self._rows.get(t)
        if row is None:
            row = self._rows[t] = _Row(lambda c: self._char_emission(t, c))
        return row

    def _char_emission(self, t: str, c: str) -> float:
        if t == c:
            return self.log_keep
        cost = 0.0
        if t.lower() != c.lower():
            if _bare(t) != _bare(c):
                share = self.shares.get(c.lower(), {}).get(t.lower(), 0.0)
                return math.log(self.config.substitution * share + self.config.spelling / len(self.layout.letters))
            cost += math.log(self.config.accent_loss)
            t, c = _bare(t), _bare(c)
        if t != c:  # the case differs
            cost += math.log(self.config.case_loss)
        return self.log_keep + cost

    def _touch_emission(self, point: Point, c: str) -> float:
        """A touch lands around the aimed key's centre: the Gaussian's mass over a key's area there."""
        key = self.layout.key(c)
        if key is None:
            return self.log_spelling
        sigma = self.config.touch_sigma
        squared = (point[0] - key.x) ** 2 + (point[1] - key.y) ** 2
        density = math.exp(-squared / (2 * sigma**2)) / (2 * math.pi * sigma**2)
        mass = min(density * key.width * key.height, 1.0)
        # A touch that strays onto a neighbour is this same Gaussian: the substitution rate joins the keep rate.
        return math.log((self.config.keep + self.config.substitution) * mass + self.config.spelling / len(self.layout.letters))

    # The alignment.

    def _omission(self, intended: str, j: int) -> float:
        """log P(intended[j - 1] not typed)."""
        c = intended[j - 1]
        if c == " ":
            return self.log_costs[Edit.MISSED_SPACE]
        if j >= 2 and intended[j - 2].lower() == c.lower():
            return self.log_costs[Edit.UNDOUBLING]
        return self.log_costs[Edit.OMISSION]

    def _insertion(self, keys: str, i: int) -> float:
        """log P(keys[i - 1] typed where nothing was meant)."""
        t = keys[i - 1]
        if t == " ":
            return self.log_costs[Edit.EXTRA_SPACE]
        if i >= 2 and keys[i - 2].lower() == t.lower():
            return self.log_costs[Edit.DOUBLING]
        return self.log_insertion

    def _align(self, keys: str, intended: str, emissions: list[_Row], prefix: bool, bound: float,
               trace: list | None = None) -> float:
        """Best log-probability of an alignment of the typed `keys` with `intended` (rows: typed
        keys, columns: intended characters). `emissions[i][c]` weighs typed item i against c.
        With `trace` (a list), the alignment's edits are appended to it, first to last."""
        n, m = len(keys), len(intended)
        low_keys, low_word = keys.lower(), intended.lower()
        omit = [self._omission(intended, j) for j in range(1, m + 1)]
        swap = self.log_costs[Edit.TRANSPOSITION]
        previous = [0.0] * (m + 1)
        for j in range(1, m + 1):
            previous[j] = previous[j - 1] + omit[j - 1]
        rows, before = [previous], None
        for i in range(1, n + 1):
            extra = self._insertion(keys, i)
            emit = emissions[i - 1]
            emit = [emit[c] for c in intended]
            row = [previous[0] + extra] + [NEG_INF] * m
            for j in range(1, m + 1):
                best = previous[j - 1] + emit[j - 1]
                value = previous[j] + extra
                if value > best:
                    best = value
                value = row[j - 1] + omit[j - 1]
                if value > best:
                    best = value
                if (i >= 2 and j >= 2 and low_keys[i - 1] == low_word[j - 2] and low_keys[i - 2] == low_word[j - 1]
                        and low_word[j - 1] != low_word[j - 2]):
                    value = before[j - 2] + swap
                    if value > best:
                        best = value
                row[j] = best
            if max(row) < bound:
                return NEG_INF
            before, previous = previous, row
            rows.append(row)
        end = max(range(m + 1), key=previous.__getitem__) if prefix else m
        if trace is not None:
            trace.extend(self._trace_back(rows, keys, intended, emissions, omit, end))
        return previous[end]

    def _trace_back(self, rows, keys, intended, emissions, omit, end) -> list[Edit]:
        """The edits of the best alignment ending at (len(keys), end), first to last."""
        edits, i, j = [], len(keys), end
        while i > 0 or j > 0:
            here = rows[i][j]
            if i and j and math.isclose(here, rows[i - 1][j - 1] + emissions[i - 1][intended[j - 1]], abs_tol=1e-9):
                same = keys[i - 1].lower() == intended[j - 1].lower() or _bare(keys[i - 1]) == _bare(intended[j - 1])
                edits.append(Edit.KEEP if same else Edit.SUBSTITUTION)
                i, j = i - 1, j - 1
            elif i and math.isclose(here, rows[i - 1][j] + self._insertion(keys, i), abs_tol=1e-9):
                extra = self._insertion(keys, i)
                edits.append(Edit.EXTRA_SPACE if keys[i - 1] == " " else
                             Edit.DOUBLING if extra == self.log_costs[Edit.DOUBLING] and i >= 2
                             and keys[i - 2].lower() == keys[i - 1].lower() else Edit.INSERTION)
                i -= 1
            elif j and math.isclose(here, rows[i][j - 1] + omit[j - 1], abs_tol=1e-9):
                c = intended[j - 1]
                edits.append(Edit.MISSED_SPACE if c == " " else
                             Edit.UNDOUBLING if j >= 2 and intended[j - 2].lower() == c.lower() else Edit.OMISSION)
                j -= 1
            else:
                edits.append(Edit.TRANSPOSITION)
                i, j = i - 2, j - 2
        return edits[::-1]

    def align(self, typed: str, intended: str, prefix: bool = False) -> list[Edit]:
        """The edits of the best alignment of `typed` with `intended`, first to last."""
        edits: list[Edit] = []
        self._align(typed, intended, self._char_rows(typed), prefix, NEG_INF, edits)
        return edits

    # Fitting.

    def fit(self, pairs: Iterable[tuple[str, str]], rounds: int = 3) -> Channel:
        """A channel whose rates are re-estimated from (typed, intended) pairs.

        Each round aligns every pair under the current rates and sets each rate to its edits'
        count over their opportunities (letters for the per-letter slips, doubled letters for
        undoubling, spaces for missed spaces, adjacent pairs for transpositions), with one
        pseudo-observation at the old rate so an unseen slip keeps a small rate. A substitution
        is split between `substitution` and `spelling` by how much each explains it.
        The touch spread and the case and accent costs are kept.
        """
        pairs = [(t, w) for t, w in pairs if w]
        channel = self
        for _ in range(rounds):
            channel = Channel(channel._refit(pairs), channel.layout)
        return channel

    def _refit(self, pairs: list[tuple[str, str]]) -> ChannelConfig:
        counts: Counter = Counter()
        letters = doubled = spaces = swaps = 0
        for typed, intended in pairs:
            edits: list[Edit] = []
            self._align(typed, intended, self._char_rows(typed), False, NEG_INF, edits)
            self._count(edits, typed, intended, counts)
            letters += sum(c != " " for c in intended)
            spaces += intended.count(" ")
            doubled += sum(a.lower() == b.lower() != " " for a, b in zip(intended, intended[1:]))
            swaps += max(len(intended) - 1, 0)
        opportunities = {"substitution": letters, "spelling": letters, "omission": letters, "insertion": letters,
                         "doubling": letters, "extra_space": letters, "undoubling": doubled,
                         "missed_space": spaces, "transposition": swaps}
        old = self.config
        rates = {name: (counts[name] + getattr(old, name)) / (n + 1) for name, n in opportunities.items()}
        return replace(old, **rates)

    def _count(self, edits: list[Edit], typed: str, intended: str, counts: Counter) -> None:
        """Add an alignment's edits to `counts`, splitting substitutions by responsibility."""
        i = j = 0
        letters = len(self.layout.letters)
        for edit in edits:
            if edit in (Edit.KEEP, Edit.SUBSTITUTION):
                if edit is Edit.SUBSTITUTION:
                    share = self.shares.get(intended[j].lower(), {}).get(typed[i].lower(), 0.0)
                    near, far = self.config.substitution * share, self.config.spelling / letters
                    counts["substitution"] += near / (near + far)
                    counts["spelling"] += far / (near + far)
                i, j = i + 1, j + 1
            elif edit is Edit.TRANSPOSITION:
                counts[edit.value] += 1
                i, j = i + 2, j + 2
            elif edit in (Edit.INSERTION, Edit.DOUBLING, Edit.EXTRA_SPACE):
                counts[edit.value] += 1
                i += 1
            else:
                counts[edit.value] += 1
                j += 1


class _Row(dict):
    """Emissions of one typed item against intended characters, each worked out when first read."""

    def __init__(self, emission):
        super().__init__()
        self.emission = emission

    def __missing__(self, c: str) -> float:
        value = self[c] = self.emission(c)
        return value


def _bare(ch: str) -> str:
    """A character lower-cased and without its accents ("É" -> "e")."""
    return "".join(c for c in unicodedata.normalize("NFD", ch.lower()) if not unicodedata.combining(c))
