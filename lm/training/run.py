"""A run's bookkeeping, in named parts: what it reads (Texts), how long it goes (RunLength),
how far it has come (Counters), the loss since the last log line (LossWindow), what its
folder receives (Folder), and the Run that holds them with the model and its optimizer.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._util import ConfigBase
from ..data.batching import count_windows
from ..data.lexicon import Lexicon
from ..data.tokenizer import Tokenizer
from ..mix.ngram import Ngram
from ..model.network import LanguageModel
from .averaging import WeightAverage
from .config import TrainConfig
from .forecast import Forecast
from .progress import Progress

@dataclass
class Counters(ConfigBase):
    """How far a run has come; saved with every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # where the next window starts within the epoch's streams
    elapsed: float = 0.0  # seconds of this run, resumed parts included
    tokens: int = 0
    best_loss: float = math.inf
    bad_evals: int = 0  # evaluations since the last improvement
    metrics_log: list = field(default_factory=list)
    best_record: dict = field(default_factory=dict)
    plateau_scale: float = 1.0  # the plateau schedule's divisions so far

    def advance(self, length: int, tokens: int, stream_length: int) -> None:
        """Count one step over windows of `length` positions and `tokens` targets (all workers')."""
        self.step, self.position, self.tokens = self.step + 1, self.position + length, self.tokens + tokens
        if self.position >= stream_length - 1:  # every position has been a target
            self.epoch, self.position = self.epoch + 1, 0

    def restore(self, saved: dict) -> None:
        """Take the counters saved with a checkpoint, in place (the loop holds this object)."""
        vars(self).update(vars(Counters.from_dict(saved)))


@dataclass
class Texts:
    """The token ids a run reads."""

    streams: np.ndarray  # [batch, length] this worker's rows of the training ids
    valid: np.ndarray  # [tokens] the validation ids
    valid_chars: int
    valid_words: int
    train: np.ndarray  # [tokens] the whole training text (the n-gram counts it)


@dataclass(frozen=True)
class RunLength:
    """How long a run is planned to go."""

    steps_per_epoch: int
    total_steps: int
    max_time: float | None  # seconds

    @classmethod
    def of(cls, stream_length: int, config: TrainConfig) -> "RunLength":
        per_epoch = count_windows(stream_length, config.bptt)
        planned = per_epoch * config.epochs
        return cls(per_epoch, min(planned, config.max_steps) if config.max_steps else planned, config.max_time)

    def fraction_done(self, counters: Counters) -> float:
        """How far the run has come, by steps or (with max_time) by time, whichever is further."""
        fraction = counters.step / max(self.total_steps, 1)
        if self.max_time:
            fraction = max(fraction, counters.elapsed / self.max_time)
        return min(fraction, 1.0)


class LossWindow:
    """The training loss summed on the device since the last log line, and the tokens/s clock."""

    def __init__(self, device: torch.device, tokens: int):
        self.total = torch.zeros((), device=device)
        self.since_eval, self.since_eval_count = torch.zeros((), device=device), 0  # for the curves
        self.reset(tokens)

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach()  # no host sync per step
        self.count += 1
        self.since_eval += loss.detach()
        self.since_eval_count += 1

    def take_since_eval(self) -> float | None:
        """The mean training loss since the last evaluation (None when there is no finite one), and restart it."""
        mean = self.since_eval.item() / self.since_eval_count if self.since_eval_count else None
        self.since_eval.zero_()
        self.since_eval_count = 0
        return mean if mean is not None and math.isfinite(mean) else None

    def reset(self, tokens: int) -> None:
        self.total.zero_()
        self.count = 0
        self.tokens_at, self.time_at = tokens, time.perf_counter()

    def pause(self, seconds: float) -> None:
        """Leave time spent on something else (an evaluation) out of the next tokens/s."""
        self.time_at += seconds


@dataclass
class Folder:
    """What the run's checkpoint folder receives besides the training state."""

    out: Path
    tokenizer: Tokenizer
    lexicon: Lexicon  # the words suggestions may offer
    saved_config: dict  # what config.json records besides the model and the training settings
    best_weights: dict | None = None  # the best evaluation's weights (or their average)
    ngram: Ngram | None = None  # mixed into suggestions when it pays (word models; lm/mix/ngram.py)


@dataclass
class Rollbacks:
    """Roll-backs from a non-finite loss so far, and the learning rate's scale after them."""

    count: int = 0
    lr_scale: float = 1.0  # halved after each


@dataclass
class Run:
    """Everything one training run works with."""

    config: TrainConfig  # precision resolved
    device: torch.device
    model: LanguageModel
    optimizer: torch.optim.Optimizer
    average: WeightAverage
    texts: Texts
    length: RunLength
    folder: Folder
    counters: Counters = field(default_factory=Counters)
    state: object = None  # the hidden state carried from window to window
    rollbacks: Rollbacks = field(default_factory=Rollbacks)
    progress: Progress = field(default_factory=Progress)
    training_loss: Callable | None = None  # lm.model.loss.training_loss of the model, through DDP with several workers
    stop_requested: bool = False  # Ctrl-C or SIGTERM: stop after this step
    forecast: Forecast | None = None  # a new timed run's plan, checked once (lm/training/forecast.py)

    def fraction_done(self) -> float:
        return self.length.fraction_done(self.counters)
