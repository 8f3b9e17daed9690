"""The candidate index: the words a typed string may have meant, found within a bounded edit distance.

The channel model (lm/suggest/channel.py) weighs one candidate at a time; this index finds the
few dozen worth weighing among tens of thousands of words. It holds words with their counts (a
checkpoint's lexicon, a user dictionary, words learned in a session) and answers two questions:
the words within k edits of a typed word ("recieved" -> received), and the words whose start is
within k edits of a typed prefix ("recie" -> receive, received, recent). Edits are those of the
optimal string alignment distance: a substitution, an omission, an insertion or a swap of two
neighbours counts one.

The distances are computed by rapidfuzz (a C++ library, kept up to date) over the words of
nearby lengths only: a word k edits away is at most k letters longer or shorter. Adding a word
is an append; nothing is precomputed that `add` would have to rebuild, which a SymSpell index
of deletions would (6 s to build for WikiText-2's 27k words; bench/NOTES.md compares the two).
Prefixes are indexed the same way, by length, built when first asked for and kept up to date.
Words are case-folded.
"""
from __future__ import annotations

import bisect
import heapq
from collections import Counter, defaultdict

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA

TOP_CACHE = 8192  # prefixes whose most frequent words are kept between calls
BULK = 64  # new words added at once from which one sort beats an insertion each


class CandidateIndex:
    """Words with counts, searchable by edit distance to a typed word or a typed prefix."""

    def __init__(self, counts: dict[str, int] | None = None):
        self.counts: Counter = Counter()
        self.total = 0
        self._by_length: dict[int, list[str]] = defaultdict(list)
        self._prefixes: dict[int, list[str]] = {}  # length -> sorted distinct prefixes of that length
        self._sorted: list[str] = []  # every word, sorted: the words under a prefix are one range
        self._top: dict[tuple[str, int], list[str]] = {}  # (prefix, n) -> its n most frequent words
        if counts:
            self.add(counts)

    @classmethod
    def from_lexicon(cls, lexicon) -> CandidateIndex:
        """The words of an lm.data.lexicon.Lexicon with their counts."""
        return cls(dict(lexicon.counts))

    def add(self, counts: dict[str, int] | list[str]) -> None:
        """Add words (a list counts each once); a few new words cost a few list insertions each,
        many (a lexicon) one sort."""
        items = counts.items() if isinstance(counts, dict) else ((w, 1) for w in counts)
        new = []
        for word, n in items:
            word = word.casefold()
            if not word:
                continue
            if word not in self.counts:
                new.append(word)
            self.counts[word] += n
            self.total += n
        if len(new) > BULK:
            self._insert_sorted(new)
        else:
            for word in new:
                self._insert(word)
        self._top.clear()

    def _insert_sorted(self, words: list[str]) -> None:
        """Add many new words: one sort, instead of an insertion into the sorted lists for each."""
        for word in words:
            self._by_length[len(word)].append(word)
        self._sorted = sorted(self._sorted + words)
        self._prefixes = {length: sorted({w[:length] for w in self._sorted if len(w) >= length})
                          for length in self._prefixes}

    def _insert(self, word: str) -> None:
        self._by_length[len(word)].append(word)
        bisect.insort(self._sorted, word)
        for length, prefixes in self._prefixes.items():
            if len(word) >= length:
                i = bisect.bisect_left(prefixes, word[:length])
                if i == len(prefixes) or prefixes[i] != word[:length]:
                    prefixes.insert(i, word[:length])

    def __len__(self) -> int:
        return len(self.counts)

    def __contains__(self, word: str) -> bool:
        return word.casefold() in self.counts

    def count(self, word: str) -> int:
        return self.counts.get(word.casefold(), 0)

    def near(self, typed: str, max_edits: int) -> dict[str, int]:
        """The words within `max_edits` edits of `typed` (case-folded), with their distance."""
        typed = typed.casefold()
        found: dict[str, int] = {}
        for length in range(max(len(typed) - max_edits, 1), len(typed) + max_edits + 1):
            found.update(_within(typed, self._by_length.get(length, []), max_edits))
        return found

    def near_prefix(self, typed: str, max_edits: int) -> dict[str, int]:
        """The starts of words (prefixes of some word) within `max_edits` edits of a typed prefix,
        with their distance; `most_frequent(start, n)` gives the words under each.

        A typed prefix of n letters may stand for an intended start of n - k to n + k letters
        (a letter left out or typed twice), so starts of each of those lengths are searched.
        """
        typed = typed.casefold()
        found: dict[str, int] = {}
        for length in range(max(len(typed) - max_edits, 1), len(typed) + max_edits + 1):
            found.update(_within(typed, self._prefixes_of(length), max_edits))
        return found

    def most_frequent(self, prefix: str, n: int) -> list[str]:
        """The `n` most frequent words that start with `prefix` (case-folded)."""
        key = (prefix, n)
        top = self._top.get(key)
        if top is None:
            if len(self._top) >= TOP_CACHE:
                self._top.clear()
            lo = bisect.bisect_left(self._sorted, prefix)
            hi = bisect.bisect_left(self._sorted, prefix + "\U0010ffff", lo)
            top = self._top[key] = heapq.nlargest(n, self._sorted[lo:hi], key=self.counts.__getitem__)
        return top

    def _prefixes_of(self, length: int) -> list[str]:
        prefixes = self._prefixes.get(length)
        if prefixes is None:
            prefixes = self._prefixes[length] = sorted({w[:length] for w in self.counts if len(w) >= length})
        return prefixes


def _within(typed: str, choices: list[str], max_edits: int) -> dict[str, int]:
    """The choices within `max_edits` OSA edits of `typed`, with their distance."""
    if not choices:
        return {}
    distances = process.cdist([typed], choices, scorer=OSA.distance, score_cutoff=max_edits, dtype=np.uint8)[0]
    return {choices[i]: int(distances[i]) for i in np.flatnonzero(distances <= max_edits)}
