"""Dynamic evaluation: the model keeps learning from the text it has already read.

Krause, Kahembwe, Murray and Renals (2018), "Dynamic evaluation of neural sequence models".
The text is read in segments of a few tokens. Each segment is scored first, with the weights
as they are; then one gradient step on that segment moves the weights toward the text, and a
decay pulls them back toward the trained weights θ0, so the model follows the text's topic and
names without forgetting what it learned:

    θ ← θ - lr · g / (sqrt(E[g²]) + ε) + decay · (θ0 - θ)

The step is divided by a running root mean square of the gradients (the RMS form of the
paper, with the mean square gathered from the text itself rather than the training data).
Scoring always precedes the step on the same tokens, so the figures are fair.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .config import AdaptConfig
from ..model.state import detach_state

SQUARE_DECAY = 0.99  # running mean of g²: about the last hundred segments
EPSILON = 1e-8


def adapt_to(model, ids, config: AdaptConfig | None = None) -> torch.Tensor:
    """Dynamic evaluation over a text, keeping the adapted weights: the model now leans toward
    the text (its topic, its names), e.g. before suggesting what follows it. Returns the nll."""
    return adapted_nll(model, ids, config, keep=True)


def adapted_nll(model, ids: np.ndarray, config: AdaptConfig | None = None, advance=lambda n: None,
                keep: bool = False) -> torch.Tensor:
    """Per-token nll of a text [len(ids) - 1] read with dynamic evaluation, one stream.

    The model's weights are restored afterwards unless `keep`. Needs float weights (not int8).
    """
    return adapted_read(model, ids, config, advance, keep)[1]


def adapted_read(model, ids: np.ndarray, config: AdaptConfig | None = None, advance=lambda n: None,
                 keep: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """As `adapted_nll`, with the feature vector at each position [len(ids) - 1, dim] first: what
    a continuous cache remembers (lm/mix/cache.py), as the adapting model saw it at the time."""
    config = config or AdaptConfig()
    config.validate()
    params = _float_params(model)
    trained = [p.detach().clone() for p in params]
    square = [torch.zeros_like(p) for p in params]
    device = params[0].device
    ids = torch.tensor(np.asarray(ids), dtype=torch.long, device=device)
    was_training = model.training
    model.eval()  # no dropout: the steps follow the text, not noise
    nll, features, state, steps = [], [], None, 0
    try:
        for at in range(0, len(ids) - 1, config.segment):
            chunk = ids[at: at + config.segment + 1][None]  # [1, time + 1]
            steps += 1
            hidden, token_nll, state = _learn(model, chunk, state, params, trained, square, config, steps)
            features.append(hidden[0].float().cpu())
            nll.append(token_nll.cpu())
            advance(len(token_nll))
    finally:
        with torch.no_grad():
            for p, t in zip(params, trained if not keep else ()):
                p.copy_(t)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not nll:
        return torch.zeros(0, model.config.emb), torch.zeros(0)
    return torch.cat(features), torch.cat(nll)


class Adapter:
    """Dynamic evaluation as a text grows, for a model that keeps the adapted weights: feed it the
    text's token ids as they are read, and every `segment` of them it takes the step that
    `adapted_read` takes on the same segment (SuggestionSession's `adapt` option)."""

    def __init__(self, model, config: AdaptConfig | None = None):
        self.model, self.config = model, config or AdaptConfig()
        self.config.validate()
        self.params = _float_params(model)
        self.trained = [p.detach().clone() for p in self.params]
        self.square = [torch.zeros_like(p) for p in self.params]
        self.steps, self.pending, self.state = 0, [], None  # ids not yet learned from, and the state before them

    def read(self, ids) -> None:
        """Take in more of the text; learn from each full segment."""
        self.pending.extend(int(i) for i in ids)
        while len(self.pending) > self.config.segment:
            chunk = torch.tensor([self.pending[: self.config.segment + 1]], device=self.params[0].device)
            self.steps += 1
            self.model.eval()
            _, _, self.state = _learn(self.model, chunk, self.state, self.params, self.trained, self.square,
                                      self.config, self.steps)
            self.model.zero_grad(set_to_none=True)
            del self.pending[: self.config.segment]  # its last id starts the next segment


def _float_params(model) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.dtype.is_floating_point]
    int8 = not isinstance(getattr(getattr(model, "rnn", None), "weight_ih_l0", None), torch.Tensor)  # quantized cells
    if not params or int8 or any(not p.requires_grad for p in params):
        raise ConfigError("dynamic evaluation needs the float weights — evaluate with --fp32")
    return params


def _learn(model, chunk, state, params, trained, square, config: AdaptConfig, steps: int):
    """Score one segment (chunk [1, time + 1]) with the weights as they are, then step on it.
    Returns its features [1, time, dim] and nll [time] (detached) and the state after it."""
    hidden, state = model.features(chunk[:, :-1], state)
    token_nll = F.cross_entropy(model.output(hidden)[0].float(), chunk[0, 1:], reduction="none")  # [time]
    model.zero_grad(set_to_none=True)
    token_nll.mean().backward()
    _step(params, trained, square, config, steps)
    return hidden.detach(), token_nll.detach(), detach_state(state)


@torch.no_grad()
def _step(params, trained, square, config: AdaptConfig, steps: int) -> None:
    bias = 1 - SQUARE_DECAY ** steps  # the running mean starts at zero: correct it as Adam does
    for p, t, s in zip(params, trained, square):
        if p.grad is None:
            continue
        s.mul_(SQUARE_DECAY).addcmul_(p.grad, p.grad, value=1 - SQUARE_DECAY)
        p.addcdiv_(p.grad, (s / bias).sqrt_().add_(EPSILON), value=-config.lr)
        if config.decay:
            p.add_(t - p, alpha=config.decay)


def perplexity(nll: torch.Tensor) -> float:
    return math.exp(min(nll.mean().item(), 700))
