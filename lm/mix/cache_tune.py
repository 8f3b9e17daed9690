"""Tuning and scoring the continuous cache over whole texts, in PyTorch (lm train's end, lm eval).

The cache itself, mixed in at inference, is numpy-level: cache.py. Here the same mixture is
worked out for every position of a validation or test text at once, to pick its settings.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .cache import QUERY_BLOCK, RAMP, SHARPNESS_SCALES, WEIGHTS, WINDOWS, TUNE_TOKENS
from .config import CacheConfig


def weight_for_positions(weight: float, entries: torch.Tensor, window: int) -> torch.Tensor:
    """λ at each position, for a memory of `entries` [time] entries (cache.weight_for, per position)."""
    ramp = min(window, RAMP)
    return weight * entries.clamp(max=ramp).float() / ramp


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
    weights = weight_for_positions(weight, torch.arange(len(model_nll)), window)  # position t remembers t entries
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
