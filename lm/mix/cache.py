"""A continuous cache: the text read so far as a second next-token distribution.

Grave, Joulin and Usunier (2017), "Improving neural language models with a continuous cache".
Each position i of the text leaves its feature vector h_i (what the output layer reads) with
the token that followed it, x_{i+1}. At position t the cache predicts

    p_cache(w) = sum over the last `window` positions i < t with x_{i+1} = w of softmax_i(θ h_t·h_i)

and the prediction is (1 - λ) p_model + λ p_cache: a word that followed a similar context a
moment ago is likely again (names, topic words, a user's own vocabulary). θ is `sharpness`,
λ is `weight`, scaled down while the memory is short (λ·n/RAMP for its first n < RAMP
entries, RAMP = min(window, 100)): a distribution over the five tokens of a five-word text is
no evidence, and at full weight it offered "the" and "clouds" after "the clouds are in the".
`cache_tune.tune` picks them and the window on validation text, and lm saves them in the
checkpoint's config.json under "cache". Nothing is trained; the model is unchanged.
"""
from __future__ import annotations

import math

import numpy as np

from .._arrays import log, log_softmax, softmax
from .config import CacheConfig

WINDOWS = (100, 500, 2000)  # positions remembered, tried by `tune` (Grave et al. used 100 to 2,000)
SHARPNESS_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # θ tried by `tune`, times 1 / the median of |h|²
WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)  # λ tried by `tune` (0: the cache does not pay)
TUNE_TOKENS = 50_000  # validation tokens `tune` reads at most: a minute on a CPU
QUERY_BLOCK = 512  # positions scored together in `target_probs`
RAMP = 100  # entries from which the cache has its full weight


def mix(logits: np.ndarray, query: np.ndarray, keys: np.ndarray, values: np.ndarray,
        config: CacheConfig) -> np.ndarray:
    """Next-token log-probabilities of model and cache mixed.

    Args:
        logits: [q, vocab] the model's logits (or log-probabilities).
        query: [q, dim] the feature vectors that produced them.
        keys, values: [n, dim] and [n] the remembered features and the tokens that followed them.
    Returns:
        [q, vocab] fp32 log-probabilities; the model's own when the cache is empty or off.
    """
    logp = log_softmax(logits)
    if not config.enabled or len(values) == 0:
        return logp
    weight = weight_for(config.weight, len(values), config.window)
    attention = softmax((config.sharpness * np.asarray(query, np.float32)) @ keys.T)  # [q, n]
    q, vocab = logp.shape
    # Each row's attention summed per token, all rows in one bincount: (row, token) -> row * vocab + token.
    slots = (np.arange(q)[:, None] * vocab + values[None, :]).ravel()
    cached = np.bincount(slots, attention.ravel(), minlength=q * vocab).reshape(q, vocab).astype(np.float32)
    return np.logaddexp(logp + math.log1p(-weight), log(cached) + math.log(weight))


def weight_for(weight: float, entries: int, window: int) -> float:
    """λ for a memory of `entries`: full from RAMP on."""
    ramp = min(window, RAMP)
    return weight * min(entries, ramp) / ramp


class CacheMemory:
    """The remembered (feature, next token) pairs of one text being typed, in one growing buffer.

    Entries are numbered from the start of the text. A suggestion session keeps, at each word
    boundary, how many entries the text up to there has; `view(count)` is that boundary's
    cache, and `write(at, ...)` after a deletion overwrites what followed `at`. Old entries
    are dropped once far behind the newest (`base` is the number of the first one kept).
    """

    def __init__(self, config: CacheConfig):
        self.config = config
        self.base = 0
        self.keys: np.ndarray | None = None  # [capacity, dim]
        self.values = np.zeros(0, np.int64)
        self.length = 0  # entries held, from base

    @staticmethod
    def capacity(config: CacheConfig) -> int:
        """Entries the buffer holds before it drops old ones (a quarter more than the window)."""
        return config.window + config.window // 4 + 256

    def view(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The last `window` entries before entry number `count` (keys [n, dim], values [n])."""
        if self.keys is None or count <= self.base:
            return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
        first = max(self.base, count - self.config.window)
        return self.keys[first - self.base: count - self.base], self.values[first - self.base: count - self.base]

    def write(self, at: int, keys: np.ndarray, values: np.ndarray) -> int:
        """Put entries at number `at` (dropping any after it); returns the count after them."""
        if self.keys is None or at < self.base:  # the first entries, or the text re-read from its start
            self.base, self.length = at, 0
            self.keys = np.zeros((self.capacity(self.config), keys.shape[1]), np.float32)
            self.values = np.zeros(len(self.keys), np.int64)
        self.length = at - self.base
        if self.length + len(keys) > len(self.keys):
            self._compact(at)
        end = self.length + len(keys)
        if end > len(self.keys):  # a read longer than the buffer: grow it
            self.keys = np.concatenate([self.keys, np.zeros((end, self.keys.shape[1]), np.float32)])
            self.values = np.concatenate([self.values, np.zeros(end, np.int64)])
        self.keys[self.length: end] = keys
        self.values[self.length: end] = values
        self.length = end
        return self.base + end

    def _compact(self, at: int) -> None:
        """Keep only the `window` entries before `at`: older word boundaries lose their cache."""
        keep = min(self.config.window, at - self.base)
        start = at - self.base - keep
        self.keys[:keep] = self.keys[start: start + keep].copy()
        self.values[:keep] = self.values[start: start + keep].copy()
        self.base, self.length = at - keep, keep

    def covers(self, count: int) -> bool:
        """Whether `view(count)` is whole (not cut by dropped entries)."""
        return count == 0 or count - self.config.window >= self.base or self.base == 0
