"""Weight averaging: a copy of the weights that follows them, kept beside them and saved when
it validates better (TrainConfig.average).

- ema: an exponential moving average, from the first step. AdamW's weights jump from window
  to window; the average of the last few hundred steps does not (bench/NOTES.md).
- asgd: an equal average of every step from the first evaluation without improvement
  (NT-ASGD, Merity et al. 2017).
- none: no copy.

Every touch of the average goes through `WeightAverage`: the loop updates it after each step,
evaluation reads its weights, the checkpoint saves and restores it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..model.network import LanguageModel
from .config import TrainConfig
from .saving import load_weights

PREFIX, COUNT = "average.", "average_count"  # the average's keys in the resume tensors


class WeightAverage:
    """The run's averaged weights; before averaging starts (or with average "none") it holds none."""

    def __init__(self, model: LanguageModel, config: TrainConfig):
        self.kind, self.decay = config.average, config.ema_decay
        self.averaged: AveragedModel | None = None
        if self.kind == "ema":  # asgd starts when validation stalls
            self._start(model, self.kind)

    @property
    def module(self) -> LanguageModel | None:
        """The averaged weights as a model, or None before averaging starts."""
        return self.averaged.module if self.averaged is not None else None

    def update(self, model: LanguageModel) -> None:
        """Take the weights after a step into the average (the first update copies them)."""
        if self.averaged is not None:
            self.averaged.update_parameters(model)

    def start_on_stall(self, model: LanguageModel) -> bool:
        """Validation stopped improving: asgd starts averaging now. True when it started."""
        if self.kind != "asgd" or self.averaged is not None:
            return False
        self._start(model, "asgd")
        return True

    def tensors(self) -> dict[str, torch.Tensor]:
        """The average's weights and step count, for the resume tensors (none before it starts)."""
        if self.averaged is None:
            return {}
        return {**{PREFIX + k: v for k, v in self.averaged.module.state_dict().items()}, COUNT: self.averaged.n_averaged}

    def restore(self, model: LanguageModel, tensors: dict[str, torch.Tensor], out: Path) -> None:
        """Put back the average saved in the resume tensors, the model's weights already restored.

        An average saved by a run with another --average goes on as an equal average under
        --average none; an ema never saved starts again from the restored weights.
        """
        self.averaged = None
        if COUNT in tensors:
            self._start(model, "asgd" if self.kind == "none" else self.kind)
            load_weights(self.averaged.module, tensors, PREFIX, out)
            self.averaged.n_averaged.copy_(tensors[COUNT])
        elif self.kind == "ema":
            self._start(model, self.kind)

    def _start(self, model: LanguageModel, kind: str) -> None:
        ema = get_ema_multi_avg_fn(self.decay) if kind == "ema" else None
        self.averaged = AveragedModel(model, multi_avg_fn=ema)
