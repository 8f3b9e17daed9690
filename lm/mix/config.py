"""The settings of what mixes with the model at inference time: the cache, the n-gram, dynamic evaluation.

It imports neither torch nor numpy, so the CLI can build its flags from these at no cost; the
code that uses them is in cache.py, ngram.py and adapt.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._util import ConfigBase, flag
from ..errors import ConfigError


@dataclass
class CacheConfig(ConfigBase):
    """The cache's settings; window 0 switches it off."""

    window: int = 0
    sharpness: float = 1.0
    weight: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.window > 0 and self.weight > 0

    def validate(self) -> None:
        if not isinstance(self.window, int) or self.window < 0:
            raise ConfigError(f"{flag('cache_window')} must be 0 (off) or a positive number of tokens, not {self.window!r}")
        if not 0 <= self.weight < 1:
            raise ConfigError(f"{flag('cache_weight')} must be at least 0 and below 1, not {self.weight}")
        if self.sharpness <= 0:
            raise ConfigError(f"{flag('cache_sharpness')} must be positive, not {self.sharpness}")


@dataclass
class NgramConfig(ConfigBase):
    """config.json's "ngram": how it was built and how much of it suggestions mix in."""

    order: int = 5
    min_count: int = 2
    weight: float = 0.0  # λ; 0 means off


@dataclass
class AdaptConfig(ConfigBase):
    """Settings of dynamic evaluation (bench/NOTES.md has the runs behind them)."""

    lr: float = 1e-4
    decay: float = 0.001  # share of the way back to the trained weights after each segment
    segment: int = 20  # tokens per gradient step (the paper's 20)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"{flag('adapt_lr')} must be positive, not {self.lr}")
        if not 0 <= self.decay < 1:
            raise ConfigError(f"{flag('adapt_decay')} must be at least 0 and below 1, not {self.decay}")
        if self.segment < 1:
            raise ConfigError(f"{flag('adapt_segment')} must be at least 1, not {self.segment}")
