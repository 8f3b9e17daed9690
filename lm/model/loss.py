"""The loss: how well the model's predictions match the next tokens.

It belongs to the trainer and the evaluator, not to the model: each function takes a model
and goes through its stages. With the adaptive softmax the targets are scored from the
features directly, without the full [batch, time, vocab] distribution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .network import LanguageModel, full_precision


def token_nll(model, ids: torch.Tensor, targets: torch.Tensor, state=None):
    """Next-token negative log-likelihood of each of `targets` after `ids`, and the new state.

    Args:
        model: a LanguageModel, or anything with the contract `model(ids, state) -> (logits, state)`.
        ids, targets: [batch, time] token ids (targets are ids shifted by one).
    Returns:
        nll [batch, time] in nats (fp32) and the new state: the cross-entropy of the logits.
    """
    if _adaptive(model):
        features, state = model.features(ids, state)  # [batch, time, emb]
        return _adaptive_nll(model, features, targets), state
    logits, state = model(ids, state)  # through forward, which wrappers of the model may watch
    return cross_entropy(logits, targets), state


def mean_loss(model, ids: torch.Tensor, targets: torch.Tensor, state=None):
    """Mean next-token cross-entropy of `targets` [batch, time] after `ids`, and the new state."""
    nll, state = token_nll(model, ids, targets, state)
    return nll.mean(), state


def training_loss(model: LanguageModel, ids: torch.Tensor, targets: torch.Tensor, state=None):
    """What training minimizes and what it reports: (objective, mean cross-entropy, new state).

    The objective adds to the cross-entropy activation regularization, ar * mean(h^2) of
    the last layer's dropped-out output, and temporal activation regularization,
    tar * mean((h_t - h_{t-1})^2) of that output before dropout (Merity et al. 2017, 4.6):
    they keep the activations small and slowly changing.
    """
    hidden, state = model.rnn_output(ids, state)  # [batch, time, hidden], before its dropout
    dropped = model.drop(hidden)  # model.features, with both activations kept for the penalties
    loss = _features_nll(model, model.project(dropped), targets).mean()
    objective = loss
    if model.config.ar:
        objective = objective + model.config.ar * dropped.float().pow(2).mean()
    if model.config.tar:
        objective = objective + model.config.tar * (hidden[:, 1:] - hidden[:, :-1]).float().pow(2).mean()
    return objective, loss, state


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nll [batch, time] of targets under logits [batch, time, vocab], in fp32."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view(targets.shape)


def _features_nll(model: LanguageModel, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nll [batch, time] of targets given the output layer's input [batch, time, emb]."""
    if _adaptive(model):
        return _adaptive_nll(model, features, targets)
    return cross_entropy(model.output(features), targets)


def _adaptive_nll(model: LanguageModel, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The adaptive softmax's nll [batch, time] of each target, from its head and the target's cluster only."""
    with full_precision(features):
        logp = model.adaptive(features.flatten(0, 1).float(), targets.flatten()).output  # [batch * time]
    return -logp.view(targets.shape)


def _adaptive(model) -> bool:
    return isinstance(model, LanguageModel) and model.config.softmax == "adaptive"
