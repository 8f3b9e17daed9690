"""The lexicon: char and subword models offer real words only, learn a word typed twice, take a user's words."""
import random
import string

import pytest
from click.testing import CliRunner

import lm
from cli import cli
from lm.data.lexicon import Lexicon
from lm.suggest.engine import SuggestConfig, Suggester, SuggestionSession
from lm.data.text import LETTER, char_class



@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    cache = {}

    def get(kind):
        if kind not in cache:
            folder = tiny_checkpoints(kind)
            cache[kind] = (lm.load(folder).model, lm.load(folder).tokenizer, Lexicon.load(folder))
        return cache[kind]

    return get


def test_the_lexicon_holds_the_training_words_with_counts_case_folded():
    lexicon = Lexicon.from_text("The cat sat. the CAT <unk> don't stop-watch\n")
    assert lexicon.counts == {"the": 2, "cat": 2, "sat": 1, "don't": 1, "stop": 1, "watch": 1}
    assert lexicon.allows("Cat") and not lexicon.allows("ca")
    assert lexicon.allows_prefix("Ca") and not lexicon.allows_prefix("cz")


def test_the_checkpoint_saves_the_lexicon_of_its_training_text(tiny_checkpoints, corpus_file):
    saved = Lexicon.load(tiny_checkpoints("char"))
    train = lm.load_corpus([str(corpus_file)]).train
    assert saved.counts["the"] == train.split().count("the") and saved.counts["sky"] == train.split().count("sky")
    assert set(saved.counts) == {w for w in train.split() if w != "."}


@pytest.mark.parametrize("kind", ["char", "unigram"])
def test_every_suggestion_is_a_word_of_the_lexicon(loaded, kind):
    model, tokenizer, lexicon = loaded(kind)
    suggester = Suggester(model, tokenizer, lexicon=lexicon)
    open_spelling = Suggester(model, tokenizer, SuggestConfig(any_word=True), lexicon=lexicon)
    rng = random.Random(0)
    outside = 0
    for _ in range(25):
        text = "the " + "".join(rng.choice(string.ascii_lowercase[:12]) for _ in range(rng.randint(0, 2)))
        for s in suggester.suggest(text, 3):
            assert char_class(s.word[0]) != LETTER or s.word.lower() in lexicon.counts, (text, s.word)
        outside += sum(char_class(s.word[0]) == LETTER and s.word.lower() not in lexicon.counts
                       for s in open_spelling.suggest(text, 3))
    assert outside > 0  # without the lexicon the tiny models do spell non-words


def test_a_word_typed_twice_is_offered_after_its_first_letter_the_third_time(loaded):
    model, tokenizer, lexicon = loaded("char")
    suggester = Suggester(model, tokenizer, lexicon=lexicon)
    # No word of the training text starts with "p": a new word that does is a name being learned.
    session = SuggestionSession(suggester, "the cat sees petal in the garden .\n")
    session.type("the dog sees petal near the road .\nthe birds see p")
    assert [s.word for s in session.suggestions(3)][:1] == ["petal"]
    once = SuggestionSession(suggester, "the cat sees petal in the garden .\nthe birds see p")
    assert "petal" not in [s.word for s in once.suggestions(3)]
    # The same as the whole text read at once.
    assert suggester.suggest(session.text, 3) == session.suggestions(3)


def test_words_added_to_the_lexicon_after_the_suggester_is_built_are_offered(loaded):
    model, tokenizer, lexicon = loaded("char")
    lexicon = Lexicon(dict(lexicon.counts))  # a copy: the fixture's is shared
    lexicon.add(["pig"])
    suggester = Suggester(model, tokenizer, lexicon=lexicon)
    assert "petal" not in [s.word for s in suggester.suggest("the cat sees p", 3)]  # the search has spelled "p"
    lexicon.add(["petal"])
    assert "petal" in [s.word for s in suggester.suggest("the cat sees p", 3)]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_the_search_spells_only_beginnings_of_lexicon_words(loaded, kind, monkeypatch):
    model, tokenizer, lexicon = loaded(kind)
    suggester = Suggester(model, tokenizer, lexicon=lexicon)
    spelled = []  # (text, mode) of every hypothesis the beam kept
    original = suggester._pieces._extend

    def extend(*args):
        extended = original(*args)
        spelled.extend(zip(extended[2], extended[3]))
        return extended

    monkeypatch.setattr(suggester._pieces, "_extend", extend)
    for text in ["the cat sees p", "the cat sees th", "the ", "The c", "my friend likes a re", "the birds want some b"]:
        suggester.suggest(text, 3)
    letters = [text for text, mode in spelled if mode == LETTER]
    assert len(letters) > 20 and all(lexicon.allows_prefix(text) for text in letters), letters


def test_a_users_words_can_be_offered(tmp_path, loaded, tiny_checkpoints):
    model, tokenizer, lexicon = loaded("char")
    assert "petal" not in [s.word for s in Suggester(model, tokenizer, lexicon=lexicon).suggest("the cat sees p", 3)]
    words = tmp_path / "words.txt"
    words.write_text("petal\n\n  Quimby \n")
    result = CliRunner().invoke(cli, ["suggest", "the cat sees p", "-c", str(tiny_checkpoints("char")), "--words",
                                      str(words), "--plain", "--fp32"])
    assert result.exit_code == 0 and result.output.split("\n")[0] == "petal", result.output


@pytest.mark.parametrize("content, message", [
    (b"", "holds no words — give one word a line"),
    (b"\n  \n", "holds no words — give one word a line"),
    (b"caf\xe9\n", "is not UTF-8 text (byte at offset 3) — save it as UTF-8, one word a line"),
    (b"ab\x00cd", "looks binary"),
])
def test_a_damaged_or_empty_words_file_is_one_error_line(tmp_path, tiny_checkpoints, content, message):
    words = tmp_path / "words.txt"
    words.write_bytes(content)
    result = CliRunner().invoke(cli, ["suggest", "the", "-c", str(tiny_checkpoints("char")), "--words", str(words)])
    assert result.exit_code == 1 and result.output.startswith("Error: the words file") and message in result.output
    assert result.output.count("\n") == 1
