"""The real corpora beside the repository (../shared/corpora); skipped where they are absent."""
import json
import re

import pytest
from click.testing import CliRunner

import lm
from cli import cli

from conftest import train_tiny

pytestmark = pytest.mark.corpora


def test_wikitext2_valid_through_lm_eval(shared_corpora, tmp_path):
    train = (shared_corpora / "wikitext-2" / "train.txt").read_text(encoding="utf-8")[:300_000]
    (tmp_path / "train.txt").write_text(train, encoding="utf-8")
    train_tiny(tmp_path / "train.txt", tmp_path / "m", "word", max_steps=60, eval_every=60)
    valid = shared_corpora / "wikitext-2" / "valid.txt"
    result = CliRunner().invoke(cli, ["eval", str(valid), "-c", str(tmp_path / "m"), "--max-words", "20000",
                                      "--keyboard-words", "300", "--json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    text = valid.read_text(encoding="utf-8")
    sample = text[: [m.end() for m in re.finditer(r"\S+", text)][19_999]]  # up to the end of the 20,000th word
    assert report["words"] == 20_000 and report["total_words"] == len(text.split())
    assert report["tokens"] == 20_000 + sample.count("\n")  # one <eos> per line, as the benchmark counts
    vocab = lm.load(tmp_path / "m").tokenizer.vocab_size
    assert report["perplexity"] < vocab / 4  # far better than guessing among the vocabulary
    keyboard = report["keyboard"]
    assert keyboard["words"] + keyboard["unknown_words"] == 300
    assert keyboard["unknown_words"] >= text.split()[:300].count("<unk>")


@pytest.mark.parametrize("kind", ["char", "unigram", "bpe", "word"])
def test_tiny_shakespeare_round_trips_through_every_tokenizer(shared_corpora, kind):
    text = (shared_corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    subword = kind in ("unigram", "bpe")
    tokenizer = lm.train_tokenizer(text, lm.TokenizerConfig(kind=kind, vocab_size=1000 if subword else None, min_count=1))
    decoded = tokenizer.decode(tokenizer.encode(text))
    if kind == "word":  # words joined by one space, lines kept
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    assert decoded == text
