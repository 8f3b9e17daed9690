"""An interpolated modified Kneser-Ney n-gram word model, the count-based baseline of bench/.

Chen & Goodman (1998), "An empirical study of smoothing techniques for language modeling",
section 3 (interpolated modified Kneser-Ney):

    p_k(w | h) = max(c(hw) - D_k(c(hw)), 0) / c(h•) + gamma(h) p_{k-1}(w | h')
    gamma(h)   = (D_k1 N1(h•) + D_k2 N2(h•) + D_k3+ N3+(h•)) / c(h•)

where h' drops the oldest word of h, c is the raw count at the highest order and the
continuation count N1+(•hw) (distinct words seen before hw) at the lower orders, c(h•) sums c
over the words after h, and N1, N2, N3+ count the words after h seen once, twice, three times
or more. Each order has three discounts from its count-of-counts n1..n4:
Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.
The unigram level interpolates with the uniform distribution over the vocabulary; a context
never seen at an order leaves the lower order's distribution as it is.

The counts live in sorted numpy arrays: the k-gram (w1..wk) is the key id(w1..wk-1) * V + wk,
where id(...) is the index of the (k-1)-gram among that order's sorted keys, so every key fits
in an int64 and a context's continuations are one contiguous slice.

    python bench/kneser_ney.py --self-test          # hand-checked values and normalisation
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from the count-of-counts of `counts` (Chen & Goodman eq. 26)."""
    n = np.bincount(counts[counts > 0].clip(max=5), minlength=6).astype(np.float64)  # n[r]: grams seen r times
    if n[1] == 0 or n[2] == 0:  # a tiny corpus: the estimate is undefined; use the usual single 0.75
        return np.array([0.0, 0.75, 0.75, 0.75])
    y = n[1] / (n[1] + 2 * n[2])
    d = [0.0, 1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / max(n[3], 1.0)]
    return np.array([min(max(x, 0.0), r) for r, x in enumerate(d)])  # 0 <= D_r <= r keeps counts non-negative


class _Order:
    """The counts of one order k: its k-grams, their discounted counts and each context's weight."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, contexts: int, vocab_size: int, discounts=None):
        self.keys = keys  # [grams] sorted: context id * V + word
        self.discounts = modified_discounts(counts) if discounts is None else np.array([0.0, *discounts])
        context = keys // vocab_size  # [grams]
        self.words = (keys % vocab_size).astype(np.int64)  # [grams]
        self.total = np.bincount(context, weights=counts, minlength=contexts)  # [contexts] c(h•)
        discount = self.discounts[counts.clip(max=3)]  # [grams] D(c); D(0) = 0
        removed = np.bincount(context, weights=discount, minlength=contexts)  # [contexts] D1 N1 + D2 N2 + D3 N3+
        with np.errstate(divide="ignore", invalid="ignore"):
            self.gamma = np.where(self.total > 0, removed / self.total, 1.0)  # [contexts]
            self.kept = np.where(self.total[context] > 0, (counts - discount) / self.total[context], 0.0)  # [grams]


class KneserNey:
    """Interpolated modified Kneser-Ney over word ids.

    Args:
        ids: the training stream of word ids (one <eos> per line, as lm reads text).
        vocab_size: the number of word ids.
        order: n of the n-gram (5: contexts of up to 4 words).
        discounts: per order (1..n), three discounts (D1, D2, D3+) to use instead of the
            estimates from the count-of-counts (for hand checks).
    """

    def __init__(self, ids, vocab_size: int, order: int = 5, discounts: list | None = None):
        ids = np.asarray(ids, dtype=np.int64)
        self.vocab_size, self.order, self.tokens = vocab_size, order, len(ids)
        V = vocab_size
        # Phase 1: number every distinct k-gram, order by order. grams[k][i] is the id of the
        # k-gram starting at position i; keys[k] holds the sorted distinct keys.
        grams = {1: ids}
        keys: dict[int, np.ndarray] = {}
        raw: dict[int, np.ndarray] = {}
        suffix: dict[int, np.ndarray] = {}  # [grams of order k] id of the (k-1)-gram without the first word
        for k in range(2, order + 1):
            key = grams[k - 1][:-1] * V + ids[k - 1:]  # [positions] prefix id * V + last word
            keys[k], first, grams[k], raw[k] = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            suffix[k] = grams[k - 1][first + 1]
        sizes = {1: V, **{k: len(keys[k]) for k in keys}}
        # Phase 2: the counts each order smooths with: raw at the top, continuation below
        # (how many distinct words precede the gram: the number of (k+1)-grams ending in it).
        self.levels: dict[int, _Order] = {}
        for k in range(order, 0, -1):
            if k == order:
                counts = raw[k] if k > 1 else np.bincount(ids, minlength=V)
            else:
                counts = np.bincount(suffix[k + 1], minlength=sizes[k])
            level_keys = keys[k] if k > 1 else np.arange(V, dtype=np.int64)
            self.levels[k] = _Order(level_keys, counts, sizes[k - 1] if k > 1 else 1, V,
                                    None if discounts is None else discounts[k - 1])
        one = self.levels[1]
        self.unigram = one.gamma[0] / V + np.bincount(one.words, weights=one.kept, minlength=V)  # [V]

    def gram_ids(self, words: np.ndarray) -> np.ndarray:
        """Ids of the j-grams in the rows of `words` [batch, j], -1 where never seen."""
        ids = words[:, 0].astype(np.int64)  # [batch]
        for m in range(2, words.shape[1] + 1):
            keys = self.levels[m].keys
            key = np.maximum(ids, 0) * self.vocab_size + words[:, m - 1]  # [batch]
            at = np.searchsorted(keys, key).clip(max=len(keys) - 1)
            ids = np.where((ids >= 0) & (keys[at] == key), at, -1)
        return ids

    def _context_id(self, context: list[int], k: int) -> int:
        """Id of the last k-1 words of the context, -1 if unseen (or the context is shorter)."""
        if k == 1:
            return 0
        if len(context) < k - 1:
            return -1
        words = context[-(k - 1):]
        gram = words[0]
        for m in range(2, k):
            keys = self.levels[m].keys
            key = gram * self.vocab_size + words[m - 1]
            gram = int(np.searchsorted(keys, key))
            if gram == len(keys) or keys[gram] != key:
                return -1
        return gram

    def mixture(self, context_ids) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """The distribution after the context as (scale, [(words, added)] per seen order).

        p = scale * unigram, plus `added` at `words` for each seen order. From the highest order
        down, each seen context adds its discounted counts times the weights of the orders above
        it; the unigram vector gets the product of all the weights.
        """
        context = [int(i) for i in context_ids]
        V, scale, parts = self.vocab_size, 1.0, []
        for k in range(self.order, 1, -1):
            h = self._context_id(context, k)
            level = self.levels[k]
            if h < 0 or level.total[h] == 0:
                continue
            lo, hi = np.searchsorted(level.keys, [h * V, (h + 1) * V])
            parts.append((level.words[lo:hi], scale * level.kept[lo:hi]))
            scale *= level.gamma[h]
        return scale, parts

    def distribution(self, context_ids) -> np.ndarray:
        """Probabilities of every word after the context: [vocab], summing to 1."""
        scale, parts = self.mixture(context_ids)
        p = self.unigram * scale
        for words, added in parts:  # the words of one order are distinct, so += adds each once
            p[words] += added
        return p

    def logprob(self, context_ids, word_id: int) -> float:
        """Natural log-probability of one word after the context."""
        return float(self.logprobs(np.asarray([*context_ids, word_id], dtype=np.int64), first=len(context_ids))[0])

    def logprobs(self, ids, first: int = 1) -> np.ndarray:
        """Log-probabilities of ids[first:], each given the ids before it: [len(ids) - first]."""
        ids = np.asarray(ids, dtype=np.int64)
        targets = ids[first:]
        positions = np.arange(first, len(ids))
        p = self.unigram[targets]
        V = self.vocab_size
        for k in range(2, self.order + 1):
            usable = positions >= k - 1
            at = positions[usable]
            history = np.stack([ids[at - (k - 1) + j] for j in range(k - 1)], axis=1)  # [usable, k-1]
            h = self.gram_ids(history)
            level = self.levels[k]
            seen = h >= 0
            seen[seen] = level.total[h[seen]] > 0
            key = np.maximum(h, 0) * V + targets[usable]
            found = np.searchsorted(level.keys, key).clip(max=len(level.keys) - 1)
            kept = np.where(seen & (level.keys[found] == key), level.kept[found], 0.0)
            gamma = np.where(seen, level.gamma[np.maximum(h, 0)], 1.0)
            p[usable] = gamma * p[usable] + kept
        return np.log(p)


def self_test() -> None:
    """Hand-computed values on a six-word corpus, and normalisation on a random one."""
    # a b a b a c, vocabulary a b c d. Continuation counts: a, b, c each follow one distinct
    # word, d none. Unigram level with D = 0.5: gamma = 0.5 * 3 / 3 = 1/2, so
    # p1(a) = p1(b) = p1(c) = 0.5/3 + 1/2 * 1/4 = 7/24 and p1(d) = 1/8.
    # After "a": c(ab) = 2, c(ac) = 1, c(a•) = 3; with D1 = 0.5, D2 = 1:
    # gamma(a) = (0.5 * 1 + 1 * 1) / 3 = 1/2, p(b | a) = (2 - 1) / 3 + 1/2 * 7/24 = 23/48,
    # p(c | a) = 0.5/3 + 7/48 = 15/48, p(a | a) = 7/48, p(d | a) = 1/16.
    a, b, c, d = 0, 1, 2, 3
    model = KneserNey([a, b, a, b, a, c], 4, order=2, discounts=[[0.5, 0.5, 0.5], [0.5, 1.0, 1.5]])
    expected = {a: 7 / 48, b: 23 / 48, c: 15 / 48, d: 1 / 16}
    got = model.distribution([a])
    for w, p in expected.items():
        assert abs(got[w] - p) < 1e-12, (w, got[w], p)
        assert abs(model.logprob([a], w) - math.log(p)) < 1e-12
    assert np.allclose(model.distribution([d]), [7 / 24, 7 / 24, 7 / 24, 1 / 8])  # unseen context: the unigram level
    print("hand-computed 2-gram values: ok (p(b | a) = 23/48)")

    # Chen & Goodman's estimate from count-of-counts n1..n4 = 100, 40, 20, 10.
    counts = np.repeat([1, 2, 3, 4], [100, 40, 20, 10])
    y = 100 / 180
    assert np.allclose(modified_discounts(counts)[1:], [1 - 2 * y * 0.4, 2 - 3 * y * 0.5, 3 - 4 * y * 0.5])
    print("discounts from count-of-counts: ok")

    # A random Zipf-like stream: every context's distribution sums to 1 and agrees with the
    # vectorised log-probabilities of a whole stream.
    rng = np.random.default_rng(0)
    V = 50
    stream = np.minimum(rng.zipf(1.3, 20_000) - 1, V - 1)
    stream[::7] = stream[::7] % 5  # some repeated structure, so high orders get counts
    model = KneserNey(stream, V, order=5)
    probe = rng.integers(0, len(stream) - 6, 200)
    for i in probe:
        for length in (0, 1, 2, 4, 6):
            context = stream[max(i + 5 - length, 0): i + 5].tolist()
            assert abs(model.distribution(context).sum() - 1) < 1e-9, (context, model.distribution(context).sum())
    unseen = [V - 1, V - 2, V - 3, V - 4]
    assert abs(model.distribution(unseen).sum() - 1) < 1e-9
    held_out = np.minimum(rng.zipf(1.3, 2_000) - 1, V - 1)
    vectorised = model.logprobs(held_out, first=1)
    for i in rng.integers(1, len(held_out), 200):
        one = math.log(model.distribution(held_out[:i].tolist())[held_out[i]])
        assert abs(vectorised[i - 1] - one) < 1e-9, (i, vectorised[i - 1], one)
    print(f"5-gram on 20,000 random ids: 1,000 distributions sum to 1, logprobs agree with distribution: ok "
          f"(held-out perplexity {math.exp(-vectorised.mean()):.2f}, vocabulary {V})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true", help="run the hand checks and exit")
    parser.add_argument("--checkpoint", "-c", help="a word-tokenizer checkpoint: build on its training text")
    parser.add_argument("--order", type=int, default=5)
    args = parser.parse_args()
    if args.self_test or not args.checkpoint:
        self_test()
        return
    from keyboard_quality import build_ngram  # the same build the keyboard benchmark uses

    started = time.perf_counter()
    model, _ = build_ngram(args.checkpoint, args.order)
    print(f"built the {args.order}-gram in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
