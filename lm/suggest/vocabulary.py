"""Word models: the next word is one row of the model's distribution, so ranking is a lookup.

The vocabulary is sorted by text, so the words with a typed prefix are one contiguous range.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import numpy as np

from .._arrays import log, softmax, top_k

if TYPE_CHECKING:
    from .session import Mark


class Vocabulary:
    """A word model's vocabulary, sorted by text, without <unk> and <eos>."""

    def __init__(self, tokenizer):
        special = tokenizer.special_ids
        ordered = sorted((w, i) for i, w in enumerate(tokenizer.pieces) if i not in special)
        self.texts = [w for w, _ in ordered]
        self.ids = np.array([i for _, i in ordered], np.int64)
        self.pieces = tokenizer.pieces
        self.index = {w: i for i, w in enumerate(tokenizer.pieces) if i not in special}
        self.unk_id = tokenizer.unk_id

    def matching(self, prefix: str) -> np.ndarray:
        """Ids of the words that start with `prefix`."""
        lo = bisect.bisect_left(self.texts, prefix)
        hi = bisect.bisect_left(self.texts, prefix + "\U0010ffff")
        return self.ids[lo:hi]

    @staticmethod
    def probs(mark: Mark) -> np.ndarray:
        """The mark's next-word distribution, computed on first use and kept on the mark: every
        keystroke of a word asks the same mark (a softmax over 33k words each time was most of
        a keystroke's cost)."""
        if mark.probs is None:
            mark.probs = softmax(mark.logits)
        return mark.probs

    def find(self, mark: Mark, fragment: str, k: int) -> tuple[dict[str, float], float]:
        """The words that start with `fragment` (at least the best 4k + 8), and the probability
        that the next word starts with it at all."""
        probs = self.probs(mark)  # [vocab]
        ids = self.matching(fragment)
        matching = probs[ids]  # [matching]
        # Extra candidates leave room for punctuation dropped and cases merged later.
        values, indices = top_k(matching, 4 * k + 8)
        words = {self.pieces[i]: p for p, i in zip(values.tolist(), ids[indices].tolist())}
        return words, float(matching.sum(dtype=np.float64))

    def log_probs(self, mark: Mark, words: list[str]) -> list[float]:
        """log P(word | context) for each word, as the strip weighs it: the softmax row, given that
        a word comes next (the rows of <unk> and <eos> left out of the total).

        A word outside the vocabulary gets the <unk> row: the share of every word the model
        does not know, an upper bound for any one of them.
        """
        probs = self.probs(mark)  # [vocab]
        total = probs[self.ids].sum()
        ids = np.array([self.index.get(w, self.unk_id) for w in words], np.int64)
        return log(probs[ids] / total).tolist()
