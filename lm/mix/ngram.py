"""The n-gram: a count-based next-token distribution, mixed into a word model's suggestions.

An LSTM generalises; a count model remembers the exact phrases of the training text. Mixed
(p = (1 - λ) p_model + λ p_ngram, λ tuned on the validation text at the end of `lm train`),
the two suggest better than either: on WikiText-2 the 15-minute model's next-word top-3 rose
from 38.6 % to 40.0 % and its perplexity fell by 8 % (bench/NOTES.md).

The n-gram is interpolated modified Kneser-Ney (Chen & Goodman 1998, section 3):

    p_k(w | h) = max(c(hw) - D_k(c(hw)), 0) / c(h•) + gamma(h) p_{k-1}(w | h')
    gamma(h)   = (D_k1 N1(h•) + D_k2 N2(h•) + D_k3+ N3+(h•)) / c(h•)

where h' drops the oldest token of h, c is the raw count at the highest order and the
continuation count N1+(•hw) (distinct tokens seen before hw) at the lower orders, c(h•) sums c
over the tokens after h, and N1, N2, N3+ count the tokens after h seen once, twice, three times
or more. Each order has three discounts from its count-of-counts n1..n4:
Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.
The unigram level interpolates with the uniform distribution over the vocabulary; a context
never seen at an order leaves the lower order's distribution as it is.

Pruning: above the bigrams, grams counted fewer than `min_count` times are dropped and their
probability goes to their context's back-off weight, so every distribution still sums to 1
(on WikiText-2 this keeps 5 % of those grams: 11 MB instead of 70).

Layout (ngram.safetensors in a checkpoint): the unigram distribution [V]; per order k ≥ 2 the
contexts (k - 1 tokens) with continuations as sorted 64-bit hashes with their back-off weights,
and the continuations as sorted keys context_index * V + token with their discounted
probabilities. A context's continuations are one contiguous slice.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._arrays import log
from .config import NgramConfig
from ..errors import CheckpointError

if TYPE_CHECKING:
    import torch

FILE = "ngram.safetensors"
WEIGHTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)  # λ tried on the validation text
MAX_TOKENS = 20_000_000  # the n-gram counts at most this many training tokens (memory: ~40 bytes each)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # hashing a context: odd 64-bit constants
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def fit(train_ids, vocab_size: int, nll: torch.Tensor, valid_ids, config: NgramConfig | None = None) -> tuple["Ngram", dict]:
    """Count the training text's ids (the last MAX_TOKENS) and weigh the n-gram against a model's
    nll of each of valid_ids[1:]. Returns the n-gram, its weight set (0: it does not help), and
    config.json's "ngram" entry."""
    config = config or NgramConfig()
    ngram = Ngram.build(np.asarray(train_ids)[-MAX_TOKENS:], vocab_size, config.order, config.min_count)
    ngram.weight, mixed = ngram.tune(nll, valid_ids)
    return ngram, {**replace(config, weight=ngram.weight).to_dict(), "valid_perplexity_with_ngram": math.exp(mixed)}


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from the count-of-counts of `counts` (Chen & Goodman eq. 26)."""
    n = np.bincount(counts[counts > 0].clip(max=5), minlength=6).astype(np.float64)  # n[r]: grams seen r times
    if n[1] == 0 or n[2] == 0:  # a tiny corpus: the estimate is undefined; use the usual single 0.75
        return np.array([0.0, 0.75, 0.75, 0.75])
    y = n[1] / (n[1] + 2 * n[2])
    d = [0.0, 1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / max(n[3], 1.0)]
    return np.array([min(max(x, 0.0), r) for r, x in enumerate(d)])  # 0 <= D_r <= r keeps counts non-negative


def context_hashes(words: np.ndarray) -> np.ndarray:
    """64-bit hashes of the rows of `words` [n, length] (token ids), [n] uint64."""
    h = np.zeros(len(words), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.T.astype(np.uint64):
            h = (h ^ (column + np.uint64(1))) * _MULTIPLIER
            h ^= h >> np.uint64(31)
        return (h ^ (h >> np.uint64(29))) * _MIX


@dataclass
class _Level:
    """One order k ≥ 2: contexts (sorted hashes) with back-off weights, and their continuations."""

    contexts: np.ndarray  # [contexts] uint64 sorted
    gamma: np.ndarray  # [contexts] float32
    grams: np.ndarray  # [grams] int64 sorted: context index * V + token
    kept: np.ndarray  # [grams] float32 discounted probability

    def find(self, hashes: np.ndarray) -> np.ndarray:
        """Context indices of hashes [n], -1 where the context has no continuations."""
        if len(self.contexts) == 0:
            return np.full(len(hashes), -1)
        at = np.searchsorted(self.contexts, hashes).clip(max=len(self.contexts) - 1)
        return np.where(self.contexts[at] == hashes, at, -1)


class Ngram:
    """Interpolated modified Kneser-Ney over token ids (see the module docstring)."""

    def __init__(self, unigram: np.ndarray, levels: dict[int, _Level], weight: float = 0.0):
        self.unigram = unigram  # [V] float64
        self.levels = levels  # order k -> _Level, k = 2..order
        self.vocab_size = len(unigram)
        self.order = max(levels, default=1)
        self.weight = weight

    @classmethod
    def build(cls, ids, vocab_size: int, order: int = 5, min_count: int = 2, discounts: list | None = None) -> "Ngram":
        """Count a stream of token ids.

        Args:
            min_count: grams above the bigrams counted fewer times are pruned (1 keeps all).
            discounts: per order (1..n), three discounts (D1, D2, D3+) to use instead of the
                estimates from the count-of-counts (for hand checks).
        """
        ids = np.asarray(ids, dtype=np.int64)
        V = vocab_size
        # Number every distinct k-gram, order by order: grams[k][i] is the id of the k-gram
        # starting at position i, keys[k] the sorted distinct keys (prefix id * V + last token),
        # first[k] a position where each occurs.
        grams, first, keys, raw, suffix = {1: ids}, {}, {}, {}, {}
        for k in range(2, order + 1):
            key = grams[k - 1][:-1] * V + ids[k - 1:]
            keys[k], first[k], grams[k], raw[k] = np.unique(key, return_index=True, return_inverse=True,
                                                           return_counts=True)
            suffix[k] = grams[k - 1][first[k] + 1]  # id of the (k-1)-gram without the first token
        sizes = {1: V, **{k: len(keys[k]) for k in keys}}

        def counts_at(k: int) -> np.ndarray:  # raw at the top, continuation counts below
            if k == order:
                return raw[k] if k > 1 else np.bincount(ids, minlength=V)
            return np.bincount(suffix[k + 1], minlength=sizes[k])

        def given(k: int):
            return None if discounts is None else np.array([0.0, *discounts[k - 1]])

        levels = {}
        for k in range(2, order + 1):
            # The tokens of each context (a (k-1)-gram id), read where it first occurs.
            words_of = (lambda context: context[:, None]) if k == 2 else partial(_tokens_at, ids, first[k - 1], k - 1)
            levels[k] = _level(keys[k], counts_at(k), sizes[k - 1], V, given(k), min_count if k >= 3 else 1, words_of)
        counts = counts_at(1)
        d = modified_discounts(counts) if discounts is None else given(1)
        total = counts.sum()
        discount = d[counts.clip(max=3)]
        unigram = discount.sum() / total / V + (counts - discount) / total if total else np.full(V, 1.0 / V)
        return cls(unigram.astype(np.float64), levels)

    def mixture(self, context) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """The distribution after the context as (scale, [(tokens, added)] per seen order):
        p = scale * unigram, plus `added` at `tokens` for each order whose context was seen.
        From the longest context down, each adds its discounted counts times the back-off
        weights of the orders above it; the unigrams get the product of all the weights."""
        context = np.asarray(context, dtype=np.int64)
        scale, parts = 1.0, []
        for k in range(self.order, 1, -1):
            if len(context) < k - 1:
                continue
            level = self.levels[k]
            c = int(level.find(context_hashes(context[None, len(context) - (k - 1):]))[0])
            if c < 0:
                continue
            lo, hi = np.searchsorted(level.grams, [c * self.vocab_size, (c + 1) * self.vocab_size])
            parts.append((level.grams[lo:hi] % self.vocab_size, scale * level.kept[lo:hi]))
            scale *= float(level.gamma[c])
        return scale, parts

    def probs(self, context) -> np.ndarray:
        """Probabilities of every token after the context (its last order-1 tokens count): [V] float64."""
        scale, parts = self.mixture(context)
        p = self.unigram * scale
        for tokens, added in parts:  # the tokens of one order are distinct, so += adds each once
            p[tokens] += added
        return p

    def logprobs(self, ids, first: int = 1) -> np.ndarray:
        """Log-probabilities of ids[first:], each given the ids before it: [len(ids) - first]."""
        ids = np.asarray(ids, dtype=np.int64)
        targets = ids[first:]
        positions = np.arange(first, len(ids))
        p = self.unigram[targets]
        for k in range(2, self.order + 1):
            usable = positions >= k - 1
            at = positions[usable]
            history = ids[at[:, None] - (k - 1) + np.arange(k - 1)]  # [usable, k-1]
            level = self.levels[k]
            if not len(level.grams):  # no context of this order has continuations: all back off whole
                continue
            c = level.find(context_hashes(history))
            seen = c >= 0
            key = np.maximum(c, 0) * self.vocab_size + targets[usable]
            found = np.searchsorted(level.grams, key).clip(max=len(level.grams) - 1)
            kept = np.where(seen & (level.grams[found] == key), level.kept[found], 0.0)
            gamma = np.where(seen, level.gamma[np.maximum(c, 0)], 1.0)
            p[usable] = gamma * p[usable] + kept
        return np.log(p)

    def mix(self, logp: np.ndarray, context) -> np.ndarray:
        """log((1 - λ) p_model + λ p_ngram) for the model's log-probabilities [vocab] after the context."""
        ngram = self.probs(context).astype(np.float32)
        return np.logaddexp(np.asarray(logp, np.float32) + math.log1p(-self.weight), log(ngram * self.weight))

    def mixed_nll(self, model_nll: torch.Tensor, ids, weight: float) -> torch.Tensor:
        """-log((1 - λ) p_model + λ p_ngram) of ids[1:] given the model's nll of each [len(ids) - 1]."""
        import torch  # evaluation and tuning only: inference mixes with `mix`, in numpy

        ngram = torch.from_numpy(self.logprobs(ids, first=1)).float()
        return -torch.logaddexp(-model_nll.float() + math.log1p(-weight), ngram + math.log(weight))

    def tune(self, model_nll: torch.Tensor, ids) -> tuple[float, float]:
        """The λ with the lowest mean nll of ids[1:] (0 when none helps), and that nll."""
        best, best_nll = 0.0, model_nll.mean().item()
        for weight in WEIGHTS:
            nll = self.mixed_nll(model_nll, ids, weight).mean().item()
            if nll < best_nll:
                best, best_nll = weight, nll
        return best, best_nll

    def save(self, folder: Path) -> str:
        """Write ngram.safetensors into a folder (through a temporary file: never half-written)."""
        from safetensors.numpy import save_file

        tensors = {"unigram": self.unigram}
        for k, level in self.levels.items():
            tensors.update({f"{k}.contexts": level.contexts, f"{k}.gamma": level.gamma, f"{k}.grams": level.grams,
                            f"{k}.kept": level.kept})
        path = Path(folder) / FILE
        staging = path.with_name(FILE + ".tmp")
        save_file(tensors, str(staging))
        os.replace(staging, path)
        return FILE

    @classmethod
    def load(cls, folder: Path, weight: float) -> "Ngram":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(folder) / FILE
        try:
            tensors = load_file(str(path))
            levels = {}
            for k in sorted({int(name.split(".")[0]) for name in tensors if name != "unigram"}):
                levels[k] = _Level(*(tensors[f"{k}.{part}"] for part in ("contexts", "gamma", "grams", "kept")))
            return cls(tensors["unigram"], levels, weight)
        except (OSError, SafetensorError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path} is damaged ({e}) — delete it to suggest without the n-gram, "
                                  "or train the checkpoint again") from None

    def size(self) -> int:
        """Continuations stored above the unigrams."""
        return sum(len(level.grams) for level in self.levels.values())


def _tokens_at(ids: np.ndarray, positions: np.ndarray, length: int, gram_ids: np.ndarray) -> np.ndarray:
    """The tokens [n, length] of grams given by id, from a position where each occurs."""
    return ids[positions[gram_ids][:, None] + np.arange(length)]


def _level(keys, counts, contexts: int, V: int, discounts, min_count: int, words_of) -> _Level:
    """One order's smoothed, pruned tables from its sorted keys and their counts."""
    d = modified_discounts(counts) if discounts is None else discounts
    context = keys // V  # [grams] id of the (k-1)-gram before each
    total = np.bincount(context, weights=counts, minlength=contexts)  # c(h•)
    discount = d[counts.clip(max=3)]
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.bincount(context, weights=discount, minlength=contexts) / total
        kept = (counts - discount) / total[context]
    keep = counts >= max(min_count, 1)  # a gram never counted (a lower-order gram only at the start) has nothing
    gamma += np.bincount(context[~keep], weights=np.nan_to_num(kept[~keep]), minlength=contexts)  # pruned mass backs off
    used = np.unique(context[keep])  # contexts with continuations left; the others back off whole (gamma 1)
    hashes = context_hashes(words_of(used))
    by_hash = np.argsort(hashes, kind="stable")
    hashes, used = hashes[by_hash], used[by_hash]
    unique = np.ones(len(hashes), dtype=bool)
    unique[1:] = hashes[1:] != hashes[:-1]
    unique[:-1] &= hashes[:-1] != hashes[1:]  # a hash collision (never seen in practice): both back off
    hashes, used = hashes[unique], used[unique]
    index = np.full(contexts, -1, dtype=np.int64)
    index[used] = np.arange(len(used))
    keep &= index[context] >= 0
    grams = index[context[keep]] * V + keys[keep] % V
    by_key = np.argsort(grams, kind="stable")
    return _Level(hashes, gamma[used].astype(np.float32), grams[by_key], kept[keep][by_key].astype(np.float32))
