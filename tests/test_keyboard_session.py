"""The forgiving keyboard wired into the engine: corrections on space with undo, completions that
fix a slip, touches, swipes. A model that finds every word equally likely leaves the channel to
decide, so the expected words and odds follow from the channel model (tested on its own in
test_channel.py) and the layout's key centres."""
from __future__ import annotations

import math

import pytest

import lm
from lm.data.lexicon import Lexicon
from lm.data.tokenizer import WordTokenizer
from lm.suggest.channel import Channel
from lm.suggest.engine import SuggestConfig, Suggester
from lm.suggest.keyboard import Keyboard
from lm.suggest.layout import load_layout
from lm.suggest.typed import Slot
from test_suggest import UniformModel

WORDS = {"the": 50, "ten": 20, "tea": 5, "clouds": 10, "are": 30, "in": 40, "sky": 8, "ski": 2,
         "receive": 4, "received": 6, "recent": 5, "example": 3, "garden": 3}


def uniform_keyboard(config: SuggestConfig | None = None) -> Keyboard:
    tokenizer = WordTokenizer(list(WORDS) + [".", ","])
    suggester = Suggester(UniformModel(tokenizer.vocab_size), tokenizer, config or SuggestConfig())
    return Keyboard(suggester, Lexicon(WORDS))


def key_centre(ch: str) -> tuple[float, float]:
    key = load_layout().key(ch)
    return key.x, key.y


@pytest.fixture(scope="module")
def keyboard() -> Keyboard:
    return uniform_keyboard()


def test_a_finished_word_is_corrected_and_one_backspace_puts_it_back(keyboard):
    session = keyboard.session("the clouds are in ")
    for ch in "teh":
        assert session.type(ch) is None  # nothing is finished inside a word
    correction = session.type(" ")
    assert (correction.typed, correction.word) == ("teh", "the")
    assert session.text == "the clouds are in the "
    strip = session.strip(3)
    assert [(s.word, s.slot) for s in strip[:2]] == [("teh", Slot.TYPED), ("the", Slot.CORRECTION)]
    assert strip[0].applied_to(session.text) == "the clouds are in teh "  # picking the typed word restores it
    assert strip[1].applied_to(session.text) == session.text
    session.delete()  # one backspace: the typed word, not "the clouds are in the"
    assert session.text == "the clouds are in teh"
    assert session.type(" ").reason == "kept in this session"
    assert session.text == "the clouds are in teh "


def test_a_word_typed_right_moves_on_to_the_next_words(keyboard):
    session = keyboard.session("the clouds are in the")
    assert session.type(" ").word == "the"
    assert session.strip(3) == keyboard.suggester.suggest("the clouds are in the ", 3)


def test_the_keyboard_keeps_the_typed_casing_and_what_follows_the_word(keyboard):
    strip = keyboard.suggest("Teh clouds are in the Sky. teh, ")  # only the word just finished is decided
    assert strip.text == "Teh clouds are in the Sky. the, "
    assert keyboard.suggest("Teh.").text == "The."


@pytest.mark.parametrize("text", ["see garden.teh ", "ten 2nd ", "THE TEH ", "teh'", "teh"])
def test_protected_or_unfinished_words_stay_as_typed(keyboard, text):
    assert keyboard.suggest(text).text == text


def test_a_user_word_is_never_corrected():
    tokenizer = WordTokenizer(list(WORDS))
    keyboard = Keyboard(Suggester(UniformModel(tokenizer.vocab_size), tokenizer), Lexicon(WORDS), user_words=["teh"])
    assert keyboard.suggest("in teh ").text == "in teh "


def test_no_correct_gives_the_engines_strip():
    keyboard = uniform_keyboard(SuggestConfig(correct=False))
    assert not keyboard.forgiving
    assert keyboard.suggest("in teh ").text == "in teh "
    assert keyboard.suggest("I will recie").suggestions == keyboard.suggester.suggest("I will recie")


def test_a_slip_in_the_prefix_is_completed_at_the_channels_odds(keyboard):
    strip = keyboard.suggest("I will recie", 3)
    assert strip.suggestions, "no completion for a prefix with a swap in it"
    top = strip.suggestions[:2]
    assert {s.word for s in top} == {"receive", "received"}
    assert all(s.delete == len("recie") and s.applied_to("I will recie") == f"I will {s.word}" for s in top)
    # Equal priors: the odds of two completions are those of the channel.
    channel = Channel(layout=load_layout())
    ratio = math.exp(channel.log_prob_prefix("recie", top[0].word) - channel.log_prob_prefix("recie", top[1].word))
    assert top[0].probability / top[1].probability == pytest.approx(ratio, rel=1e-6)


def test_touches_decide_between_two_words():
    keyboard = uniform_keyboard()
    plain = keyboard.session("in ")
    plain.type("ten")
    assert plain.type(" ").word == "ten"  # a word of the lexicon, typed as such: kept
    touched = keyboard.session("in ")
    touched.type("ten", touches=[key_centre("t"), key_centre("h"), key_centre("e")])
    assert touched.type(" ", touches=[key_centre(" ")]).word == "the"  # the finger hit h, whatever the key event said


def test_a_swipe_over_the_keys_of_a_word_gives_that_word_next(keyboard):
    path = [key_centre(ch) for ch in "sky"]
    found = keyboard.session("the clouds are in the").swipe(path, 3)
    assert found[0].word == "sky" and found[0].completion == " sky"
    assert keyboard.session("").swipe(path, 1)[0].completion == "Sky"  # a sentence starts with a capital


def test_a_suggestion_rebased_onto_the_typed_text_replaces_whole_words():
    strip = uniform_keyboard().suggest("in the skt ")
    rebased = [s.rebased(strip.text, "in the skt ") for s in strip.suggestions]
    assert [(s.slot, s.delete, s.completion) for s in rebased[:2]] == [(Slot.TYPED, 0, ""), (Slot.CORRECTION, 4, "sky ")]


def test_lm_suggest_words_corrects_with_a_checkpoints_lexicon(tiny_checkpoints):
    found = lm.suggest_words("the clouds are in teh ", tiny_checkpoints("char"))
    assert [(s.word, s.slot.value, s.delete, s.completion) for s in found[:2]] == \
        [("teh", "typed", 0, ""), ("the", "correction", 4, "the ")]


def test_candidate_scores_are_kept_while_the_context_stays_and_asked_again_after(keyboard, monkeypatch):
    from lm.suggest.session import SuggestionSession

    asked: list[list[str]] = []
    score_words = SuggestionSession.score_words
    monkeypatch.setattr(SuggestionSession, "score_words", lambda self, words: asked.append(list(words)) or score_words(self, words))
    session = keyboard.session("I will ")
    for ch in "recie":
        session.type(ch)
        session.strip()
    within = [w for words in asked for w in words]
    assert within and len(within) == len(set(within))  # no candidate scored twice in one context
    asked.clear()
    session.type(" I will ")  # a new context: the same candidates are worth other odds there
    for ch in "recie":
        session.type(ch)
        session.strip()
    assert set(within) & {w for words in asked for w in words}


def test_a_name_learned_in_the_session_is_offered_at_its_share_of_the_words_typed(tiny_checkpoints):
    keyboard = Keyboard.load(lm.load(tiny_checkpoints("char")))  # its text has no capital Z and no ë
    text = "my friend Zoë sees Zoë . then Z"
    strip = keyboard.suggest(text).suggestions
    # Two of the seven words read before "Z" (my friend Zoë sees Zoë . then) are Zoë.
    assert (strip[0].word, strip[0].completion, strip[0].probability) == ("Zoë", "oë", pytest.approx(2 / 7))
    assert all(s.word != "Zoë" for s in keyboard.suggest("my friend Zoë sees . then Z").suggestions)  # once: not learned


def test_the_layout_decides_which_slips_are_near():
    qwerty = uniform_keyboard()
    qwertz = uniform_keyboard(SuggestConfig(layout="qwertz-de"))
    # z sits beside t on a German keyboard and three rows away on a US one.
    assert qwertz.layout.distance("z", "t") == 1.0 and qwerty.layout.distance("z", "t") > 3
    assert qwertz.decoder.channel.log_prob("zhe", "the") > qwerty.decoder.channel.log_prob("zhe", "the") + 1
    assert load_layout("azerty-fr").key("a").x < load_layout("azerty-fr").key("z").x  # a, z start the top row
