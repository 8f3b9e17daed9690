"""numpy helpers the inference engine shares (it runs on numpy whichever backend steps the model)."""
from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float32."""
    x = np.asarray(x, np.float32)
    shifted = x - x.max(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # rows of -inf stay -inf/nan as torch's do
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    """softmax over the last axis, in float32."""
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest values of a 1-d array and their indices, largest first (ties: lower index first)."""
    k = min(k, len(x))
    if k <= 0:
        return x[:0], np.zeros(0, np.int64)
    index = np.argpartition(-x, k - 1)[:k] if k < len(x) else np.arange(len(x))
    order = np.lexsort((index, -x[index]))
    index = index[order]
    return x[index], index


def log(x) -> np.ndarray:
    """Natural log with log(0) = -inf and no warning."""
    with np.errstate(divide="ignore"):
        return np.log(x)
