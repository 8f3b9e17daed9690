import re

import pytest
from hypothesis import given, settings, strategies as st

import lm
from lm.data.tokenizer import CharTokenizer, WordTokenizer, _sample_lines, load_tokenizer, train_tokenizer

from conftest import make_text

TEXT = make_text(300) + "Émile said: «naïve» 日本語 — ok?\n"


@pytest.fixture(scope="module")
def subword(request):
    return {kind: train_tokenizer(TEXT, lm.TokenizerConfig(kind=kind, vocab_size=300)) for kind in ("unigram", "bpe")}


def test_char_vocabulary_is_the_training_characters_plus_unk():
    tok = train_tokenizer("abca\n", lm.TokenizerConfig(kind="char"))
    assert tok.vocab_size == 4 + 1
    assert tok.encode("abz") == [tok.encode("a")[0], tok.encode("b")[0], tok.unk_id]
    assert tok.decode(tok.encode("cab\n")) == "cab\n"


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=sorted(set(TEXT))))
def test_char_round_trip_over_its_alphabet(text):
    tok = train_tokenizer(TEXT, lm.TokenizerConfig(kind="char"))
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=80, deadline=None)
@given(text=st.text())
def test_sentencepiece_round_trips_any_text(subword, text):
    for tok in subword.values():
        assert tok.decode(tok.encode(text)) == text


def test_sentencepiece_keeps_whitespace_and_newlines_exactly(subword):
    text = "  two  spaces\n\n\tand a tab ▁ and the marker\n"
    for tok in subword.values():
        assert tok.decode(tok.encode(text)) == text


def test_word_tokenizer_marks_line_ends_and_unknown_words():
    tok = train_tokenizer("a b a\nb c\n", lm.TokenizerConfig(kind="word", min_count=2))
    assert tok.pieces[:2] == ["<unk>", "<eos>"]
    ids = tok.encode("a c b\n")
    assert ids == [tok.pieces.index("a"), tok.unk_id, tok.pieces.index("b"), tok.eos_id]
    assert tok.decode(ids) == "a <unk> b\n"


def test_word_min_count_keeps_every_word_of_a_text_that_already_marks_unknowns():
    closed = train_tokenizer("a b <unk> a\nc\n", lm.TokenizerConfig(kind="word"))
    assert {"a", "b", "c"} <= set(closed.pieces)
    open_text = train_tokenizer("a b a\nc\n", lm.TokenizerConfig(kind="word"))
    assert "a" in open_text.pieces and "b" not in open_text.pieces


def test_word_vocab_size_caps_the_most_frequent_words():
    tok = train_tokenizer("a a a b b c\n", lm.TokenizerConfig(kind="word", vocab_size=4, min_count=1))
    assert tok.pieces == ["<unk>", "<eos>", "a", "b"]


@pytest.mark.parametrize("kind", ["char", "word", "unigram", "bpe"])
def test_saved_tokenizer_reloads_exactly(tmp_path, kind):
    tok = train_tokenizer(TEXT, lm.TokenizerConfig(kind=kind, vocab_size=300 if kind in ("unigram", "bpe") else None, min_count=1))
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path, kind)
    assert type(again) is type(tok)
    assert again.pieces == tok.pieces
    assert again.encode(TEXT) == tok.encode(TEXT)
    assert again.fingerprint() == tok.fingerprint()


def test_sentencepiece_vocab_too_small_is_a_clear_error():
    with pytest.raises(lm.TokenizerError, match=r"--vocab-size 50 is too small .* need at least \d+ — use --vocab-size \d+ or more$"):
        train_tokenizer(TEXT, lm.TokenizerConfig(kind="unigram", vocab_size=50))


@pytest.mark.parametrize("kind, message", [
    ("char", r"--vocab-size 100 is more than this text supports \(12: 11 distinct characters and <unk>\) "
             r"— use --vocab-size 12 or less, or leave it out"),
    ("word", r"--vocab-size 100 is more than this text supports \(7: 5 words seen at least 1 times, <unk> and <eos>\) "
             r"— use --vocab-size 7 or less, or leave it out"),
    ("unigram", r"--vocab-size 100000 is more than a unigram vocabulary of this text can hold \((\d+)\) "
                r"— use --vocab-size \1 or less, or leave it out"),
    ("bpe", r"--vocab-size 100000 is more than a bpe vocabulary of this text can hold \((\d+)\) "
            r"— use --vocab-size \1 or less, or leave it out"),
])
def test_a_vocabulary_larger_than_the_text_supports_is_a_clear_error(kind, message):
    size = 100_000 if kind in ("unigram", "bpe") else 100
    with pytest.raises(lm.TokenizerError, match=f"^{message}$"):
        train_tokenizer("the cat sat on the mat\n" * 50, lm.TokenizerConfig(kind=kind, vocab_size=size, min_count=1))


def test_unknown_kind_and_empty_text_are_errors():
    with pytest.raises(lm.TokenizerError, match="unknown tokenizer"):
        train_tokenizer(TEXT, lm.TokenizerConfig(kind="bytes"))
    with pytest.raises(lm.TokenizerError, match="empty"):
        train_tokenizer("  \n", lm.TokenizerConfig(kind="char"))


def test_encode_array_matches_encode():
    for tok in (CharTokenizer.train(TEXT, lm.TokenizerConfig()), WordTokenizer.train(TEXT, lm.TokenizerConfig(kind="word"))):
        assert tok.encode_array(TEXT).tolist() == tok.encode(TEXT)


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_learns_from_text_without_line_breaks(kind):
    """sentencepiece skips lines over 4 KB; a corpus that is one long line must still train."""
    text = make_text(200).replace("\n", " ")
    tokenizer = train_tokenizer(text, lm.TokenizerConfig(kind=kind, vocab_size=300))
    assert tokenizer.vocab_size == 300  # more than the 256 byte pieces and the characters: pieces were learned
    assert tokenizer.decode(tokenizer.encode(text[:5000])) == text[:5000]


def test_long_lines_are_cut_after_spaces():
    from lm.data.tokenizer import _cut_long_line

    line = "word " * 500
    pieces = _cut_long_line(line, 100)
    assert "".join(pieces) == line and all(len(p) <= 100 and p.endswith(" ") for p in pieces)
    assert _cut_long_line("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


def test_sentencepiece_trains_on_a_bounded_sample_spread_over_the_whole_text():
    text = "".join(f"line {i} of the corpus\n" for i in range(100_000))  # 2.3 MB
    lines = _sample_lines(text, budget=100_000, blocks=50)
    assert 90_000 <= sum(len(line) + 1 for line in lines) <= 100_000 + 50
    assert lines[0] == "line 0 of the corpus" and lines[-1].startswith("line 98")  # first and last block
    cut = [line for line in lines if not re.fullmatch(r"line \d+ of the corpus", line)]
    assert len(cut) <= 50  # only the end of each block is cut: every block begins at a line start
    assert _sample_lines("short\ntext\n", budget=100) == ["short", "text"]
