"""Likelihood: the negative log-likelihood of a text with the state carried through it.

Results are reported in units that compare across tokenizers: loss and perplexity per token,
perplexity per whitespace word and bits per character, all from the same total NLL. The trainer
validates with it; `lm eval` (lm/evaluate/evaluation.py) reports it beside the keyboard metrics.

Reading a text in parallel streams
----------------------------------
The standard is one stream read from the first token to the last with the state carried
(`batch=1`): that result is exact. Several streams go faster, but a stream that starts in the
middle of the text would start from a zero state and score its first tokens with almost no
context. So every stream after the first first reads `overlap` tokens of the text before its
cut point without scoring them (priming), then scores its own part:

    text:    | a b c d e f g h i j k l m n o p q r s t u v w x |
    stream 0   a b c d e f g h                                   scores a..h
    stream 1           (e f g h) i j k l m n o p                 primes on e..h, scores i..p
    stream 2                           (m n o p) q r s t u v w x primes on m..p, scores q..x

Every token is scored exactly once, the ragged tail included. What is approximate: a primed
stream's state at its cut point is the state after `overlap` tokens from zero, not after the
whole text before it. An LSTM forgets its start state within a few hundred tokens, so with the
default overlap the total agrees with one stream to float tolerance (tests/test_evaluate.py
checks it); `overlap=0` gives the classic zero-state cut, faster and a little pessimistic.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from .config import DEFAULT_OVERLAP
from .loss import token_nll
from .state import detach_state


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
def total_nll(
    model,
    ids: np.ndarray,
    batch: int = 16,
    bptt: int = 256,
    autocast=None,
    overlap: int = DEFAULT_OVERLAP,
    first: int = 1,
    advance: Callable[[int], None] | None = None,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed NLL of ids[first:] (a device scalar, no host sync) and the number of tokens scored.

    Each token is predicted from all the ids before it (ids[:first] are context, read but not
    scored). The text is read in up to `batch` primed streams, windows of `bptt` tokens at a
    time; see the module docstring for what is exact and what is approximate.

    Args:
        overlap: tokens each stream after the first reads unscored before its cut point.
        first: index of the first scored token (at least 1: token 0 has no context).
        advance: called with the number of tokens scored after each window.
        vocab_size: when given, windows are shortened so that their logits stay within
            LOGITS_BUDGET_BYTES (large vocabularies).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    read, score, end = stream_plan(len(ids), first, batch, overlap)
    if vocab_size:
        bptt = window_for_budget(bptt, len(read), vocab_size)
    total = torch.zeros((), device=device, dtype=torch.float64)
    state = None
    for j in range(0, int((end - read).max(initial=0)), bptt):
        inputs, targets, scored = _window(ids, read, score, end, j, bptt)
        with autocast or nullcontext():
            nll, state = token_nll(model, inputs.to(device), targets.to(device), state)  # [batch, time]
        total += torch.where(scored.to(device), nll, 0.0).double().sum()
        state = detach_state(state)
        if advance is not None:
            advance(int(scored.sum()))
    model.train(was_training)
    return total, int((end - score).sum())


LOGITS_BUDGET_BYTES = 64 * 2**20


def window_for_budget(bptt: int, streams: int, vocab: int) -> int:
    """The window length that keeps one window's fp32 logits within LOGITS_BUDGET_BYTES.

    With a 33k-word vocabulary, 16 streams of 256 tokens would hold 545 MB of logits (and
    as much again for their log-softmax); shorter windows give the same sums.
    """
    return max(1, min(bptt, LOGITS_BUDGET_BYTES // (streams * vocab * 4)))


def stream_plan(length: int, first: int, batch: int, overlap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each stream starts reading, starts scoring and stops, as input positions.

    Input position i predicts token i+1, so scoring ids[first:] means scoring input positions
    first-1 .. length-2. Streams are sized so that priming plus scoring is about the same
    length in each (little padding), and each scores at least `overlap` tokens (priming at most
    doubles the work). Returns three int arrays [streams]: read, score, end (end exclusive).
    """
    start, stop = max(first, 1) - 1, max(length - 1, 0)
    todo = stop - start
    streams = max(1, min(batch, todo // max(overlap, 1)))
    per_stream = -(-(todo + start + (streams - 1) * overlap) // streams)  # ceil
    cuts = [start]
    for s in range(streams):
        primed = start if s == 0 else min(overlap, cuts[-1])
        cuts.append(min(stop, cuts[-1] + max(per_stream - primed, 1)))
    cuts[-1] = stop  # the ragged tail belongs to the last stream
    score = np.array(cuts[:-1], dtype=np.int64)
    end = np.array(cuts[1:], dtype=np.int64)
    read = np.maximum(score - overlap, 0)
    read[0] = 0
    return read, score, end


def _window(ids, read, score, end, j: int, bptt: int):
    """Inputs, targets and the scored mask of window j..j+bptt of every stream, each [streams, time]."""
    position = read[:, None] + np.arange(j, j + bptt)[None, :]  # [streams, time]
    active = position < end[:, None]
    columns = int(active.any(axis=0).nonzero()[0].max()) + 1  # trim the padding-only tail
    position, active = position[:, :columns], active[:, :columns]
    scored = active & (position >= score[:, None])
    position = np.minimum(position, len(ids) - 2)  # padding reads a real token; it is never scored
    inputs = torch.from_numpy(np.asarray(ids[position], dtype=np.int64))
    targets = torch.from_numpy(np.asarray(ids[position + 1], dtype=np.int64))
    return inputs, targets, torch.from_numpy(scored)


def evaluate_loss(
    model, ids: np.ndarray, chars: int, words: int, batch: int = 16, bptt: int = 256, autocast=None,
    overlap: int = DEFAULT_OVERLAP, vocab_size: int | None = None,
) -> LossMetrics:
    """Loss metrics of the model on a token array whose text has `chars` characters and `words` words.

    Every token but the first (which has no context) is scored; character and word counts
    are scaled to that share.
    """
    total, scored = total_nll(model, ids, batch, bptt, autocast, overlap, vocab_size=vocab_size)
    share = scored / max(len(ids), 1)
    loss = total.item() / max(scored, 1)
    return LossMetrics(loss=loss, tokens=scored, chars=round(chars * share), words=round(words * share))


def _safe_exp(x: float) -> float:
    """e^x, capped at e^700 (~1e304): a perplexity that large says the same, and stays valid JSON."""
    return math.exp(min(x, 700.0))
