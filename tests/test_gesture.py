"""Gesture typing: a swipe over a word's keys decodes to the word."""
import numpy as np
import pytest

from lm.errors import ConfigError
from lm.suggest.correct import frequency_prior
from lm.suggest.gesture import GestureConfig, GestureDecoder, normalise, resample
from lm.suggest.index import CandidateIndex

WORDS = {"the": 500, "they": 80, "there": 60, "to": 400, "top": 30, "and": 300, "sand": 10, "because": 40,
         "became": 30, "keyboard": 5, "language": 8, "model": 12, "quick": 6, "brown": 4, "fox": 3,
         "jumps": 2, "over": 50, "lazy": 2, "dog": 9, "hello": 3, "world": 7, "swipe": 1}
FLAT = lambda words: [0.0] * len(words)


@pytest.fixture(scope="module")
def decoder():
    return GestureDecoder(CandidateIndex(WORDS))


def centres(decoder, word):
    """The word's key centres, read from the layout: where a careful finger turns."""
    keys = decoder.layout.keys
    return [(keys[ch].x, keys[ch].y) for ch in word]


@pytest.mark.parametrize("word", sorted(WORDS))
def test_a_swipe_through_the_keys_of_a_word_decodes_to_it(decoder, word):
    assert decoder.decode(centres(decoder, word), frequency_prior(decoder.index))[0].word == word
    assert decoder.decode(centres(decoder, word), FLAT)[0].word == word


def test_a_careless_swipe_still_decodes(decoder):
    rng = np.random.default_rng(0)
    for word in ("because", "keyboard", "language", "quick", "world"):
        points = np.array(centres(decoder, word))
        # Touch noise at each turn, and the points between the turns drawn as a finger drags.
        dense = np.concatenate([np.linspace(a, b, 6, endpoint=False) for a, b in zip(points, points[1:])] + [points[-1:]])
        swipe = dense + rng.normal(0, 0.15, dense.shape)
        assert decoder.decode(swipe, frequency_prior(decoder.index))[0].word == word


def test_the_prior_breaks_a_tie_between_paths_that_look_alike(decoder):
    # "to" and "top" differ by one hop between neighbouring keys: a strong prior for "top" wins.
    swipe = centres(decoder, "to")
    prefers_top = lambda words: [0.0 if w == "top" else -20.0 for w in words]
    assert decoder.decode(swipe, prefers_top)[0].word == "top"
    assert decoder.decode(swipe, FLAT)[0].word == "to"


def test_words_that_start_elsewhere_are_not_offered(decoder):
    offered = {c.word for c in decoder.decode(centres(decoder, "the"), FLAT, k=50)}
    assert offered <= {w for w in WORDS if w[0] in "tgyrfh"}


def test_words_learned_later_are_offered(decoder):
    index = CandidateIndex(WORDS)
    gestures = GestureDecoder(index)
    assert gestures.decode(centres(gestures, "qwerty"), FLAT) == []  # no word starts at q and ends at y
    index.add(["qwerty"])
    assert gestures.decode(centres(gestures, "qwerty"), FLAT)[0].word == "qwerty"


def test_resampling_spaces_points_evenly_along_the_path():
    assert resample(np.array([[0.0, 0.0], [3.0, 0.0]]), 4).tolist() == [[0, 0], [1, 0], [2, 0], [3, 0]]
    # An L: 2 along x then 2 along y, 5 points one unit apart along the way.
    assert resample(np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]]), 5).tolist() == [[0, 0], [1, 0], [2, 0], [2, 1], [2, 2]]
    assert resample(np.array([[1.0, 1.0]]), 3).tolist() == [[1, 1]] * 3  # a tap


def test_normalising_moves_to_the_centroid_and_scales_to_a_unit_box():
    # Centroid (14/3, 8/3); the box is 4 wide and 2 high, so everything is divided by 4.
    path = np.array([[2.0, 2.0], [6.0, 2.0], [6.0, 4.0]])
    assert normalise(path).ravel().tolist() == pytest.approx([-2 / 3, -1 / 6, 1 / 3, -1 / 6, 1 / 3, 1 / 3])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        GestureDecoder(CandidateIndex(WORDS), config=GestureConfig(points=1))
