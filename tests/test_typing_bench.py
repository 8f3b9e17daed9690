"""bench/typing.py on a tiny text, so the benchmark cannot rot; its counting against hand counts."""
import math
import sys
from pathlib import Path

import pytest
from conftest import make_text

from lm.suggest.correct import Action, Candidate, Correction

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.append(str(BENCH))  # at the end: bench/typing.py must not stand in for the standard library's typing
import typing_noise


def load_bench():
    """bench/typing.py by path: its module name would shadow the standard library's `typing`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("typing_benchmark", BENCH / "typing.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()
TRAIN, TEST = make_text(400, seed=0), make_text(40, seed=1)
QUIET = typing_noise.NoiseConfig(sigma_x=1e-3, sigma_y=1e-3, omission=0, insertion=0, double_tap=0, swap=0,
                                 missed_space=0, turn_sigma=0.01, bow=0.0, point_jitter=0.0)


@pytest.fixture(scope="module")
def result():
    return bench.run(TRAIN, TEST, max_words=120, seed=0)


def test_every_keyboard_is_measured_on_the_same_words(result):
    assert result["words"] == 120
    assert set(result["keyboards"]) == {"none", "spell checker", "lm (frequency prior)"}
    none = result["keyboards"]["none"]
    assert none["correction_precision"] == none["correction_recall"] == none["clean_changed"] == 0.0
    assert none["next_top3"] == 0.0 and none["swipe_top1"] is None
    assert 0.0 < result["typed_wrong"] < 0.5  # the typist slips, but not on every word
    assert result["keyboards"]["spell checker"]["correction_recall"] > 0.5
    assert "| auto-correction F(0.9) |" in bench.table(result)


def test_the_typist_is_seeded():
    a, b = bench.run(TRAIN, TEST, max_words=30, seed=3), bench.run(TRAIN, TEST, max_words=30, seed=3)
    strip = lambda r: {n: {k: v for k, v in s.items() if k != "ms"} for n, s in r["keyboards"].items()}
    assert strip(a) == strip(b)
    assert a["typed_wrong"] == b["typed_wrong"]


def test_a_typist_without_slips_leaves_nothing_to_correct():
    quiet = bench.run(TRAIN, TEST, max_words=60, seed=0, noise=QUIET)
    assert quiet["typed_wrong"] == 0.0
    lm = quiet["keyboards"]["lm (frequency prior)"]
    assert lm["clean_changed"] == 0.0
    assert lm["completion_top3_noisy"] == lm["completion_top3_clean"]
    assert lm["swipe_top1"] == 1.0  # the swipes run through the key centres: every word decodes


def test_the_counts_make_precision_recall_and_f_by_hand():
    tally = bench.Tally()
    # (truth, typed, keyboard's word): a typo fixed, two typos left, a clean word changed, two kept.
    for truth, typed, out in [("the", "teh", "the"), ("sky", "skt", "skt"), ("in", "un", "un"),
                              ("cat", "cat", "car"), ("dog", "dog", "dog"), ("red", "red", "red")]:
        bench._tally_correction(tally, truth, typed, out)
    summary = tally.summary()
    precision, recall = 1 / 2, 1 / 3  # one right change of two changes; one fix of three typos
    assert summary["correction_precision"] == pytest.approx(precision)
    assert summary["correction_recall"] == pytest.approx(recall)
    beta = 0.9
    assert summary["correction_f"] == pytest.approx((1 + beta**2) * precision * recall / (beta**2 * precision + recall))
    assert summary["clean_changed"] == pytest.approx(1 / 3)


def test_a_sweep_weighs_a_known_typed_word_by_its_prior():
    def decision(typed_prior):
        return Correction("then", Action.KEEP, "", [
            Candidate("then", channel=0.0, prior=typed_prior, typed=True),
            Candidate("the", channel=-3.0, prior=-0.5)])

    # "then" is a word: its own prior (-1) keeps it. Were it unknown (-12), "the" would win.
    records = [("then", decision(-1.0), True), ("the", decision(-12.0), False)]
    result = bench.sweep(records, [0.5], [-12.0], [1.0])[0]
    assert result["clean_changed"] == 0.0 and result["correction_recall"] == 1.0


def test_a_sweep_at_the_run_settings_repeats_the_run(result):
    config = bench.CorrectConfig()
    again = bench.sweep(result["records"], [config.threshold], [config.unknown_prior], [config.prior_weight])[0]
    ran = result["keyboards"]["lm (frequency prior)"]
    for key in ("correction_precision", "correction_recall", "correction_f", "clean_changed"):
        assert again[key] == pytest.approx(ran[key])
    never = bench.sweep(result["records"], [1.01], [config.unknown_prior], [config.prior_weight])[0]
    assert never["correction_recall"] == 0.0 and not math.isnan(never["correction_f"])


def test_the_typist_slips_as_configured():
    layout = bench.load_layout()
    always_swaps = typing_noise.Typist(layout, typing_noise.NoiseConfig(
        sigma_x=1e-3, sigma_y=1e-3, omission=0, insertion=0, double_tap=0, swap=1.0), seed=0)
    typed, touches = always_swaps.tap("ab")
    assert typed == "ba" and len(touches) == 2
    drops = typing_noise.Typist(layout, typing_noise.NoiseConfig(omission=1.0), seed=0)
    assert drops.tap("word") == ("", [])
    assert typing_noise.Typist(layout, QUIET, seed=0).tap("Word")[0] == "Word"


def test_lms_keyboard_is_the_engines_and_reads_the_context(tiny_checkpoints):
    checkpoint = str(tiny_checkpoints("word"))
    engine = bench.EngineKeyboard(checkpoint, int8=False, correct=bench.CorrectConfig())
    assert engine.next_words("the clouds are in the")[0] == "sky"  # the tiny text always goes on so
    assert engine.finish("the clouds are in the", "skt", None) == "sky"
    sky = lambda: next(c.prior for c in engine._last.candidates if c.word == "sky")  # noqa: E731
    after_clouds = sky()
    engine.finish("my friend sees the", "skt", None)
    assert after_clouds > sky() + 1.0  # the prior reads the context: sky is far likelier after the clouds
    result = bench.run(TRAIN, TEST, max_words=20, seed=0, checkpoint=checkpoint, spell_checker=False)
    assert list(result["keyboards"]) == ["none", "lm (model)"]
    assert result["keyboards"]["lm (model)"]["next_top3"] > 0.3