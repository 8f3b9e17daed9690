"""A continuous cache: the text read so far as a second next-token distribution.

Grave, Joulin and Usunier (2017), "Improving neural language models with a continuous cache".
Each position i of the text leaves its feature vector h_i (what the output layer reads) with
the token that followed it, x_{i+1}. At position t the cache predicts

    p_cache(w) = sum over the last `window` positions i < t with x_{i+1} = w of softmax_i(θ h_t·h_i)

and the prediction is (1 - λ) p_model + λ p_cache: a word that followed a similar context a
moment ago is likely again (names, topic words, a user's own vocabulary). θ is `sharpness`,
λ is `weight`, scaled down while the memory is short (λ·n/RAMP for its first n < RAMP
entries, RAMP = min(window, 100)): a distribution over the five tokens of a five-word text is
no evidence, and at full weight it offered "the" and "clouds" after "the clouds are in the". `tune` picks them and the window on validation text, and lm saves them in the
checkpoint's config.json under "cache". Nothing is trained; the model is unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import CacheConfig

WINDOWS = (100, 500, 2000)  # positions remembered, tried by `tune` (Grave et al. used 100 to 2,000)
SHARPNESS_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # θ tried by `tune`, times 1 / the median of |h|²
WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)  # λ tried by `tune` (0: the cache does not pay)
TUNE_TOKENS = 50_000  # validation tokens `tune` reads at most: a minute on a CPU
QUERY_BLOCK = 512  # positions scored together in `target_probs`
RAMP = 100  # entries from which the cache has its full weight


def mix(logits: torch.Tensor, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
        config: CacheConfig) -> torch.Tensor:
    """Next-token log-probabilities of model and cache mixed.

    Args:
        logits: [q, vocab] the model's logits (or log-probabilities).
        query: [q, dim] the feature vectors that produced them.
        keys, values: [n, dim] and [n] the remembered features and the tokens that followed them.
    Returns:
        [q, vocab] fp32 log-probabilities; the model's own when the cache is empty or off.
    """
    logp = torch.log_softmax(logits.float(), -1)
    if not config.enabled or len(values) == 0:
        return logp
    weight = weight_for(config.weight, len(values), config.window)
    attention = torch.softmax(config.sharpness * (query.float() @ keys.float().T), -1)  # [q, n]
    cached = logp.new_zeros(logp.shape).index_add_(1, values, attention)  # [q, vocab]
    return torch.logaddexp(logp + math.log1p(-weight), cached.log() + math.log(weight))


def weight_for(weight: float, entries, window: int):
    """λ for a memory of `entries` (a number, or a tensor of them per position): full from RAMP on."""
    ramp = min(window, RAMP)
    if isinstance(entries, torch.Tensor):
        return weight * entries.clamp(max=ramp).float() / ramp
    return weight * min(entries, ramp) / ramp


def target_probs(features: torch.Tensor, targets: torch.Tensor, window: int, sharpness: float) -> torch.Tensor:
    """p_cache(targets[t]) at every position of one text, [time] fp32 (0 where it has no memory yet).

    Args:
        features: [time, dim] the feature vector at each position.
        targets: [time] the token that followed each position (position i remembers
            (features[i], targets[i]) for the positions after it).
    """
    time_steps = len(targets)
    out = torch.zeros(time_steps)
    features = features.float()
    for start in range(0, time_steps, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, time_steps)
        first = max(0, start - window)
        scores = sharpness * (features[start:stop] @ features[first:stop].T)  # [block, keys]
        t = torch.arange(start, stop)[:, None]
        i = torch.arange(first, stop)[None, :]
        scores.masked_fill_((i >= t) | (i < t - window), -math.inf)  # the last `window` positions before t
        attention = torch.softmax(scores, -1).nan_to_num_(0.0)  # rows without memory: all zero
        hit = targets[first:stop][None, :] == targets[start:stop, None]  # [block, keys]
        out[start:stop] = (attention * hit).sum(-1)
    return out


def mixed_nll(model_nll: torch.Tensor, cache_p: torch.Tensor, weight: float, window: int) -> torch.Tensor:
    """-log((1 - λ_t) p_model + λ_t p_cache) per position t, λ_t = weight_for(weight, t, window)."""
    if weight == 0:
        return model_nll
    weights = weight_for(weight, torch.arange(len(model_nll)), window)  # position t remembers t entries
    mixed = -torch.logaddexp(-model_nll + torch.log1p(-weights), cache_p.clamp_min(1e-30).log() + weights.clamp_min(1e-30).log())
    return torch.where(weights > 0, mixed, model_nll)


@torch.inference_mode()
def read_text(model, ids: np.ndarray, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ids as one stream: the feature vector at each position [n-1, dim] and the model's
    nll of the token that follows [n-1] (fp32, on the CPU)."""
    device = next(model.parameters()).device
    features, nll, state = [], [], None
    for at in range(0, len(ids) - 1, chunk):
        x = torch.tensor(np.asarray(ids[at: at + chunk + 1]), dtype=torch.long, device=device)[None]  # [1, time + 1]
        inputs, targets = x[:, :-1], x[:, 1:]
        h, state = model.features(inputs, state)  # [1, time, dim]
        logits = model.output(h)[0].float()  # [time, vocab]
        nll.append(F.cross_entropy(logits, targets[0], reduction="none").cpu())
        features.append(h[0].float().cpu())
    return torch.cat(features), torch.cat(nll)


def tune(features: torch.Tensor, targets: torch.Tensor, model_nll: torch.Tensor) -> tuple[CacheConfig, dict]:
    """The window, sharpness and weight with the lowest mean nll on a text; weight 0 when none helps.

    Args:
        features, targets, model_nll: from `read_text` over validation text ([time, dim], [time], [time]).
    Returns:
        The best config and a report: {"model_nll", "cache_nll", "tried": [...], "nll": the
        best setting's nll at each position [time]}.
    """
    scale = 1.0 / max(features.float().pow(2).sum(-1).median().item(), 1e-6)
    best, best_nll, tried, nll_at = CacheConfig(), model_nll.mean().item(), [], model_nll
    for window in WINDOWS:
        for factor in SHARPNESS_SCALES:
            sharpness = factor * scale
            cache_p = target_probs(features, targets, window, sharpness)
            for weight in WEIGHTS[1:]:
                mixed = mixed_nll(model_nll, cache_p, weight, window)
                nll = mixed.mean().item()
                tried.append({"window": window, "sharpness": sharpness, "weight": weight, "nll": nll})
                if nll < best_nll:
                    best, best_nll, nll_at = CacheConfig(window, sharpness, weight), nll, mixed
    return best, {"model_nll": model_nll.mean().item(), "cache_nll": best_nll, "tried": tried, "nll": nll_at}


def tune_on(model, ids: np.ndarray, max_tokens: int = TUNE_TOKENS) -> tuple[CacheConfig, dict]:
    """Read up to `max_tokens` of a text with the model and tune the cache on it."""
    ids = np.asarray(ids[: max_tokens + 1])
    features, nll = read_text(model, ids)
    return tune(features, torch.tensor(ids[1:], dtype=torch.long), nll)


def cache_nll(model, ids: np.ndarray, config: CacheConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token nll of a text without and with the cache, each [len(ids) - 1]."""
    features, nll = read_text(model, ids)
    targets = torch.tensor(np.asarray(ids[1:]), dtype=torch.long)
    if not config.enabled:
        return nll, nll
    cache_p = target_probs(features, targets, config.window, config.sharpness)
    return nll, mixed_nll(nll, cache_p, config.weight, config.window)


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
        self.keys: torch.Tensor | None = None  # [capacity, dim]
        self.values = torch.zeros(0, dtype=torch.long)
        self.length = 0  # entries held, from base

    @staticmethod
    def capacity(config: CacheConfig) -> int:
        """Entries the buffer holds before it drops old ones (a quarter more than the window)."""
        return config.window + config.window // 4 + 256

    def view(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `window` entries before entry number `count` (keys [n, dim], values [n])."""
        if self.keys is None or count <= self.base:
            return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
        first = max(self.base, count - self.config.window)
        return self.keys[first - self.base: count - self.base], self.values[first - self.base: count - self.base]

    def write(self, at: int, keys: torch.Tensor, values: torch.Tensor) -> int:
        """Put entries at number `at` (dropping any after it); returns the count after them."""
        if self.keys is None or at < self.base:  # the first entries, or the text re-read from its start
            self.base, self.length = at, 0
            self.keys = keys.new_zeros(self.capacity(self.config), keys.shape[1])
            self.values = torch.zeros(len(self.keys), dtype=torch.long, device=keys.device)
        self.length = at - self.base
        if self.length + len(keys) > len(self.keys):
            self._compact(at)
        end = self.length + len(keys)
        if end > len(self.keys):  # a read longer than the buffer: grow it
            self.keys = torch.cat([self.keys, self.keys.new_zeros(end, self.keys.shape[1])])
            self.values = torch.cat([self.values, self.values.new_zeros(end)])
        self.keys[self.length: end] = keys
        self.values[self.length: end] = values
        self.length = end
        return self.base + end

    def _compact(self, at: int) -> None:
        """Keep only the `window` entries before `at`: older word boundaries lose their cache."""
        keep = min(self.config.window, at - self.base)
        start = at - self.base - keep
        self.keys[:keep] = self.keys[start: start + keep].clone()
        self.values[:keep] = self.values[start: start + keep].clone()
        self.base, self.length = at - keep, keep

    def covers(self, count: int) -> bool:
        """Whether `view(count)` is whole (not cut by dropped entries)."""
        return count == 0 or count - self.config.window >= self.base or self.base == 0
