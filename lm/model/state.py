"""The recurrent state: what a model carries from one call to the next.

An LSTM's state is a pair (h, c), a GRU's or plain RNN's is h alone; each tensor is
[layers, batch, hidden], even with batch_first=True. None means zeros. These helpers work on
any of the three forms, so no caller branches on the cell.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def zero_state(config: ModelConfig, batch: int, like: torch.Tensor):
    """Zero state for `batch` streams, on the device and in the dtype of `like` (the weights)."""
    h = torch.zeros((config.layers, batch, config.hidden), device=like.device, dtype=like.dtype)
    if config.cell == "lstm":
        return (h, torch.zeros_like(h))
    return h


def map_state(state, fn):
    """Apply `fn` to every tensor of a state (tensor, tuple of tensors or None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return tuple(map_state(s, fn) for s in state)


def detach_state(state):
    """Cut the graph at a window boundary (truncated BPTT) while keeping the values.

    Without it backpropagation would run back through every window since the start of the
    text (the examples' `repackage_hidden`).
    """
    return map_state(state, lambda t: t.detach())


def select_state(state, index: torch.Tensor):
    """Pick streams (dim 1 of every tensor) from a state, e.g. to branch a beam."""
    return map_state(state, lambda t: t.index_select(1, index))


def layer_state(state, layer: int):
    """One layer's part of a state: every tensor [1, batch, hidden]."""
    return map_state(state, lambda t: t[layer: layer + 1])


def stack_layers(states: list):
    """The whole state from each layer's part, the inverse of layer_state: [layers, batch, hidden]."""
    if isinstance(states[0], torch.Tensor):
        return torch.cat(states)
    return tuple(torch.cat(parts) for parts in zip(*states))
