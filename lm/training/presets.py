"""Model sizes people ask for, as named presets of the model and training settings.

`lm train --size tiny` fills every setting the preset names, unless the command line sets it:
the preset is a starting point, never a cage.

- tiny: a phone-keyboard model. The published Gboard model was a single-layer CIFG LSTM of
  1.4 M parameters (Hard et al. 2018); one LSTM layer of 256 over 96-wide embeddings is
  1.4 M parameters with a 10,000-word vocabulary (most of it the embedding), 1.4 MB in int8.
- small: quick to train on a laptop CPU.
- medium: the defaults (2×512 over 256-wide embeddings).
- classic: the recipe of PyTorch's word_language_model example (after Zaremba et al. 2014): 2×200
  over 200-wide embeddings tied to the output layer without a projection, plain SGD at lr 20
  with a tight clip, small steps of 20 windows of 35. For a word vocabulary it learns the most
  per minute, so the budget rule takes it for runs too short to feed the medium model
  (bench/NOTES.md, "Issue 33").
- large: an AWD-LSTM-style model for a GPU (Merity et al. 2017): 3 layers of 1,150, 400-wide
  embeddings, variational dropout, embedding dropout, weight drop, AR/TAR, SGD at a constant
  rate with averaging from the first stall (NT-ASGD), variable BPTT windows.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, fields, replace

from ..errors import ConfigError
from ..model.config import ADAPTIVE_MIN_VOCAB

SIZES: dict[str, dict[str, dict]] = {
    "tiny": {"model": dict(layers=1, hidden=256, emb=96, dropout=0.1), "train": {}},
    "small": {"model": dict(layers=2, hidden=256, emb=128, dropout=0.2), "train": {}},
    "medium": {"model": dict(layers=2, hidden=512, emb=256, dropout=0.3), "train": {}},
    "classic": {
        # Without the projection: plain SGD trains the tied layer behind one slowly (bench/NOTES.md).
        "model": dict(layers=2, hidden=200, emb=200, dropout=0.2, projection=False),
        # SGD's own rate (20) and clip (0.25) come with the optimizer, so --optimizer adamw given
        # beside this recipe gets AdamW's.
        "train": dict(optimizer="sgd", batch=20, bptt=35, schedule="plateau"),
    },
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
    if not model_config.projection and model_config.hidden != model_config.emb and "projection" not in given:
        model_config.projection = True  # --hidden or --emb given beside a preset without one
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
# A word vocabulary with a tied full output layer learns fastest under the classic recipe's plain
# SGD and small steps; AdamW's larger steps only catch up once the run is long enough to feed the
# medium model. So when the time cannot feed medium, such a vocabulary gets the classic recipe.
# Characters (a few dozen rows to learn) and the adaptive softmax's vocabularies keep AdamW.
CLASSIC_VOCAB = (1_000, ADAPTIVE_MIN_VOCAB)  # from, below
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
    max_epochs: float = math.inf  # --epochs, which ends a timed run too when it comes first

    @property
    def useful_tokens(self) -> float:
        return useful_tokens(self.train_tokens, self.epochs)

    def to_dict(self) -> dict:
        """What config.json records of the plan."""
        return {"size": self.size, "tokens_per_s": self.tokens_per_s, "epochs": self.epochs, "seen_tokens": self.seen_tokens}

    def at_speed(self, tokens_per_s: float, seconds: float) -> "Plan":
        """The same plan for a run of `seconds` at this speed (a timed run still stops after --epochs)."""
        seen = min(tokens_per_s * seconds, self.max_epochs * self.train_tokens)
        return replace(self, tokens_per_s=tokens_per_s, seen_tokens=seen, epochs=seen / max(self.train_tokens, 1))

    def dropout(self, preset_dropout: float) -> float:
        """The dropout for this run: the preset's, lowered for a run of few epochs."""
        return min(preset_dropout, SHORT_RUN_DROPOUT) if self.epochs < SHORT_RUN_EPOCHS else preset_dropout

    def describe(self, model_config, train_config, seconds: float | None) -> str:
        shape = f"{model_config.layers}×{model_config.hidden} {model_config.cell.upper()}, emb {model_config.emb}" \
            + ("" if model_config.projection else " tied without a projection")
        optimizer = {"adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}[train_config.optimizer]
        average = {"ema": f", EMA {train_config.ema_decay:g}", "asgd": ", ASGD"}.get(train_config.average, "")
        settings = (f"{shape}, dropout {model_config.dropout:g}, {optimizer} lr {train_config.learning_rate:g}{average}, "
                    f"batch {train_config.batch}×{train_config.bptt}")
        if seconds is None:
            budget = f"{train_config.epochs} epochs"
        else:
            budget = f"{_duration(seconds)} at {self.tokens_per_s:,.0f} tokens/s ≈ {self.epochs:.1f} epochs"
            if self.tokens_per_s * seconds > self.seen_tokens:
                budget += f" (--epochs stops it first: the time would buy {self.tokens_per_s * seconds / self.train_tokens:.1f})"
        return f"Size {self.size} ({settings}) for {budget} of {self.train_tokens / 1e6:.1f} M tokens"


def choose_size(train_tokens: int, seconds: float | None, epochs: int, weights: dict[str, int], speed,
                vocab_size: int) -> Plan:
    """The largest of AUTO_SIZES whose run gets ≥ TOKENS_PER_WEIGHT useful tokens per recurrent
    weight; with a time budget too short for the largest, the classic recipe for a word vocabulary.

    weights: recurrent weights of each size (lm.training.presets.recurrent_weights).
    speed: size -> training tokens/s on this machine (called only with a time budget).
    """
    plan = None
    for size in reversed(AUTO_SIZES):
        plan = _plan(size, train_tokens, seconds, epochs, speed)
        if plan.useful_tokens >= TOKENS_PER_WEIGHT * weights[size]:
            break
    if seconds is not None and plan.size != AUTO_SIZES[-1] and CLASSIC_VOCAB[0] <= vocab_size < CLASSIC_VOCAB[1]:
        return _plan("classic", train_tokens, seconds, epochs, speed)
    return plan  # at worst the smallest: nothing smaller to fall back to


def _plan(size: str, train_tokens: int, seconds: float | None, epochs: int, speed) -> Plan:
    """A size's run: for the time at its speed here, or for the epochs."""
    if seconds is None:
        return Plan(size, None, float(epochs * train_tokens), float(epochs), train_tokens)
    return Plan(size, None, 0.0, 0.0, train_tokens, epochs).at_speed(speed(size), seconds)


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
