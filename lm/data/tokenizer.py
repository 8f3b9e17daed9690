"""The tokenizer stage: character, sentencepiece subword (unigram / BPE) and word vocabularies.

A tokenizer is trained from the training text, saved inside the checkpoint folder and loaded
back exactly. All kinds share one small interface: `encode`, `decode`, `vocab_size`,
`pieces` (the text each id stands for) and `save`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from .._util import hash_text
from .config import DEFAULT_SUBWORD_VOCAB, TokenizerConfig
from ..errors import TokenizerError

UNK = "<unk>"
EOS = "<eos>"
SPM_SPACE = "\u2581"  # sentencepiece's visible space, "▁"
COUNT_CHUNK_CHARS = 1 << 22
# sentencepiece needs ~30 bytes of memory per character it trains on; 20 MB of text is plenty
# for any vocabulary here and keeps a 100 MB corpus's first run under 2 GB (bench/NOTES.md).
SPM_SAMPLE_CHARS = 20_000_000
SPM_SAMPLE_BLOCKS = 256  # a larger text is sampled as this many blocks spread over all of it


class Tokenizer:
    """Interface shared by every kind."""

    kind: str
    unk_id: int
    pieces: list[str]  # the text each id decodes to on its own ("" for byte pieces)
    word_level = False  # True when each token is a whole whitespace word (joined by spaces)

    @property
    def special_ids(self) -> set[int]:
        """Ids that stand for no text of their own (<unk>, <eos>)."""
        return {self.unk_id}

    def token_bytes(self, token: int, last_char: str) -> bytes:
        """The UTF-8 bytes `token` adds to a text that ends in `last_char`.

        A byte-fallback piece adds one byte, which may be part of a character; decode the
        bytes of consecutive tokens incrementally.
        """
        return self.pieces[token].encode("utf-8")

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids as a compact numpy array (int32)."""
        return np.asarray(self.encode(text), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def save(self, folder: Path) -> list[str]:
        """Write the tokenizer's files into `folder`; returns their names."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Content hash of the vocabulary, used to key the token cache."""
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    """One id per character seen in training, plus <unk> (id 0) for the rest."""

    kind = "char"
    unk_id = 0
    FILE = "tokenizer.json"

    def __init__(self, chars: list[str]):
        self.pieces = [""] + list(chars)  # <unk> decodes to nothing
        self.chars = list(chars)
        self._index = {c: i + 1 for i, c in enumerate(chars)}
        # Sorted code points let encode_array map a whole text with one searchsorted.
        points = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(points)
        self._sorted_points = points[self._order]

    @classmethod
    def train(cls, text: str, config: TokenizerConfig) -> "CharTokenizer":
        counts = Counter(text)
        chars = [c for c, _ in counts.most_common()]
        if config.vocab_size is not None:
            _check_fits(config, len(chars) + 1, f"{len(chars)} distinct characters and <unk>")
            chars = chars[: config.vocab_size - 1]
        return cls(sorted(chars))

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        pos = np.searchsorted(self._sorted_points, points)
        pos = np.minimum(pos, len(self._sorted_points) - 1)
        found = self._sorted_points[pos] == points
        return np.where(found, self._order[pos] + 1, self.unk_id).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.pieces[i] for i in ids)

    def save(self, folder: Path) -> list[str]:
        data = {"kind": self.kind, "chars": self.chars}
        (Path(folder) / self.FILE).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return [self.FILE]

    @classmethod
    def load(cls, folder: Path) -> "CharTokenizer":
        return cls(_read_json(Path(folder) / cls.FILE)["chars"])

    def fingerprint(self) -> str:
        return hash_text("char\0" + "".join(self.chars))


class WordTokenizer(Tokenizer):
    """Whitespace words; each line ends in <eos>, as in the WikiText and PTB benchmarks."""

    kind = "word"
    word_level = True
    FILE = "tokenizer.json"

    def __init__(self, words: list[str]):
        self.pieces = [UNK, EOS] + [w for w in words if w not in (UNK, EOS)]
        self.unk_id, self.eos_id = 0, 1
        self._index = {w: i for i, w in enumerate(self.pieces)}

    @classmethod
    def train(cls, text: str, config: TokenizerConfig) -> "WordTokenizer":
        counts: Counter = Counter()
        for start in range(0, len(text), COUNT_CHUNK_CHARS):  # chunks keep the word list small
            end = text.find("\n", start + COUNT_CHUNK_CHARS)
            counts.update(text[start : len(text) if end < 0 else end].split())
        marks_unknowns = counts.pop(UNK, 0) > 0
        counts.pop(EOS, None)
        min_count = config.min_count if config.min_count is not None else (1 if marks_unknowns else 2)
        kept = [(w, n) for w, n in counts.most_common() if n >= min_count]
        if config.vocab_size is not None:
            _check_fits(config, len(kept) + 2, f"{len(kept)} words seen at least {min_count} times, <unk> and <eos>")
            kept = kept[: max(config.vocab_size - 2, 0)]
        return cls([w for w, _ in kept])

    @property
    def special_ids(self) -> set[int]:
        return {self.unk_id, self.eos_id}

    def token_bytes(self, token: int, last_char: str) -> bytes:
        """<eos> ends the line; a word after anything but whitespace gets a space before it."""
        if token == self.eos_id:
            return b"\n"
        space = "" if not last_char or last_char.isspace() else " "
        return (space + self.pieces[token]).encode("utf-8")

    def encode(self, text: str) -> list[int]:
        index, unk = self._index, self.unk_id
        ids: list[int] = []
        lines = text.split("\n")
        for n, line in enumerate(lines):
            ids.extend(index.get(w, unk) for w in line.split())
            if n < len(lines) - 1:
                ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        at_line_start = True
        for i in ids:
            if i == self.eos_id:
                out.append("\n")
                at_line_start = True
                continue
            if not at_line_start:
                out.append(" ")
            out.append(self.pieces[i])
            at_line_start = False
        return "".join(out)

    def save(self, folder: Path) -> list[str]:
        data = {"kind": self.kind, "words": self.pieces[2:]}
        (Path(folder) / self.FILE).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return [self.FILE]

    @classmethod
    def load(cls, folder: Path) -> "WordTokenizer":
        return cls(_read_json(Path(folder) / cls.FILE)["words"])

    def fingerprint(self) -> str:
        return hash_text("word\0" + "\0".join(self.pieces))


class SentencePieceTokenizer(Tokenizer):
    """Unigram or BPE subwords from sentencepiece, with byte fallback so no text is lost.

    Trained with identity normalisation, no dummy prefix and whitespace kept as is, so
    decode(encode(text)) == text for any text.
    """

    FILE = "tokenizer.model"

    def __init__(self, model_proto: bytes, kind: str):
        import sentencepiece as spm

        self.kind = kind
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.unk_id = self.sp.unk_id()
        self.pieces = [self._piece_text(i) for i in range(self.sp.get_piece_size())]
        # sentencepiece reads a literal "▁" as a space; we spell it with its UTF-8 bytes.
        self._space_mark_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPM_SPACE.encode()]
        self._newline_id = self.sp.piece_to_id("\n")

    def token_bytes(self, token: int, last_char: str) -> bytes:
        if self.sp.is_byte(token):
            return bytes([int(self.sp.id_to_piece(token)[3:5], 16)])  # "<0xE2>"
        return self.pieces[token].encode("utf-8")

    def _piece_text(self, i: int) -> str:
        if self.sp.is_byte(i) or self.sp.is_unknown(i) or self.sp.is_control(i):
            return ""
        return self.sp.id_to_piece(i).replace(SPM_SPACE, " ")

    @classmethod
    def train(cls, text: str, config: TokenizerConfig) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        vocab_size = config.vocab_size or DEFAULT_SUBWORD_VOCAB
        lines = _sample_lines(text, SPM_SAMPLE_CHARS)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=config.kind,
                byte_fallback=True,
                character_coverage=0.9995,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                user_defined_symbols=["\n"],
                split_digits=True,
                bos_id=-1,
                eos_id=-1,
                hard_vocab_limit=config.vocab_size is not None,  # a size asked for is kept or refused
                train_extremely_large_corpus=False,
                minloglevel=2,
                num_threads=2,
            )
        except RuntimeError as e:
            raise TokenizerError(_sentencepiece_error(str(e), config.kind, vocab_size)) from None
        return cls(model.getvalue(), config.kind)

    def encode(self, text: str) -> list[int]:
        return self._encode_lines(text, threads=1)

    def encode_array(self, text: str) -> np.ndarray:
        return np.fromiter(self._encode_lines(text, threads=os.cpu_count() or 1), dtype=np.int32)

    def _encode_lines(self, text: str, threads: int) -> list[int]:
        """Each line on its own, "\n" as its own piece.

        Line by line keeps a text's pieces independent of how much text surrounds it (one
        long input can tie-break differently), and lets sentencepiece use several threads.
        """
        lines = text.split("\n")
        if SPM_SPACE in text:
            encoded = [self._encode_with_space_marks(line) for line in lines]
        else:
            encoded = self.sp.encode(lines, num_threads=threads)
        ids: list[int] = []
        for n, line_ids in enumerate(encoded):
            if n:
                ids.append(self._newline_id)
            ids.extend(line_ids)
        return ids

    def _encode_with_space_marks(self, line: str) -> list[int]:
        ids: list[int] = []
        for n, part in enumerate(line.split(SPM_SPACE)):
            if n:
                ids.extend(self._space_mark_ids)
            ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode(list(ids))

    def save(self, folder: Path) -> list[str]:
        (Path(folder) / self.FILE).write_bytes(self.model_proto)
        return [self.FILE]

    @classmethod
    def load(cls, folder: Path, kind: str) -> "SentencePieceTokenizer":
        return cls((Path(folder) / cls.FILE).read_bytes(), kind)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()


def train_tokenizer(text: str, config: TokenizerConfig) -> Tokenizer:
    """Build a vocabulary of the configured kind from the training text."""
    config.validate()
    if not text.strip():
        raise TokenizerError("the training text is empty — give a corpus with some text in it")
    if config.kind == "char":
        return CharTokenizer.train(text, config)
    if config.kind == "word":
        return WordTokenizer.train(text, config)
    return SentencePieceTokenizer.train(text, config)


def load_tokenizer(folder: Path, kind: str) -> Tokenizer:
    """Load the tokenizer saved in a checkpoint folder."""
    try:
        if kind == "char":
            return CharTokenizer.load(folder)
        if kind == "word":
            return WordTokenizer.load(folder)
        if kind in ("unigram", "bpe"):
            return SentencePieceTokenizer.load(folder, kind)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise TokenizerError(
            f"cannot load the {kind} tokenizer in {folder}: {e} — the checkpoint is damaged; "
            "retrain or restore it"
        ) from None
    raise TokenizerError(f"unknown tokenizer kind {kind!r} in {folder} — the checkpoint is damaged")


SPM_MAX_LINE_CHARS = 1000  # sentencepiece skips lines over 4192 bytes; a character is at most 4


def _sample_lines(text: str, budget: int, blocks: int = SPM_SAMPLE_BLOCKS) -> list[str]:
    """The lines sentencepiece trains on: all of a text within `budget` characters; else about
    `budget` characters in `blocks` blocks spread evenly over it, each from a line start."""
    if len(text) > budget:
        stride, size = len(text) // blocks, budget // blocks
        parts = []
        for start in range(0, blocks * stride, stride):
            newline = text.find("\n", start, start + stride)
            begin = newline + 1 if start and newline >= 0 else start
            parts.append(text[begin: begin + size])
        text = "\n".join(parts)
    return [piece for line in text.split("\n") if line for piece in _cut_long_line(line)]


def _check_fits(config: TokenizerConfig, most: int, what: str) -> None:
    """Refuse a --vocab-size the training text cannot fill."""
    if config.vocab_size > most:
        raise TokenizerError(f"--vocab-size {config.vocab_size} is more than this text supports ({most}: {what}) "
                             f"— use --vocab-size {most} or less, or leave it out")


def _sentencepiece_error(message: str, kind: str, vocab_size: int) -> str:
    """sentencepiece's failure as one line a user can act on."""
    reason = re.sub(r"^.*?\]\s*", "", message.strip().splitlines()[-1])  # drop "INTERNAL: file.cc(638) [check]"
    too_high = re.search(r"Vocabulary size (?:is )?too high \(\d+\)\. Please set it to a value <= (\d+)", reason)
    if too_high:
        most = too_high.group(1)
        return (f"--vocab-size {vocab_size} is more than a {kind} vocabulary of this text can hold ({most}) "
                f"— use --vocab-size {most} or less, or leave it out")
    needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", reason)
    if needed:
        return (f"--vocab-size {vocab_size} is too small for a {kind} vocabulary of this text: its characters "
                f"and the 256 byte pieces need at least {needed.group(1)} — use --vocab-size {needed.group(1)} or more")
    return f"sentencepiece could not build a {kind} vocabulary of {vocab_size}: {reason} — try a different --vocab-size"


def _cut_long_line(line: str, size: int = SPM_MAX_LINE_CHARS) -> list[str]:
    """A line in pieces of at most `size` characters, cut after a space where there is one."""
    pieces = []
    while len(line) > size:
        cut = line.rfind(" ", size // 2, size) + 1 or size
        pieces.append(line[:cut])
        line = line[cut:]
    return pieces + [line] if line else pieces


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
