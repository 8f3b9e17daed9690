"""Batching for truncated backpropagation through time.

The token stream is cut into `batch` equal streams that are read in parallel. Drawn with the
streams as columns (as the PyTorch word_language_model example does), windows of `bptt`
tokens walk down them:

    stream:   0   1   2   3          a long text  a b c d e f g h i j k l m n o p q r s t u v w x
            +---+---+---+---+        cut into 4 streams of 6 tokens:
    window0 | a | g | m | s |
            | b | h | n | t |        The target of each position is the token below it, so the
            | c | i | o | u |        state after window k is exactly the right start for k+1.
            +---+---+---+---+
    window1 | d | j | p | v |        In memory the streams are rows: data is [batch, length],
            | e | k | q | w |        and a window is data[:, i:i+bptt] (ids are [batch, time]).
            | f | l | r | x |
            +---+---+---+---+
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def batchify(ids: np.ndarray, batch: int) -> np.ndarray:
    """Cut a 1-D id array into `batch` streams; the ragged tail is dropped. A view, no copy."""
    length = len(ids) // batch
    return ids[: batch * length].reshape(batch, length)  # [batch, length]


def count_windows(length: int, bptt: int) -> int:
    """Windows per pass over streams of `length` tokens (the last may be shorter)."""
    return max(0, (length - 1 + bptt - 1) // bptt)


def window(streams: np.ndarray, bptt: int, index: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of window `index` down the streams, each [batch, <=bptt].

    Targets are inputs shifted by one token, so the last target of window k is the first
    input of window k+1 in every stream.
    """
    return window_at(streams, index * bptt, bptt, device)


def window_at(streams: np.ndarray, start: int, length: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the `length` positions from `start` down the streams (fewer at the end)."""
    device = torch.device(device)
    pin = device.type == "cuda"  # pinned memory lets the copy overlap the GPU's work
    chunk = torch.from_numpy(np.ascontiguousarray(streams[:, start : start + length + 1]).astype(np.int64))
    if pin:
        chunk = chunk.pin_memory()
    chunk = chunk.to(device, non_blocking=pin)  # [batch, t+1]
    return chunk[:, :-1], chunk[:, 1:]


def windows(
    streams: np.ndarray, bptt: int, start: int = 0, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every window down the streams from window `start`, in order."""
    for index in range(start, count_windows(streams.shape[1], bptt)):
        yield window(streams, bptt, index, device)
