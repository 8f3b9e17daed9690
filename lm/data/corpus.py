"""Corpora: text files, folders of them, or `hf:NAME[:CONFIG]` datasets; tokenized once and cached.

Token ids are stored as .npy files keyed by a hash of the text and of the tokenizer, and read
back memory-mapped, so a second run skips tokenization and a large corpus never sits in RAM as
Python objects.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._util import first_line, hash_text
from ..errors import CorpusError
from .tokenizer import Tokenizer, TokenizerConfig, load_tokenizer, train_tokenizer

TEXT_SUFFIXES = (".txt", ".text", ".raw", ".md")
HF_PREFIX = "hf:"
ENCODE_CHUNK_CHARS = 4_000_000  # tokenization works in chunks of whole lines


@dataclass
class Corpus:
    """The text of a corpus, split into train / valid / test."""

    train: str
    valid: str
    test: str = ""
    sources: list[str] = field(default_factory=list)
    label: str = ""  # a name chosen by the reader (a split folder's own name)

    @property
    def name(self) -> str:
        """A short name for folders and tables: the label, else the first source's stem."""
        if self.label:
            return self.label
        if not self.sources:
            return "corpus"
        first = self.sources[0]
        if first.startswith(HF_PREFIX):
            return first[len(HF_PREFIX):].replace("/", "-").replace(":", "-")
        return Path(first).stem or Path(first).name or "corpus"

    def fingerprint(self) -> str:
        """Hash of the text of every split (never of paths: a changed file gets a new key)."""
        digest = hashlib.sha256()
        for part in (self.train, self.valid, self.test):
            digest.update(hash_text(part).encode())
        return digest.hexdigest()[:16]


def load_corpus(
    paths: list[str],
    valid: str | None = None,
    encoding: str = "utf-8",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> Corpus:
    """Read a corpus and split it.

    Args:
        paths: text files, folders (their text files) or `hf:NAME[:CONFIG]`.
        valid: a file to validate on; otherwise the last blocks of the text are held out.
        encoding: how the files are encoded.
    Raises:
        CorpusError: a path is missing, a folder holds no text, a file is empty, binary or
            undecodable.
    """
    if not paths:
        raise CorpusError("no corpus given — pass a text file, a folder or hf:NAME")
    if len(paths) == 1 and paths[0].startswith(HF_PREFIX):
        corpus = load_hf_dataset(paths[0])
        if valid is not None:
            corpus.valid = read_text(Path(valid), encoding)
        return corpus
    if len(paths) == 1 and (splits := split_files(Path(paths[0]))):
        return _read_split_folder(splits, valid, encoding)
    files = expand_paths(paths)
    text = "".join(_with_final_newline(read_text(f, encoding)) for f in files)
    sources = [str(f) for f in files]
    if valid is not None:
        return Corpus(train=text, valid=read_text(Path(valid), encoding), sources=sources)
    train, held_valid, held_test = split_text(text, valid_fraction, test_fraction)
    return Corpus(train=train, valid=held_valid, test=held_test, sources=sources)


SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "dev"), "test": ("test",)}


def split_files(folder: Path) -> dict[str, Path] | None:
    """A folder laid out like WikiText (train.txt, valid.txt, test.txt): split name -> file.

    Needs a train file and at least one held-out file; anything else is an ordinary folder.
    """
    if not folder.is_dir():
        return None
    found = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            candidates = [folder / f"{prefix}{name}{suffix}" for prefix in ("", "wiki.") for suffix in (*TEXT_SUFFIXES, ".tokens")]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit:
                found[split] = hit
                break
    return found if "train" in found and len(found) > 1 else None


def _read_split_folder(splits: dict[str, Path], valid: str | None, encoding: str) -> Corpus:
    """The folder's own splits; without a valid file, valid is held out of train."""
    train = read_text(splits["train"], encoding)
    test = read_text(splits["test"], encoding) if "test" in splits else ""
    if valid is not None:
        held_valid = read_text(Path(valid), encoding)
    elif "valid" in splits:
        held_valid = read_text(splits["valid"], encoding)
    else:
        train, held_valid, _ = split_text(train, 0.05, 0.0)
    folder = splits["train"].parent
    return Corpus(train=train, valid=held_valid, test=test, sources=[str(p) for p in splits.values()], label=folder.name)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files named directly, plus the text files inside folders (sorted, recursive)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CorpusError(f"{path} does not exist — check the path")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise CorpusError(
                    f"{path} holds no text files ({', '.join(TEXT_SUFFIXES)}) — point at a folder of "
                    "text files or name the files"
                )
            files.extend(found)
        else:
            files.append(path)
    return files


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The text of one file, with a clear error for empty, binary or undecodable files."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path} does not exist — check the path") from None
    except IsADirectoryError:
        raise CorpusError(f"{path} is a folder — pass it as a corpus, not as --valid") from None
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror} — check its permissions") from None
    if b"\0" in data[:1 << 20] and encoding.lower().replace("-", "") in ("utf8", "ascii", "latin1"):
        offset = data.index(b"\0")
        raise CorpusError(
            f"{path} looks binary (a NUL byte at offset {offset}) — give a plain text file"
        )
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{path} is not valid {encoding}: byte 0x{data[e.start]:02x} at offset {e.start} — "
            "pass --encoding (for example --encoding latin-1) to read it"
        ) from None
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r} — use a name such as utf-8 or latin-1") from None
    if not text.strip():
        raise CorpusError(f"{path} is empty or only whitespace — give a file with some text")
    return text


def split_text(text: str, valid_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    """Deterministic contiguous split: train first, then valid, then test, cut at line ends."""
    n = len(text)
    valid_start = _line_start_near(text, int(n * (1 - valid_fraction - test_fraction)))
    test_start = _line_start_near(text, int(n * (1 - test_fraction)))
    train, valid, test = text[:valid_start], text[valid_start:test_start], text[test_start:]
    if not train.strip() or not valid.strip():
        # Too few lines to cut at line ends: cut at characters instead.
        valid_start = int(n * (1 - valid_fraction - test_fraction))
        test_start = int(n * (1 - test_fraction))
        train, valid, test = text[:valid_start], text[valid_start:test_start], text[test_start:]
    if not train.strip() or not valid.strip():
        raise CorpusError("the corpus is too small to hold out a validation part — add text or pass --valid FILE")
    return train, valid, test


def load_hf_dataset(spec: str) -> Corpus:
    """A dataset through the `datasets` library: `hf:NAME[:CONFIG]`, NAME a hub id or a local path."""
    name, _, config = spec[len(HF_PREFIX):].partition(":")
    if not name:
        raise CorpusError(f"{spec!r} names no dataset — use hf:NAME or hf:NAME:CONFIG")
    try:
        import datasets
    except ImportError:
        raise CorpusError("the `datasets` package is needed for hf: corpora — pip install datasets") from None
    try:
        data = datasets.load_dataset(name, config or None)
    except Exception as e:  # network, missing dataset, bad config: all mean the same to a user
        raise CorpusError(f"cannot load dataset {name!r}: {first_line(e)} — check the name and config") from None
    splits = {"train": None, "valid": None, "test": None}
    aliases = {"train": ("train",), "valid": ("validation", "valid", "dev"), "test": ("test",)}
    for key, names in aliases.items():
        for split in names:
            if split in data:
                splits[key] = _dataset_text(data[split], spec)
                break
    if splits["train"] is None:
        raise CorpusError(f"dataset {name!r} has no train split — pick a dataset with one")
    corpus_text = splits["train"]
    if splits["valid"] is None:
        corpus_text, splits["valid"], held_test = split_text(corpus_text, 0.05, 0.05 if splits["test"] is None else 0.0)
        splits["test"] = splits["test"] or held_test
    return Corpus(train=corpus_text, valid=splits["valid"], test=splits["test"] or "", sources=[spec])


def _dataset_text(split, spec: str) -> str:
    columns = split.column_names
    column = "text" if "text" in columns else next(
        (c for c in columns if split.features[c].dtype == "string"), None
    )
    if column is None:
        raise CorpusError(f"{spec} has no text column (columns: {', '.join(columns)}) — pick a text dataset")
    return "".join(_with_final_newline(row) for row in split[column] if row is not None)


def prepare_tokenizer(corpus: Corpus, config: TokenizerConfig, cache_dir: Path | None = None) -> Tokenizer:
    """Train the tokenizer on the training split, or reuse one cached for the same text and config."""
    key = hashlib.sha256(f"{hash_text(corpus.train)}{sorted(config.to_dict().items())}".encode()).hexdigest()[:16]
    folder = _cache_root(cache_dir) / "tokenizers" / f"{config.kind}-{key}"
    if folder.is_dir():
        try:
            return load_tokenizer(folder, config.kind)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
    tokenizer = train_tokenizer(corpus.train, config)
    tmp = Path(tempfile.mkdtemp(dir=_ensure(folder.parent)))
    tokenizer.save(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process cached it first
        pass
    return tokenizer


def token_ids(text: str, tokenizer: Tokenizer, cache_dir: Path | None = None) -> np.ndarray:
    """Token ids of `text`, from the cache when present; memory-mapped, read-only."""
    key = hashlib.sha256(f"{hash_text(text)}{tokenizer.fingerprint()}".encode()).hexdigest()[:24]
    path = _cache_root(cache_dir) / "tokens" / f"{tokenizer.kind}-{key}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError):
            path.unlink(missing_ok=True)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.int32
    ids = np.concatenate([tokenizer.encode_array(chunk).astype(dtype) for chunk in _chunks(text)] or [np.zeros(0, dtype)])
    _ensure(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, ids)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def count_words(text: str) -> int:
    """Whitespace-separated words, the denominator of perplexity per word."""
    return len(text.split())


def _chunks(text: str):
    start = 0
    while start < len(text):
        end = text.find("\n", start + ENCODE_CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LM_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lm"


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _line_start_near(text: str, index: int) -> int:
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _with_final_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
