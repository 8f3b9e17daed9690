"""Evaluation: negative log-likelihood over a text with the state carried through it.

Results are reported in units that compare across tokenizers: loss and perplexity per token,
perplexity per whitespace word and bits per character, all from the same total NLL.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .batching import batchify, windows
from .model import detach_state


@dataclass
class LossMetrics:
    """Likelihood of a text under a model, in comparable units."""

    loss: float  # mean NLL per token, nats
    tokens: int  # tokens scored
    chars: int  # characters of the text those tokens cover
    words: int  # whitespace words of that text

    @property
    def perplexity(self) -> float:
        return _safe_exp(self.loss)

    @property
    def word_perplexity(self) -> float:
        return _safe_exp(self.loss * self.tokens / max(self.words, 1))

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / max(self.chars, 1) / math.log(2)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "perplexity": self.perplexity,
            "word_perplexity": self.word_perplexity,
            "bits_per_char": self.bits_per_char,
        }


@torch.inference_mode()
def total_nll(model, ids: np.ndarray, batch: int = 16, bptt: int = 256, autocast=None) -> tuple[torch.Tensor, int]:
    """Summed NLL (a device scalar, no host sync) and the number of tokens scored.

    The ids are cut into `batch` streams read with the state carried from window to window.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = max(1, min(batch, (len(ids) - 1) // 2 or 1))
    streams = batchify(ids, batch)
    total = torch.zeros((), device=device, dtype=torch.float64)
    scored = 0
    state = None
    for inputs, targets in windows(streams, bptt, device=device):
        with autocast or nullcontext():
            logits, state = model(inputs, state)
        total += F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
        scored += targets.numel()
        state = detach_state(state)
    model.train(was_training)
    return total, scored


def evaluate_loss(model, ids: np.ndarray, chars: int, words: int, batch: int = 16, bptt: int = 256, autocast=None) -> LossMetrics:
    """Loss metrics of the model on a token array whose text has `chars` characters and `words` words.

    Character and word counts are scaled to the share of tokens actually scored (the ragged
    tail that does not fill a stream is left out).
    """
    total, scored = total_nll(model, ids, batch, bptt, autocast)
    share = scored / max(len(ids), 1)
    loss = total.item() / max(scored, 1)
    return LossMetrics(loss=loss, tokens=scored, chars=round(chars * share), words=round(words * share))


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
