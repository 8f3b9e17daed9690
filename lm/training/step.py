"""One training step and the parts it is made of: the model, the precision, the optimizer.

`train_step` is the loop's own step (lm/training/trainer.py); lm/training/speed.py times the
same function, so the speed `--size auto` plans with is the speed the loop runs at.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import torch

from ..errors import ConfigError
from ..model.config import ModelConfig
from ..model.network import LanguageModel
from ..model.state import detach_state
from .config import TrainConfig


def build_model(model_config: ModelConfig, vocab_size: int) -> LanguageModel:
    """A new model for this vocabulary, its softmax and cutoffs made concrete (as saved)."""
    model_config = replace(model_config, vocab_size=vocab_size)
    model_config.validate()
    return LanguageModel(model_config.resolved())


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX): there it is 2-4x fp32."""
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a private probe: absent means we cannot tell
        return False


def pick_precision(name: str, device: torch.device) -> str:
    """The precision a run uses: bf16 autocast on GPUs and bf16-capable CPUs unless told otherwise."""
    if name == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_fast_bf16() else "fp32"
    if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        raise ConfigError("--precision bf16 was asked for but this CPU has no fast bf16 — use --precision fp32")
    return name


def autocast_for(device: torch.device, precision: str):
    """Matrix products in bf16, weights, optimizer state and the loss in fp32."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(model: LanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer config.optimizer names, at config's rate and weight decay."""
    lr = config.learning_rate
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=config.decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, weight_decay=config.decay)
    # No weight decay on biases and the embedding's 1-D companions (AdamW convention).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def train_step(model: LanguageModel, training_loss, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor, state, clip_norm: float, autocast):
    """Forward and backward over one window, clip, step.

    Args:
        training_loss: (inputs, targets, state) -> (objective, loss, state): the model's
            lm.model.loss.training_loss, through DDP when several workers run.
        inputs, targets: [batch, time] token ids.
        state: the state carried from the window before (detached), or None for zeros.
    Returns:
        The plain loss (a device scalar, not read back) and the new state, detached.
    """
    # The objective adds AR/TAR to the loss when they are on; the log shows the plain loss.
    with autocast:
        objective, loss, state = training_loss(inputs, targets, state)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    # Clip the gradient norm: RNN gradients can explode (Pascanu et al. 2013).
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    # Backpropagation stops at the window's start: the next window gets the values, not the graph.
    return loss, detach_state(state)
