"""Training speed on this machine, which `--size auto` plans with (lm/training/presets.py).

It times the loop's own step (lm/training/step.py), so what it measures is what the run does.
"""
from __future__ import annotations

import functools
import time

import numpy as np
import torch

from .._util import pick_device
from ..data.batching import batchify, window_at
from ..model import loss
from ..model.config import ModelConfig
from .config import TrainConfig
from .step import autocast_for, build_model, make_optimizer, pick_precision, train_step


def measure_speed(model_config: ModelConfig, config: TrainConfig, ids: np.ndarray, steps: int = 3) -> float:
    """Training tokens/s of this model and these settings on this machine: the median of a few
    full steps (forward, backward, clip, step) over the corpus's first windows, after one warm-up."""
    device = pick_device(config.device)
    model = build_model(model_config, model_config.vocab_size).to(device)
    optimizer = make_optimizer(model, config)
    autocast = autocast_for(device, pick_precision(config.precision, device))
    training_loss = functools.partial(loss.training_loss, model)
    streams = batchify(np.resize(ids, config.batch * (config.bptt * (steps + 1) + 1)), config.batch)  # a short text repeats
    model.train()
    times, state = [], None
    for step in range(steps + 1):
        inputs, targets = window_at(streams, step * config.bptt, config.bptt, device)
        started = time.perf_counter()
        _, state = train_step(model, training_loss, optimizer, inputs, targets, state, config.clip_norm, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:  # the first step allocates and picks kernels
            times.append(time.perf_counter() - started)
    return targets.numel() / float(np.median(times))
