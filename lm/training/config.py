"""How to train: TrainConfig, the optimizers' defaults and the other choices the CLI offers.

Imports neither torch nor numpy, so the CLI can build its flags from these without loading them.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .._util import ConfigBase, flag
from ..data.config import TokenizerConfig
from ..errors import ConfigError
from ..model.config import ModelConfig
from .presets import SIZES

OPTIMIZERS = ("adamw", "sgd", "rmsprop")
# AdamW at 6e-3 beat 3e-3 by 2-16 % in every run of 5 to 15 minutes tried (bench/NOTES.md, "The rate").
DEFAULT_LR = {"adamw": 6e-3, "sgd": 20.0, "rmsprop": 1e-3}
# Plain SGD at lr 20 takes the classic example's settings (Zaremba et al. 2014; PyTorch's
# word_language_model): no weight decay (coupled decay at lr 20 would shrink every weight by a
# fifth each step) and a tight clip; AdamW's decay is decoupled and mild.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 0.0, "rmsprop": 0.0}
DEFAULT_CLIP = {"adamw": 1.0, "sgd": 0.25, "rmsprop": 1.0}
SCHEDULES = ("cosine", "constant", "plateau")
AVERAGES = ("none", "ema", "asgd")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig(ConfigBase):
    """How to train. CLI flags share these names; the defaults live only here."""

    batch: int = 32
    bptt: int = 64
    optimizer: str = "adamw"
    lr: float | None = None  # None: the optimizer's default in DEFAULT_LR
    weight_decay: float | None = None  # None: the optimizer's default in DEFAULT_WEIGHT_DECAY
    clip: float | None = None  # gradient-norm clip; None: DEFAULT_CLIP; 0: off
    schedule: str = "cosine"  # plateau: divide by 4 whenever validation does not improve
    warmup: int = 50  # steps of linear warm-up
    epochs: int = 10
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    eval_every: int = 0  # steps; 0 = once an epoch
    patience: int = 3  # evaluations without improvement before stopping
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast where the hardware runs it fast, else fp32
    # An averaged copy of the weights, kept beside them and saved when it validates better:
    # ema (an exponential moving average), asgd (an equal average of every step from the
    # first evaluation without improvement: NT-ASGD, Merity et al. 2017), or none. The EMA is
    # the default: AdamW's weights jump from window to window (validation moves by ±5 % within
    # a few steps), and the average of the last ~200 steps does not (bench/NOTES.md).
    average: str = "ema"
    ema_decay: float = 0.995
    vary_bptt: bool = False  # window lengths drawn around --bptt, the rate scaled to match
    tune_cache: bool = True  # at the end, tune the continuous cache (lm/mix/cache.py) on the validation text
    # A preset of lm/training/presets.py for a new run, "auto" to pick one from the corpus and the time
    # (the CLI's default), or None: the settings exactly as given.
    size: str | None = None

    def validate(self) -> None:
        for name in ("batch", "bptt", "epochs", "log_every", "max_steps", "max_time", "lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                default = getattr(TrainConfig, name)
                hint = "leave it out" + ("" if default is None else f" for the default {default}")
                raise ConfigError(f"{flag(name)} must be positive, not {value} — pass a number above 0, or {hint}")
        for name in ("eval_every", "warmup", "patience", "weight_decay", "clip"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)} cannot be negative, not {getattr(self, name)} — pass 0 or more (0 switches it off)")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be between 0 and 1, not {self.ema_decay} — 0.999 averages about the last thousand steps")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS),
                              ("average", AVERAGES), ("size", (None, "auto", *SIZES))):
            if getattr(self, name) not in choices:
                names = ", ".join(c for c in choices if c)
                raise ConfigError(f"{flag(name)} must be one of {names}, not {getattr(self, name)!r} — pick one of those")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.optimizer]

    @property
    def clip_norm(self) -> float:
        return self.clip if self.clip is not None else DEFAULT_CLIP[self.optimizer]


class Stop(str, Enum):
    """Why a run ended (the value is what checkpoints, JSON and the summary table show)."""

    DONE = "done"  # every epoch ran
    MAX_STEPS = "max-steps"
    MAX_TIME = "max-time"
    EARLY_STOP = "early-stop"  # --patience evaluations without improvement
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: saved, and resumable

    def __str__(self) -> str:
        return self.value


def run_configs(settings: dict) -> tuple[ModelConfig, TokenizerConfig, TrainConfig]:
    """A run's model, tokenizer and training configs from one flat dict of settings (`lm train`'s
    flags): each takes the keys it knows. vocab_size is the tokenizer's; the model's is set from
    the trained tokenizer."""
    model = ModelConfig.from_dict({key: value for key, value in settings.items() if key != "vocab_size"})
    return model, TokenizerConfig.from_dict(settings), TrainConfig.from_dict(settings)
