"""The decoder: corrections, what is never corrected, casing, undo, completions with slips."""
import math

import pytest

from lm.errors import ConfigError
from lm.suggest.correct import Action, CorrectConfig, Decoder, Slot, frequency_prior
from lm.suggest.index import CandidateIndex

COUNTS = {"the": 5000, "then": 300, "tech": 20, "in": 3000, "sky": 50, "received": 40, "receive": 60,
          "recent": 80, "review": 30, "letter": 40, "because": 200, "cafe": 5, "hello": 10}


@pytest.fixture
def decoder():
    return Decoder(CandidateIndex(COUNTS))


@pytest.fixture
def prior(decoder):
    return frequency_prior(decoder.index)


def test_a_slip_is_corrected_and_one_backspace_undoes_it(decoder, prior):
    result = decoder.correct("teh", prior)
    assert (result.action, result.word, result.undo()) == (Action.CORRECT, "the", "teh")
    # LatinIME's strip: the typed word on the left, the correction in the centre.
    assert result.strip()[:2] == [("teh", Slot.TYPED), ("the", Slot.CORRECTION)]
    assert [c.typed for c in result.candidates].count(True) == 1
    assert sum(c.posterior for c in result.candidates) == pytest.approx(1.0)


def test_the_posterior_is_channel_plus_prior_normalised(decoder, prior):
    result = decoder.correct("teh", prior)
    by_word = {c.word: c for c in result.candidates}
    the, typed = by_word["the"], by_word["teh"]
    assert the.channel == pytest.approx(decoder.channel.log_prob("teh", "the"))
    assert the.prior == pytest.approx(math.log((5000 + 1) / (sum(COUNTS.values()) + len(COUNTS) + 1)))
    assert typed.prior == CorrectConfig().unknown_prior  # "teh" is no word of the index
    weight = CorrectConfig().prior_weight
    ratio = math.exp(the.channel + weight * the.prior - typed.channel - weight * typed.prior)
    assert the.posterior / typed.posterior == pytest.approx(ratio)



def test_an_unknown_word_with_a_capital_is_taken_for_a_name_more_readily(decoder, prior):
    lower = next(c for c in decoder.correct("hellp", prior).candidates if c.typed)
    capital = next(c for c in decoder.correct("Hellp", prior).candidates if c.typed)
    assert (lower.prior, capital.prior) == (CorrectConfig().unknown_prior, CorrectConfig().unknown_name_prior)
    assert capital.prior > lower.prior


def test_the_prior_decides_between_candidates(decoder):
    favours_tech = lambda words: [0.0 if w == "tech" else -30.0 for w in words]
    assert decoder.correct("teh", favours_tech).word == "tech"


def test_a_clean_word_is_kept_with_the_typed_word_in_the_centre(decoder, prior):
    result = decoder.correct("then", prior)
    assert (result.action, result.word, result.reason) == (Action.KEEP, "then", "typed word likeliest")
    assert result.strip()[1] == ("then", Slot.TYPED)


def test_below_the_threshold_the_typed_word_stays(prior):
    sure = Decoder(CandidateIndex(COUNTS), config=CorrectConfig(threshold=1.0))
    result = sure.correct("teh", prior)
    assert (result.action, result.reason, result.word) == (Action.KEEP, "below threshold", "teh")
    assert result.candidates[0].word == "the"  # still offered beside it


@pytest.mark.parametrize("typed, word", [("Teh", "The"), ("teh", "the"), ("Inthe", "In the")])
def test_the_typed_casing_is_kept(decoder, prior, typed, word):
    assert decoder.correct(typed, prior).word == word


def test_capitals_are_corrected_only_when_asked(prior):
    assert Decoder(CandidateIndex(COUNTS)).correct("TEH", prior).action is Action.KEEP
    assert Decoder(CandidateIndex(COUNTS), config=CorrectConfig(correct_caps=True)).correct("TEH", prior).word == "THE"


@pytest.mark.parametrize("typed, reason", [
    ("t3h", "number"), ("2nd", "number"), ("www.teh.org", "web address"), ("https://teh.io/x", "web address"),
    ("teh.com", "web address"), ("me@teh.org", "e-mail address"), ("teh😀", "emoji"), ("тех", "not Latin script"),
    ("TEH", "capitals"),
])
def test_never_corrected(decoder, prior, typed, reason):
    result = decoder.correct(typed, prior)
    assert (result.action, result.reason, result.word) == (Action.KEEP, reason, typed)


def test_user_and_learned_words_are_never_corrected_and_are_offered(decoder, prior):
    decoder.add_user_words(["Teh"])
    assert decoder.correct("teh", prior).reason == "user word"
    decoder.learn(["skyy"])
    assert "skyy" in decoder.index
    assert decoder.correct("skyy", prior).action is Action.KEEP


def test_two_words_run_together_are_split_and_a_stray_space_is_joined(decoder, prior):
    assert decoder.correct("inthe", prior).word == "in the"
    assert decoder.correct("th e", prior).word == "the"
    # Three slips with the space: only the joined string is near enough to search from.
    assert "because" in [c.word for c in decoder.correct("bc ausse", prior).candidates]


def test_a_known_word_is_never_split_in_two():
    index = CandidateIndex({"the": 5000, "rapist": 1, "therapist": 1, "in": 3000})
    decoder = Decoder(index)
    words = [c.word for c in decoder.correct("therapist", frequency_prior(index)).candidates]
    assert "the rapist" not in words and words[0] == "therapist"


def test_omission_insertion_and_doubling_are_corrected(decoder, prior):
    assert decoder.correct("becuse", prior).word == "because"
    assert decoder.correct("becausse", prior).word == "because"
    assert decoder.correct("leter", prior).word == "letter"


def test_touches_decide_between_neighbours(decoder):
    flat = lambda words: [0.0] * len(words)
    keys = decoder.channel.layout.keys
    # "skt" typed, but the last touch fell on the edge of "t" toward "y": "sky" is meant.
    touches = [(keys["s"].x, keys["s"].y), (keys["k"].x, keys["k"].y), (keys["t"].x + 0.45, keys["t"].y)]
    assert decoder.channel.keys_of(touches) == "skt"
    assert decoder.correct("skt", flat, touches=touches).word == "sky"
    typed = [c for c in decoder.correct("skt", flat, touches=touches).candidates if c.typed][0]
    assert typed.channel == pytest.approx(decoder.channel.log_prob_touches(touches, "skt"))
    centred = touches[:2] + [(keys["t"].x, keys["t"].y)]
    assert decoder.correct("skt", flat, touches=centred).candidates[0].posterior < \
        decoder.correct("skt", flat, touches=touches).candidates[0].posterior


def test_completions_tolerate_a_slip_in_the_prefix(decoder, prior):
    words = [c.word for c in decoder.complete("recie", prior)]
    assert "received" in words and "receive" in words
    assert [c.word for c in decoder.complete("Becau", prior)] == ["Because"]
    assert all(c.word != "the" for c in decoder.complete("the", prior))  # the typed word itself takes no slot
    assert decoder.complete("hello", prior) == []  # nothing but the typed word starts like it
    # Three letters are taken as typed; from four on, one slip is allowed.
    assert decoder.complete("thw", prior) == []
    assert [c.word for c in decoder.complete("thwn", prior)] == ["then"]


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="threshold"):
        Decoder(CandidateIndex(COUNTS), config=CorrectConfig(threshold=0.0))


def test_the_index_finds_words_and_starts_within_the_bound():
    index = CandidateIndex(COUNTS)
    assert index.near("recieved", 2) == {"received": 1, "receive": 2}
    assert index.near("recieved", 1) == {"received": 1}
    # Starts of 4 to 6 letters one edit from "recie": a letter left out, a swap, a neighbour.
    assert index.near_prefix("recie", 1) == {"rece": 1, "recei": 1, "revie": 1}
    index.add(["recieve"])
    assert index.near_prefix("recie", 0) == {"recie": 0}
    assert index.most_frequent("rec", 2) == ["recent", "receive"]
    index.add({"recipe": 1000})
    assert index.most_frequent("rec", 2) == ["recipe", "recent"]
