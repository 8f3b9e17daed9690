"""The lexicon: the words a suggestion strip may offer, as a phone keyboard's dictionary.

Char and subword models can spell anything, and a small model spells non-words ("skl",
"reday"); a keyboard offers words only. The lexicon holds the words of the training text with
their counts (saved in the checkpoint as `lexicon.txt`, most frequent first), plus any the user
adds. Case variants are one entry: lookups are case-folded. Words are runs of letters as
lm.data.text defines them; punctuation is not a lexicon matter.
"""
from __future__ import annotations

import bisect
import re
from collections import Counter
from pathlib import Path

from ..errors import ConfigError
from .text import JOINERS
from .tokenizer import UNK

FILE = "lexicon.txt"
WORD = re.compile(rf"[^\W_]+(?:[{JOINERS}][^\W_]+)*")  # letters and digits, apostrophes inside


class Lexicon:
    """Words with their counts; `allows` and `allows_prefix` answer in O(log n)."""

    def __init__(self, counts: dict[str, int] | None = None):
        self.counts: Counter = Counter()
        self._sorted: list[str] = []
        self.version = 0  # changes with every `add`, so answers worked out from the words can be kept until then
        if counts:
            self.add(counts)

    @classmethod
    def from_text(cls, text: str) -> "Lexicon":
        """The words of a text with their counts (<unk> marks are no word)."""
        counts: Counter = Counter()
        for token, n in Counter(text.split()).items():  # each distinct token searched once: fast on 100 MB
            if token != UNK:
                for word in WORD.findall(token):
                    counts[word] += n
        return cls(counts)

    def add(self, counts: dict[str, int] | list[str]) -> None:
        """Add words (a list counts each once) and rebuild the sorted index."""
        items = counts.items() if isinstance(counts, dict) else ((w, 1) for w in counts)
        for word, n in items:
            self.counts[word.casefold()] += n
        self._sorted = sorted(self.counts)
        self.version += 1

    def __len__(self) -> int:
        return len(self.counts)

    def allows(self, word: str) -> bool:
        return word.casefold() in self.counts

    def allows_prefix(self, prefix: str) -> bool:
        """Whether some word of the lexicon starts with `prefix`."""
        key = prefix.casefold()
        i = bisect.bisect_left(self._sorted, key)
        return i < len(self._sorted) and self._sorted[i].startswith(key)

    def continuations(self, prefix: str, longest: int) -> set[str]:
        """The strings of 1 to `longest` characters that continue a case-folded `prefix` into the
        start of a word of the lexicon ("th", 2 -> {"e", "ey", "i", "is", ...})."""
        lo = bisect.bisect_left(self._sorted, prefix)
        hi = bisect.bisect_left(self._sorted, prefix + "\U0010ffff", lo)
        return continuations(self._sorted[lo:hi], len(prefix), longest)

    def save(self, folder: Path) -> str:
        lines = (f"{n}\t{w}\n" for w, n in self.counts.most_common())
        (Path(folder) / FILE).write_text("".join(lines), encoding="utf-8")
        return FILE

    @classmethod
    def load(cls, folder: Path) -> "Lexicon | None":
        """The lexicon saved in a checkpoint folder; None for checkpoints from before lexicons."""
        path = Path(folder) / FILE
        if not path.exists():
            return None
        counts = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            n, _, word = line.partition("\t")
            counts[word] = int(n)
        return cls(counts)


def continuations(words, start: int, longest: int) -> set[str]:
    """The strings of 1 to `longest` characters that follow position `start` in `words`."""
    return {word[start:start + n] for word in words for n in range(1, min(longest, len(word) - start) + 1)}


def read_words_file(path: str | Path) -> list[str]:
    """A user dictionary: one word a line (blank lines and surrounding spaces ignored).

    Raises:
        ConfigError: the file is missing, not UTF-8 text, or holds no word.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the words file {path}: {e.strerror or e} — check the path") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"the words file {path} is not UTF-8 text (byte at offset {e.start}) — "
                          "save it as UTF-8, one word a line") from None
    if "\0" in text:
        raise ConfigError(f"the words file {path} looks binary (a NUL byte) — give a text file, one word a line")
    words = [line.strip() for line in text.splitlines() if line.strip()]
    if not words:
        raise ConfigError(f"the words file {path} holds no words — give one word a line")
    return words
