"""The channel model against probabilities worked out by hand from its documented rates."""
import json
import math
import random

import pytest

from lm.errors import ConfigError
from lm.suggest.channel import Channel, ChannelConfig, Edit
from lm.suggest.layout import LAYOUTS, load_layout

C = ChannelConfig()
KEEP = math.log(1 - C.substitution - C.spelling - C.omission - C.insertion - C.doubling - C.transposition)


def centres() -> dict[str, tuple[float, float]]:
    """Key centres read straight from the bundled QWERTY file (not through lm.suggest.layout)."""
    doc = json.loads((LAYOUTS / "qwerty-en-us.json").read_text())
    return {k["key"]: (k["x"], k["y"]) for k in doc["keys"]}


def neighbour_share(typed: str, intended: str, sigma: float = C.touch_sigma) -> float:
    """A slip off `intended` lands on `typed`: Gaussian weight at its centre over all other letters'."""
    keys = centres()
    ix, iy = keys[intended]

    def weight(k):
        x, y = keys[k]
        return math.exp(-((x - ix) ** 2 + (y - iy) ** 2) / (2 * sigma**2))

    others = [k for k in keys if k not in (intended, " ")]
    return weight(typed) / sum(weight(k) for k in others)


@pytest.fixture(scope="module")
def channel():
    return Channel()


def test_a_clean_word_costs_the_keep_rate_per_letter(channel):
    assert channel.log_prob("the", "the") == pytest.approx(3 * KEEP)


def test_one_neighbour_substitution_costs_its_documented_weight(channel):
    slip = math.log(C.substitution * neighbour_share("g", "h") + C.spelling / 26)
    assert channel.log_prob("tge", "the") == pytest.approx(2 * KEEP + slip)
    # A far key is only a spelling error: much less likely than the neighbour.
    far = math.log(C.substitution * neighbour_share("p", "h") + C.spelling / 26)
    assert channel.log_prob("tpe", "the") == pytest.approx(2 * KEEP + far)
    assert far < slip - 3
    # At the edge of the keyboard a slip has fewer places to go: "q" slips to "w" more often
    # than "w" (between "q" and "e") slips to "q".
    corner = math.log(C.substitution * neighbour_share("w", "q") + C.spelling / 26)
    assert channel.log_prob("wuit", "quit") == pytest.approx(3 * KEEP + corner)
    assert neighbour_share("w", "q") > 1.5 * neighbour_share("q", "w")


@pytest.mark.parametrize("typed, intended, letters_kept, event", [
    ("teh", "the", 1, math.log(C.transposition)),
    ("th", "the", 2, math.log(C.omission)),
    ("thxe", "the", 3, math.log(C.insertion / 26)),
    ("thee", "the", 3, math.log(C.doubling)),
    ("leter", "letter", 5, math.log(C.undoubling)),
    ("inthe", "in the", 5, math.log(C.missed_space)),
    ("th e", "the", 3, math.log(C.extra_space)),
    ("cafe", "café", 4, math.log(C.accent_loss)),
    ("The", "the", 3, math.log(C.case_loss)),
])
def test_each_kind_of_slip_costs_its_rate(channel, typed, intended, letters_kept, event):
    assert channel.log_prob(typed, intended) == pytest.approx(letters_kept * KEEP + event)


def test_the_alignment_names_the_slips(channel):
    assert channel.align("teh", "the") == [Edit.KEEP, Edit.TRANSPOSITION]
    assert channel.align("inthe", "in the") == [Edit.KEEP, Edit.KEEP, Edit.MISSED_SPACE, Edit.KEEP, Edit.KEEP, Edit.KEEP]
    assert channel.align("leter", "letter")[3] is Edit.UNDOUBLING
    assert channel.align("thee", "the")[-1] is Edit.DOUBLING


def test_a_prefix_is_aligned_with_the_start_of_the_word(channel):
    # "recie" is "recei" with one swap; the rest of "received" is not typed yet and costs nothing.
    assert channel.log_prob_prefix("recie", "received") == pytest.approx(3 * KEEP + math.log(C.transposition))
    # As a whole word, the best alignment leaves out three letters: rec(e)i(v)e(d).
    assert channel.log_prob("recie", "received") == pytest.approx(5 * KEEP + 3 * math.log(C.omission))


def test_a_bound_gives_up_on_far_words(channel):
    assert channel.log_prob("xqz", "the", bound=-5.0) == -math.inf
    assert channel.log_prob("the", "the", bound=-5.0) == pytest.approx(3 * KEEP)


def test_touches_are_weighed_by_the_gaussian_around_the_intended_key(channel):
    a, s = centres()["a"], centres()["s"]
    sigma, area = C.touch_sigma, 1.0 * 1.4
    at_centre = math.log((C.keep + C.substitution) * area / (2 * math.pi * sigma**2) + C.spelling / 26)
    assert channel.log_prob_touches([a], "a") == pytest.approx(at_centre)
    # Halfway between "a" and "s": either is as likely; the key it fell on does not matter.
    between = ((a[0] + s[0]) / 2, a[1])
    assert channel.log_prob_touches([between], "a") == pytest.approx(channel.log_prob_touches([between], "s"))
    assert channel.log_prob_touches([between], "a") < at_centre


def test_fit_recovers_an_omission_rate_from_generated_pairs():
    rng = random.Random(0)
    words = ["keyboard", "language", "model", "typing", "letters", "phone", "finger", "window", "corpus", "train"]
    pairs = []
    for _ in range(1500):
        word = rng.choice(words)
        pairs.append(("".join(ch for ch in word if rng.random() >= 0.06), word))
    fitted = Channel().fit(pairs).config
    assert fitted.omission == pytest.approx(0.06, abs=0.01)
    assert fitted.substitution < 0.002  # no substitutions were generated
    assert fitted.touch_sigma == C.touch_sigma


def test_bad_rates_are_refused():
    with pytest.raises(ConfigError, match="add up to 1"):
        Channel(ChannelConfig(substitution=0.5, omission=0.5))
    with pytest.raises(ConfigError, match="omission"):
        Channel(ChannelConfig(omission=0.0))


def test_layouts_load_by_name_or_path(tmp_path):
    layout = load_layout()
    assert layout.nearest(*centres()["g"]) == "g"
    assert layout.distance("a", "s") == pytest.approx(1.0)
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"name": "two", "keys": [{"key": "a", "x": 0.5, "y": 0.5, "width": 1, "height": 1},
                                                        {"key": "b", "x": 3.5, "y": 0.5, "width": 1, "height": 1}]}))
    assert load_layout(path).distance("a", "b") == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="cannot read the layout"):
        load_layout(tmp_path / "missing.json")
    path.write_text('{"keys": [{"key": "a"}]}')
    with pytest.raises(ConfigError, match="without key, x, y"):
        load_layout(path)
