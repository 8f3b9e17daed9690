"""How to suggest and how to generate: SuggestConfig, GenerationConfig, ReplConfig.

It imports neither torch nor numpy, so the CLI can build its flags from these at no cost; the
engine (engine.py), the sampler (sampler.py) and the REPL (repl.py) use them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .._util import flag
from ..errors import ConfigError

DEFAULT_MAX_TOKENS = 200  # when neither max_tokens nor max_words is given
TOKENS_PER_WORD = 32  # a max_words run also ends after this many tokens per word
HISTORY_LIMIT = 1024  # token ids a sampler remembers for the repetition guard
STOP_AT = ("sentence", "paragraph")


@dataclass
class SuggestConfig:
    """How many suggestions and how hard to search for them."""

    k: int = 3
    beam_width: int = 16  # live piece sequences per search step (16: the exhaustive top 3 at 96.7 % of keystrokes; bench/NOTES.md)
    max_depth: int = 16  # search steps after the typed prefix (char models: longest word)
    punctuation_min: float = 0.3  # punctuation is offered only when at least this likely
    any_word: bool = False  # char and subword models: offer spellings outside the lexicon too
    learn_after: int = 2  # a word typed and finished this often in a session joins its lexicon
    correct: bool = True  # the keyboard's forgiveness: correct finished words, fix slips in prefixes, swipes
    layout: str = "qwerty-en-us"  # the keyboard layout the slips are weighed on (a name or a JSON file)

    def validate(self) -> None:
        for name in ("k", "beam_width", "max_depth", "learn_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag(name)} must be a positive integer, not {value!r} — pass 1 or more")
        if not 0.0 <= self.punctuation_min <= 1.0:
            raise ConfigError(f"--punctuation-min must be in [0, 1], not {self.punctuation_min!r} — 0 offers all punctuation")


@dataclass
class GenerationConfig:
    """How to continue a text. The `lm generate` flags fill it by the same names."""

    n: int = 1  # samples drawn at once, as one batch
    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS, unless max_words is set
    max_words: int | None = None  # whitespace words of generated text
    stop_at: str | None = None  # "sentence" or "paragraph"
    stop: tuple[str, ...] = ()  # end after the token that completes one of these strings
    temperature: float = 0.8  # 0: greedy
    top_k: int = 0  # keep the k most likely tokens (0: off)
    top_p: float = 1.0  # keep the smallest set holding this much probability (1: off)
    repetition_penalty: float = 1.1  # on tokens seen in the last repetition_window (1: off)
    repetition_window: int = 64
    seed: int | None = None  # None: a fresh seed, reported on the Generation

    def validate(self) -> None:
        positive = {"n": self.n, "max_tokens": self.max_tokens, "max_words": self.max_words,
                    "repetition_window": self.repetition_window}
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{flag(name)} must be a positive integer, not {value!r} — pass 1 or more")
        if self.repetition_window > HISTORY_LIMIT:
            raise ConfigError(f"--repetition-window is at most {HISTORY_LIMIT}, not {self.repetition_window} — pick a smaller window")
        if not self.temperature >= 0:
            raise ConfigError(f"--temperature must be 0 or more, not {self.temperature!r} — 0 is greedy, 1 samples as trained")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"--top-k must be 0 (off) or a positive integer, not {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], not {self.top_p!r} — 1 switches it off, 0.9 is usual")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"--repetition-penalty must be above 0, not {self.repetition_penalty!r} — 1 switches it off")
        if self.stop_at is not None and self.stop_at not in STOP_AT:
            raise ConfigError(f"--stop-at must be one of {', '.join(STOP_AT)}, not {self.stop_at!r}")
        if any(not s for s in self.stop):
            raise ConfigError("--stop strings must not be empty — drop the empty one")

    @property
    def token_limit(self) -> int:
        """The most tokens one sample may take."""
        if self.max_tokens is not None:
            return self.max_tokens
        if self.max_words is not None:
            return self.max_words * TOKENS_PER_WORD
        return DEFAULT_MAX_TOKENS

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass
class ReplConfig(GenerationConfig):
    """Generation settings for a turn: by default the model finishes the sentence."""

    max_words: int | None = 30
    stop_at: str | None = "sentence"
    # A typed line goes through the keyboard (lm/suggest/keyboard.py) as on a phone, so each
    # finished word is kept or corrected before the model reads it; :correct off appends it as typed.
    correct: bool = True
