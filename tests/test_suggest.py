"""Keyboard-style suggestions: right words for every tokenizer, sessions equal to whole texts, no crash on any input."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lm
import lm.suggest.search as search_module
import lm.suggest.session as session_module
from lm.suggest.engine import SuggestConfig, Suggester
from lm.suggest.session import SuggestionSession
from lm.suggest.typed import split_typed
from lm.data.tokenizer import Tokenizer

from conftest import make_text, train_tiny

KINDS = ["char", "unigram", "bpe", "word"]
# The shared 150-step models are too weak for char and subword kinds to remember "clouds" three
# words back; 600 steps of the same tiny model take a second or two each.
STEPS = {"char": 600, "unigram": 600, "bpe": 600}
CLOUDS = "the clouds are in the "
SESSION_TEXT = (
    "the clouds are in the sky .\nthe cat sees the ball in the garden .\n"
    "my friend likes a red apple at home .\nthe clouds are in the sky .\n"
    "our teacher calls the river by the sea .\nthe birds want some bread"
)


@pytest.fixture(scope="module")
def suggesters(tmp_path_factory, corpus_file, tiny_checkpoints):
    """kind -> Suggester over a tiny model that has learned the corpus pattern (trained on first use)."""
    built: dict[str, Suggester] = {}

    def get(kind: str, config: SuggestConfig | None = None) -> Suggester:
        if kind not in built:
            if kind in STEPS:
                folder = tmp_path_factory.mktemp(f"suggest-{kind}") / "model"
                train_tiny(corpus_file, folder, kind, max_steps=STEPS[kind], eval_every=STEPS[kind])
            else:
                folder = tiny_checkpoints(kind)
            built[kind] = Suggester(lm.load(folder).model, lm.load(folder).tokenizer)
        if config is None:
            return built[kind]
        return Suggester(built[kind].model, built[kind].tokenizer, config)

    return get


def words(suggestions) -> list[str]:
    return [s.word for s in suggestions]


@pytest.mark.parametrize("kind", KINDS)
def test_sky_is_the_top_next_word(suggesters, kind):
    top = suggesters(kind).suggest(CLOUDS)[0]
    assert (top.word, top.completion) == ("sky", "sky")
    assert top.probability > 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_half_typed_word_completes_to_sky(suggesters, kind):
    top = suggesters(kind).suggest(CLOUDS + "s")[0]
    assert (top.word, top.completion) == ("sky", "ky")


@pytest.mark.parametrize("kind", KINDS)
def test_a_prefix_that_splits_differently_still_finds_the_word(suggesters, kind):
    # "garde" encodes as ... "d" "e" while "garden" is ... "d" "en" in the subword vocabularies.
    found = suggesters(kind).suggest("the cat sees the ball in the garde")
    assert found[0].word == "garden" and found[0].completion == "n"


@pytest.mark.parametrize("kind", KINDS)
def test_a_prefix_matching_no_word_gives_an_empty_list(suggesters, kind):
    assert suggesters(kind).suggest(CLOUDS + "qzx") == []


@pytest.mark.parametrize("kind", KINDS)
def test_after_a_whole_typed_word_the_next_word_comes_first_and_the_typed_word_never(suggesters, kind):
    found = suggesters(kind).suggest(CLOUDS.rstrip(), 3)  # "the clouds are in the", no trailing space
    assert (found[0].word, found[0].completion) == ("sky", " sky")  # the completion adds the space
    assert all(s.word.lower() != "the" and s.completion for s in found), found
    typed = suggesters(kind).suggest("the clouds are in The", 5)
    assert all(s.completion.startswith(" ") or s.word.lower() != "the" for s in typed), typed  # " the" may come next


@pytest.mark.parametrize("kind", ["char", "word"])
def test_next_words_after_a_typed_word_are_weighted_by_its_being_whole(suggesters, kind):
    suggester = suggesters(kind)
    after_space = {s.word: s.probability for s in suggester.suggest(CLOUDS, 3)}
    typed = {s.word: s.probability for s in suggester.suggest(CLOUDS.rstrip(), 3)}
    # P("sky" next | "...the") = P("the" is whole | typed "the") * P("sky" | "...the "): never more than after the space.
    assert 0.5 * after_space["sky"] < typed["sky"] <= after_space["sky"] + 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_next_word_probabilities_are_ranked_and_sum_to_at_most_one(suggesters, kind):
    found = suggesters(kind).suggest(CLOUDS, 10)
    probabilities = [s.probability for s in found]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 < p <= 1.0 for p in probabilities)
    assert sum(probabilities) <= 1.0 + 1e-6
    assert len(set(words(found))) == len(found)


@pytest.mark.parametrize("kind", KINDS)
def test_k_bounds_the_number_of_suggestions(suggesters, kind):
    assert len(suggesters(kind).suggest(CLOUDS, 1)) == 1
    assert len(suggesters(kind).suggest(CLOUDS)) == SuggestConfig.k


@pytest.mark.parametrize("kind", ["char", "bpe", "word"])
def test_capitalisation_follows_the_typed_prefix(suggesters, kind):
    assert suggesters(kind).suggest(CLOUDS + "S")[0].word == "Sky"
    assert suggesters(kind).suggest(CLOUDS + "S")[0].completion == "ky"
    assert suggesters(kind).suggest(CLOUDS + "SK")[0].word == "SKY"


@pytest.mark.parametrize("kind", ["char", "word"])
def test_capitalisation_follows_a_sentence_start(suggesters, kind):
    # "the" starts 4 lines in 7 of the corpus; "a", "my", "her" and "our" one in 7 each.
    assert suggesters(kind).suggest("")[0].word == "The"
    after_a_sentence = suggesters(kind).suggest("the clouds are in the sky . ")
    assert len(after_a_sentence) == 3 and all(s.word[0].isupper() for s in after_a_sentence), after_a_sentence
    inside_one = suggesters(kind).suggest("the cat sees ")
    assert len(inside_one) == 3 and all(s.word.islower() for s in inside_one), inside_one


@pytest.mark.parametrize("kind", ["char", "unigram", "word"])
def test_punctuation_only_when_likely(suggesters, kind):
    after_garden = "the cat sees the ball in the garden "
    assert suggesters(kind).suggest(after_garden)[0].word == "."
    strict = suggesters(kind, SuggestConfig(punctuation_min=1.0))
    assert "." not in words(strict.suggest(after_garden, 10))
    assert not any(w[0] in ".,;" for w in words(suggesters(kind).suggest(CLOUDS, 10)))


def test_punctuation_typed_without_a_space_suggests_words_after_a_space(suggesters):
    found = suggesters("char").suggest("the cat sees the ball.")
    assert found and all(s.completion == " " + s.word for s in found)


@pytest.mark.parametrize("kind", KINDS)
def test_no_unk_or_blank_suggestions(suggesters, kind):
    for text in ["", "the ", "the clouds are in the sky .\n", "x", "3 "]:
        for s in suggesters(kind).suggest(text, 10):
            assert s.word.strip() == s.word and s.word and "<unk>" not in s.word and "<eos>" not in s.word


@pytest.mark.parametrize("kind", KINDS)
def test_session_keystroke_by_keystroke_equals_whole_text(suggesters, kind, monkeypatch):
    # Small groups and few kept marks make the test cross group boundaries and drop old marks.
    monkeypatch.setattr(session_module, "GROUP_WORDS", 3)
    monkeypatch.setattr(session_module, "MAX_MARKS", 8)
    suggester = suggesters(kind)
    session = SuggestionSession(suggester)
    for ch in SESSION_TEXT:
        session.type(ch)
        assert session.suggestions(3) == suggester.suggest(session.text, 3), repr(session.text)
    assert session.text == SESSION_TEXT


@pytest.mark.parametrize("kind", ["char", "bpe", "word"])
def test_session_with_deletions_equals_whole_text(suggesters, kind, monkeypatch):
    monkeypatch.setattr(session_module, "GROUP_WORDS", 3)
    monkeypatch.setattr(session_module, "MAX_MARKS", 8)
    suggester = suggesters(kind)
    session = SuggestionSession(suggester, SESSION_TEXT[:60])
    # Delete within a word, across word boundaries, across a line, then back past dropped marks.
    for edit in [("del", 2), ("type", "x"), ("del", 9), ("type", " sky ."), ("del", 30), ("type", "\nthe cat "),
                 ("del", 55), ("type", "the birds find"), ("del", 1000), ("type", "my friend ")]:
        getattr(session, "delete" if edit[0] == "del" else "type")(edit[1])
        assert session.suggestions(3) == suggester.suggest(session.text, 3), repr(session.text)
    session.set_text(SESSION_TEXT)
    assert session.suggestions(5) == suggester.suggest(SESSION_TEXT, 5)
    for word in ("want ", "birds ", "the "):  # change the last letter before a kept mark
        at = SESSION_TEXT.rindex(word) + len(word) - 2
        changed = SESSION_TEXT[:at] + "x" + SESSION_TEXT[at + 1:]
        session.set_text(SESSION_TEXT)
        session.suggestions()
        session.set_text(changed)
        assert session.suggestions(5) == suggester.suggest(changed, 5), changed


def test_a_keystroke_reads_only_the_last_word(suggesters, monkeypatch):
    suggester = suggesters("char")
    session = SuggestionSession(suggester, make_text(60))
    session.suggestions()
    read: list[str] = []
    original = suggester.read
    monkeypatch.setattr(suggester, "read", lambda state, logits, text: read.append(text) or original(state, logits, text))
    for ch in "the clouds are":
        session.type(ch)
        session.suggestions()
    assert sum(map(len, read)) < 40  # the words typed, never the 2,000-character text before them


def test_a_keystroke_inside_a_word_retakes_no_step_of_the_typed_prefix(suggesters, monkeypatch):
    suggester = suggesters("char")
    rows: list[int] = []  # hypotheses of each model step of the search
    original = suggester._step
    monkeypatch.setattr(suggester, "_step", lambda ids, state, mark: rows.append(len(ids)) or original(ids, state, mark))
    session = SuggestionSession(suggester, "the cat sees the clouds are in th")
    session.suggestions(3)
    rows.clear()
    session.type("e")
    typed, typed_rows = session.suggestions(3), rows[:]
    rows.clear()
    fresh = SuggestionSession(suggester, session.text).suggestions(3)
    assert typed == fresh
    # The steps through " th" were taken by the previous keystroke; the new letter's is taken now.
    assert rows.count(1) - typed_rows.count(1) == len(" th")
    assert sorted(n for n in rows if n > 1) == sorted(n for n in typed_rows if n > 1)


def test_kept_search_steps_stay_bounded(suggesters, monkeypatch):
    suggester = suggesters("char")
    monkeypatch.setattr(search_module, "ALONE_FLOATS", 5 * suggester.tokenizer.vocab_size)
    session = SuggestionSession(suggester, "the clouds are in ")
    for ch in "theirselves":
        session.type(ch)
        session.suggestions()
        assert 0 < len(session._marks[-1].alone) <= 5
    session.type(" ")
    session.suggestions()
    assert [len(mark.alone) for mark in session._marks[1:-1]] == [0] * (len(session._marks) - 2)  # typing moved on


@pytest.mark.parametrize("kind", KINDS)
def test_reading_ahead_leaves_only_the_search(suggesters, kind, monkeypatch):
    suggester = suggesters(kind)
    original = suggester.read
    for text in [CLOUDS, CLOUDS + "s", CLOUDS.rstrip(), ""]:
        session = SuggestionSession(suggester, text)
        session.read()
        read: list[str] = []
        monkeypatch.setattr(suggester, "read", lambda state, logits, text: read.append(text) or original(state, logits, text))
        found = session.suggestions(3)
        monkeypatch.undo()
        # At most the typed word is read, to suggest what follows it if it is finished ("the" -> "sky").
        assert all(len(t) <= len(" the") for t in read), read
        assert found == suggester.suggest(text, 3), repr(text)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_very_long_text(suggesters, kind):
    text = make_text(4000 if kind == "word" else 1500) + CLOUDS  # ~170 kB for words, ~60 kB for chars
    assert suggesters(kind).suggest(text)[0].word == "sky"
    assert suggesters(kind).suggest("a" * 2_000_000) == []  # no word is two million letters long
    after_spaces = suggesters(kind).suggest(" " * 100_000)  # next words after a long run of whitespace
    assert len(after_spaces) == 3 and all(s.word.strip() == s.word != "" for s in after_spaces), after_spaces


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", ["", " ", "   ", "\n", "\n\n \t", ".", "(", "😀", "日本語", "\x00", "the\u2028cat "])
def test_edge_inputs_never_raise(suggesters, kind, text):
    for s in suggesters(kind).suggest(text, 5):
        assert (text + s.completion).endswith(s.word)


@pytest.mark.parametrize("kind", ["char", "unigram", "word"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=30))
def test_any_unicode_never_raises(suggesters, kind, text):
    found = suggesters(kind).suggest(text, 4)
    assert len(found) <= 4
    for s in found:
        assert s.word.strip() == s.word and s.word
        assert 0.0 < s.probability <= 1.0
        assert (text + s.completion).endswith(s.word)


def test_a_word_whose_probability_underflowed_to_zero_is_not_offered(suggesters):
    # An unlikely typed prefix (":CVAAF" on the unigram model) can leave words whose float mass is 0.
    shown = suggesters("word")._present({"sky": 0.0, "sea": 0.25}, split_typed("the ", True))
    assert [(s.word, s.probability) for s in shown] == [("sea", 0.25)]


def test_bad_settings_raise_config_errors(suggesters):
    with pytest.raises(lm.ConfigError, match="k must be a positive integer"):
        suggesters("word").suggest("the ", 0)
    with pytest.raises(lm.ConfigError, match="beam-width must be a positive integer"):
        suggesters("word", SuggestConfig(beam_width=0))
    with pytest.raises(lm.ConfigError, match="punctuation-min must be in"):
        suggesters("word", SuggestConfig(punctuation_min=2.0))


class UniformModel(nn.Module):
    """Every piece equally likely after anything: word probabilities can be worked out by hand."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.zero = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, ids, state=None):
        state = torch.zeros(1, ids.shape[0], 1) if state is None else state  # [layers, batch, hidden]
        return self.zero.expand(*ids.shape, -1), state  # [batch, time, vocab]


class GreedyTokenizer(Tokenizer):
    """Longest-match pieces; "ab" can be spelled [ab] or [a, b]."""

    kind, unk_id = "bpe", 0
    pieces = ["", "\n", " ", "a", "b", "ab", "."]
    vocab_size = len(pieces)

    def encode(self, text: str) -> list[int]:
        ids = []
        while text:
            piece = max((p for p in self.pieces if p and text.startswith(p)), key=len, default="")
            ids.append(self.pieces.index(piece))
            text = text[len(piece) or 1:]
        return ids


@pytest.mark.parametrize("typed, expected", [
    ("", {"ab": (24 / 343, "ab"), "a": (21 / 343, "a")}),
    ("a", {"ab": (24 / 98, "b"), "a": (9 / 686, " a")}),
])
def test_word_probability_is_the_product_of_its_pieces_summed_over_spellings(typed, expected):
    # After "b ", each of the 7 pieces has p = 1/7, and three of them ("\n", " ", ".") end a word.
    # "ab" = a·b·end + ab·end = (1/7)(1/7)(3/7) + (1/7)(3/7) = 24/343 given the space; given the
    # typed "a" (reached by the pieces a and ab: 2/7) it is (24/343) / (2/7) = 24/98.
    # The typed "a" is whole with (1/7)(3/7) / (2/7) = 3/14; it takes no slot, but the words after
    # it do: " a" is (3/14) · (1/7)(3/7) / (1/7) = 9/686 (a·end, given the space that must follow).
    config = SuggestConfig(beam_width=64, max_depth=3)
    suggester = Suggester(UniformModel(GreedyTokenizer.vocab_size), GreedyTokenizer(), config)
    found = {s.word: s for s in suggester.suggest("b " + typed, 10)}
    for word, (probability, completion) in expected.items():
        assert found[word].probability == pytest.approx(probability, rel=1e-5)
        assert found[word].completion == completion
    assert "." not in found  # 1/7 · 5/7 is below the punctuation threshold
    lenient = Suggester(suggester.model, suggester.tokenizer, SuggestConfig(beam_width=64, max_depth=3, punctuation_min=0.0))
    assert {s.word: s.probability for s in lenient.suggest("b ", 10)}["."] == pytest.approx(5 / 49, rel=1e-5)


@pytest.mark.parametrize(
    "text, by_whitespace, expected",
    [
        ("", False, (0, "", "", "", True)),
        ("the clouds are in the ", False, (21, " ", "", "", False)),
        ("the clouds are in the s", False, (21, " ", "s", "", False)),
        ("hi,th", False, (3, "", "th", "", False)),
        ("the sky.", False, (8, " ", "", " ", True)),
        ("he said (", False, (9, "", "", "", False)),
        ("sky .\nthe", False, (6, "", "the", "", True)),
        ("sky .\n", False, (6, "", "", "", True)),
        ("don't", False, (0, "", "don't", "", True)),
        ("the sky.", True, (4, "", "sky.", "", False)),
        ("the clouds ", True, (11, "", "", "", False)),
    ],
)
def test_split_typed(text, by_whitespace, expected):
    typed = split_typed(text, by_whitespace)
    assert (typed.context_end, typed.lead, typed.partial, typed.prefix, typed.sentence_start) == expected


def test_corpus_pattern_holds():
    """The premise of the tests above: the generated text always continues "the clouds are in the" with "sky"."""
    text = make_text()
    assert text.count("the clouds are in the") == text.count("the clouds are in the sky")


class CaseTokenizer(GreedyTokenizer):
    """Single letters in both cases: "ab" can be spelled [a, b] or [A, b]."""

    pieces = ["", "\n", " ", "a", "A", "b", "."]
    vocab_size = len(pieces)


def test_spellings_that_differ_only_in_case_are_one_suggestion():
    # Given the space, a·b·end = (1/7)(1/7)(3/7) = 3/343, and A·b·end the same: one "ab" at 6/343.
    config = SuggestConfig(beam_width=64, max_depth=3)
    suggester = Suggester(UniformModel(CaseTokenizer.vocab_size), CaseTokenizer(), config, lexicon=lm.Lexicon({"ab": 1}))
    found = [(s.word, s.probability) for s in suggester.suggest("b ", 5)]
    assert found[0] == ("ab", pytest.approx(6 / 343))
    assert "Ab" not in [w for w, _ in found]
