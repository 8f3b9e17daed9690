"""How to evaluate: EvalConfig, the dataset splits the command line offers, and the quiet EvalProgress.

It imports neither torch nor numpy, so the CLI can build `lm eval`'s flags from it at no cost;
the evaluation itself is in lm/evaluate/evaluation.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._util import ConfigBase, flag
from ..errors import ConfigError
from ..mix.config import AdaptConfig
from ..model.config import DEFAULT_OVERLAP

SPLITS = ("test", "valid", "train")


@dataclass
class EvalConfig(ConfigBase):
    """How to evaluate. CLI flags share these names; the defaults live only here."""

    batch: int = 16  # parallel streams (1: the exact single stream)
    bptt: int = 256  # tokens per window
    overlap: int = DEFAULT_OVERLAP  # priming tokens per stream after the first
    max_words: int | None = None  # evaluate only the first N whitespace words
    keyboard: bool = True  # also measure top-k accuracy and keystroke savings
    keyboard_words: int = 2000  # keyboard metrics on the first N words (they are slow)
    typing: bool = False  # also type the text with slips through the keyboard (lm/evaluate/typing.py)
    typing_words: int = 300  # the typing simulation on the first N words
    split: str = "test"  # which split of an hf: dataset
    encoding: str = "utf-8"
    device: str = "auto"
    int8: bool = False  # int8 weights on the CPU, as lm suggest, generate and repl run them
    cache: bool = True  # also report the figures with the checkpoint's continuous cache (when tuned)
    tune_cache: bool = False  # first tune the cache (and a word model's n-gram) on the checkpoint's validation text
    ngram: bool = True  # also report the figures with the checkpoint's n-gram (word models, when it has one)
    adapt: bool = False  # also read the text with dynamic evaluation (lm/mix/adapt.py)
    adapt_lr: float = AdaptConfig.lr
    adapt_decay: float = AdaptConfig.decay

    def validate(self) -> None:
        for name in ("batch", "bptt", "keyboard_words", "typing_words"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{flag(name)} must be positive, not {getattr(self, name)} — pass 1 or more")
        if self.overlap < 0:
            raise ConfigError(f"--overlap must be 0 or more, not {self.overlap} — 0 cuts streams at zero state")
        if self.max_words is not None and self.max_words <= 0:
            raise ConfigError(f"--max-words must be positive, not {self.max_words} — leave it out to evaluate everything")
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, not {self.split!r} — pick one of those")
        if self.adapt:
            AdaptConfig(self.adapt_lr, self.adapt_decay).validate()
            if self.int8:
                raise ConfigError("--adapt takes gradient steps, which int8 weights cannot — drop --int8")
        if self.int8 and self.device not in ("auto", "cpu"):
            raise ConfigError(f"--int8 runs on the CPU, not --device {self.device} — drop one of the two")


class EvalProgress:
    """Receives evaluation events. This base class shows nothing: it is the quiet progress."""

    def start(self, task: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...
