"""Which vocabulary to build: TokenizerConfig and the tokenizer kinds the command line offers.

It imports neither numpy nor sentencepiece, so `lm --help` can build its flags from it at no
cost; the tokenizers themselves are in lm/data/tokenizer.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._util import ConfigBase
from ..errors import TokenizerError

KINDS = ("char", "unigram", "bpe", "word")
DEFAULT_SUBWORD_VOCAB = 4000  # unigram and bpe, when vocab_size is None


@dataclass
class TokenizerConfig(ConfigBase):
    """Which vocabulary to build. vocab_size=None picks a size that suits the kind."""

    kind: str = "char"
    vocab_size: int | None = None
    # word kind: rarer words become <unk>. None: 1 when the text already marks unknown words
    # with <unk> (its vocabulary is closed, as in WikiText), else 2.
    min_count: int | None = None

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise TokenizerError(f"unknown tokenizer {self.kind!r} — use one of {', '.join(KINDS)}")
        if self.vocab_size is not None and self.vocab_size <= 1:
            raise TokenizerError(
                f"--vocab-size must be at least 2, not {self.vocab_size} — pick a larger vocabulary"
            )
        if self.min_count is not None and self.min_count < 1:
            raise TokenizerError(f"--min-count must be at least 1, not {self.min_count} — pass 1 or more")
