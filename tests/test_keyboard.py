from dataclasses import dataclass

import pytest

import lm
from lm.evaluate.evaluation import unknown_word_test
from lm.evaluate.keyboard import TextSession, keyboard_metrics, leading_words
from lm.suggest.engine import Suggester, SuggestionSession
from lm.data.tokenizer import CharTokenizer, WordTokenizer

from conftest import make_text


@dataclass
class Suggestion:
    word: str
    probability: float
    completion: str


class FakeSuggester:
    """Offers words from a fixed ranking: the top ones after whitespace, else those extending the typed prefix."""

    def __init__(self, ranked: list[str], trailing: str = ""):
        self.ranked = ranked
        self.trailing = trailing  # appended to every completion, as a keyboard that adds the space
        self.asked: list[str] = []

    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        self.asked.append(text)
        prefix = "" if not text or text[-1].isspace() else text.split()[-1]
        matches = [w for w in self.ranked if w.startswith(prefix)][:k]
        return [Suggestion(w, 1.0, w[len(prefix):] + self.trailing) for w in matches]


TEXT = "the cat sat\non the mat\n"
RANKED = ["the", "on", "a", "cat", "mat", "sat"]  # the strip after a space shows: the, on, a


def test_top_k_accuracy_and_savings_match_a_hand_count():
    metrics = keyboard_metrics(FakeSuggester(RANKED), TEXT)
    # the: shown first, tap + space = 2 keys (of 4)   cat: c, tap, space = 3 (of 4)
    # sat: s, tap, newline = 3 (of 4)                   on: shown second, tap + space = 2 (of 3)
    # the: tap + space = 2 (of 4)                       mat: m, tap, newline = 3 (of 4)
    assert (metrics.words, metrics.top1, metrics.top3, metrics.taps) == (6, 2, 3, 6)
    assert (metrics.keystrokes, metrics.baseline_keystrokes) == (15, 23)
    assert metrics.top1_accuracy == pytest.approx(2 / 6)
    assert metrics.top3_accuracy == pytest.approx(3 / 6)
    assert metrics.keystroke_savings == pytest.approx(1 - 15 / 23)


def test_a_completion_with_the_space_saves_it_and_a_wrong_one_costs_a_backspace():
    metrics = keyboard_metrics(FakeSuggester(RANKED, trailing=" "), TEXT)
    # the 1, cat 2, on 1, the 1; sat and mat: letter, tap, backspace, newline = 4 each
    assert metrics.keystrokes == 13 and metrics.baseline_keystrokes == 23
    assert metrics.keystroke_savings == pytest.approx(10 / 23)


def test_words_never_offered_are_typed_in_full_and_unknown_words_are_skipped():
    metrics = keyboard_metrics(FakeSuggester(RANKED), "the dog <unk> on\n")
    # the: 2 keys; dog: never offered, 4 keys; <unk>: skipped; on: tap + newline = 2
    assert (metrics.words, metrics.unknown_words, metrics.taps) == (3, 1, 2)
    assert (metrics.keystrokes, metrics.baseline_keystrokes) == (8, 11)
    assert metrics.to_dict()["keystroke_savings"] == pytest.approx(3 / 11)


def test_punctuation_glued_to_a_word_is_typed_after_tapping_the_word():
    metrics = keyboard_metrics(FakeSuggester(["hello", "world", "."]), "hello world.\n")
    # hello: tap + space = 2 (of 6)   world.: "world" is a hit; tap, then ".", newline = 3 (of 7)
    assert (metrics.top1, metrics.top3, metrics.taps) == (1, 2, 2)
    assert (metrics.keystrokes, metrics.baseline_keystrokes) == (5, 13)


def test_a_suggestion_that_stops_inside_a_run_of_letters_is_not_taken():
    metrics = keyboard_metrics(FakeSuggester(["the"]), "therefore\n")
    assert (metrics.top3, metrics.taps, metrics.keystrokes) == (0, 0, 10)


def test_the_suggester_only_ever_sees_prefixes_of_the_true_text():
    suggester = FakeSuggester(RANKED)
    keyboard_metrics(suggester, TEXT)
    assert suggester.asked[0] == "" and all(TEXT.startswith(t) for t in suggester.asked)
    assert "the cat sat\non the " in suggester.asked  # the second 'the' was asked for after 'on'


def test_a_given_session_is_used_instead_of_rereading_the_text():
    class Recording(TextSession):
        typed = ""

        def type(self, chars):
            Recording.typed += chars
            super().type(chars)

    session = Recording(FakeSuggester(RANKED))
    metrics = keyboard_metrics(None, " " + TEXT, session=session)
    assert Recording.typed == " " + TEXT and metrics.top1 == 2


def test_unknown_words_follow_the_tokenizer():
    is_unknown = unknown_word_test(WordTokenizer(["the", "cat"]))
    assert [is_unknown(w) for w in ("the", "dog", "<unk>")] == [False, True, True]
    is_unknown = unknown_word_test(CharTokenizer(list("abc")))
    assert [is_unknown(w) for w in ("cab", "cod", "<unk>")] == [False, True, True]


def test_leading_words_cuts_after_the_nth_word():
    assert leading_words(" a b\nc d", 3) == " a b\nc"
    assert leading_words("a b", 5) == "a b"


@pytest.mark.parametrize("kind", ["char", "word"])
def test_an_incremental_session_gives_the_same_metrics_as_rereading(tiny_checkpoints, kind):
    loaded = lm.load(tiny_checkpoints(kind))
    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Suggester(model, tokenizer)
    text = leading_words(make_text(10, seed=4), 40)
    reread = keyboard_metrics(suggester, text)
    incremental = keyboard_metrics(suggester, text, session=SuggestionSession(suggester))
    assert incremental == reread and reread.taps > 0
