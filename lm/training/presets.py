"""Model sizes people ask for, as named presets of the model and training settings.

`lm train --size tiny` fills every setting the preset names, unless the command line sets it:
the preset is a starting point, never a cage.

- tiny: a phone-keyboard model. The published Gboard model was a single-layer CIFG LSTM of
  1.4 M parameters (Hard et al. 2018); one LSTM layer of 256 over 96-wide embeddings is
  1.4 M parameters with a 10,000-word vocabulary (most of it the embedding), 1.4 MB in int8.
- small: quick to train on a laptop CPU.
- medium: the defaults (2×512 over 256-wide embeddings).
- large: an AWD-LSTM-style model for a GPU (Merity et al. 2017): 3 layers of 1,150, 400-wide
  embeddings, variational dropout, embedding dropout, weight drop, AR/TAR, SGD at a constant
  rate with averaging from the first stall (NT-ASGD), variable BPTT windows.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, fields, replace

from ..errors import ConfigError

SIZES: dict[str, dict[str, dict]] = {
    "tiny": {"model": dict(layers=1, hidden=256, emb=96, dropout=0.1), "train": {}},
    "small": {"model": dict(layers=2, hidden=256, emb=128, dropout=0.2), "train": {}},
    "medium": {"model": dict(layers=2, hidden=512, emb=256, dropout=0.3), "train": {}},
    "large": {
        "model": dict(layers=3, hidden=1150, emb=400, dropout=0.4, locked_dropout=True, embedding_dropout=0.1,
                      weight_drop=0.5, ar=2.0, tar=1.0),
        "train": dict(optimizer="sgd", lr=30.0, batch=80, bptt=70, clip=0.25, weight_decay=1.2e-6, schedule="constant",
                      average="asgd", vary_bptt=True, epochs=500, patience=0),
    },
}


def apply_size(size: str, model_config, train_config, given: set[str] = frozenset()):
    """The configs with the preset's values, except the fields named in `given` (set by the user).

    Raises:
        ConfigError: an unknown size.
    """
    if size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, not {size!r} — pick one of those")
    preset = SIZES[size]
    for config, values in ((model_config, preset["model"]), (train_config, preset["train"])):
        known = {f.name for f in fields(config)}
        for name, value in values.items():
            if name in known and name not in given:
                setattr(config, name, value)
    return model_config, train_config


# The budget rule (`--size auto`): the largest preset the time can feed.
#
# Within a fixed time a larger model learns more from each token but reads fewer of them, and a
# small corpus read many times teaches less with each pass. The rule counts the tokens a size
# can read in the time, discounts repeats as data-constrained scaling does (Muennighoff et al.
# 2023: a repeated token is worth less with each epoch, with a half-life of about
# REPEAT_HALF_LIFE epochs), and takes the largest size that gets at least TOKENS_PER_WEIGHT
# such tokens per recurrent weight (embeddings excluded: a row learns only when its token
# appears). bench/NOTES.md ("Quality per minute") holds the runs behind the numbers.
AUTO_SIZES = ("tiny", "small", "medium")  # large is for a GPU and hours: by hand
TOKENS_PER_WEIGHT = 0.8
REPEAT_HALF_LIFE = 15.4
# A run that reads its corpus fewer than SHORT_RUN_EPOCHS times is still learning at its end,
# where dropout slows it more than it guards against overfitting: it gets SHORT_RUN_DROPOUT.
SHORT_RUN_EPOCHS = 4.0
SHORT_RUN_DROPOUT = 0.1


@dataclass
class Plan:
    """What `--size auto` chose and why."""

    size: str
    tokens_per_s: float | None  # measured on this machine for the chosen size (None: not timed)
    seen_tokens: float  # training tokens the run can read
    epochs: float  # passes over the corpus that buys
    train_tokens: int

    @property
    def useful_tokens(self) -> float:
        return useful_tokens(self.train_tokens, self.epochs)

    def dropout(self, preset_dropout: float) -> float:
        """The dropout for this run: the preset's, lowered for a run of few epochs."""
        return min(preset_dropout, SHORT_RUN_DROPOUT) if self.epochs < SHORT_RUN_EPOCHS else preset_dropout

    def describe(self, model_config, train_config, seconds: float | None) -> str:
        shape = f"{model_config.layers}×{model_config.hidden} {model_config.cell.upper()}, emb {model_config.emb}"
        optimizer = {"adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}[train_config.optimizer]
        average = {"ema": f", EMA {train_config.ema_decay:g}", "asgd": ", ASGD"}.get(train_config.average, "")
        settings = (f"{shape}, dropout {model_config.dropout:g}, {optimizer} lr {train_config.learning_rate:g}{average}, "
                    f"batch {train_config.batch}×{train_config.bptt}")
        if seconds is None:
            budget = f"{train_config.epochs} epochs"
        else:
            budget = f"{_duration(seconds)} at {self.tokens_per_s:,.0f} tokens/s ≈ {self.epochs:.1f} epochs"
        return f"Size {self.size} ({settings}) for {budget} of {self.train_tokens / 1e6:.1f} M tokens"


def choose_size(train_tokens: int, seconds: float | None, epochs: int, weights: dict[str, int],
                speed) -> Plan:
    """The largest of AUTO_SIZES whose run gets ≥ TOKENS_PER_WEIGHT useful tokens per recurrent weight.

    weights: recurrent weights of each size (lm.training.presets.recurrent_weights).
    speed: size -> training tokens/s on this machine (called only with a time budget).
    """
    plan = None
    for size in reversed(AUTO_SIZES):
        if seconds is None:
            rate, seen = None, float(epochs * train_tokens)
        else:
            rate = speed(size)
            seen = rate * seconds
        plan = Plan(size, rate, seen, seen / max(train_tokens, 1), train_tokens)
        if plan.useful_tokens >= TOKENS_PER_WEIGHT * weights[size]:
            return plan
    return plan  # the smallest: nothing smaller to fall back to


def useful_tokens(train_tokens: int, epochs: float) -> float:
    """Tokens read, with each pass after the first worth less (Muennighoff et al. 2023, eq. 5)."""
    if epochs <= 1:
        return train_tokens * epochs
    return train_tokens * (1 + REPEAT_HALF_LIFE * (1 - math.exp(-(epochs - 1) / REPEAT_HALF_LIFE)))


def recurrent_weights(size: str, model_config) -> int:
    """Weights of a preset's model outside its embedding (and the output layer tied to it)."""
    from ..model.network import LanguageModel  # the model module does not depend on this one
    config = replace(model_config, **SIZES[size]["model"])
    model = LanguageModel(config.resolved())
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("embedding", "decoder", "output")))


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
