"""`lm eval --typing`: the typist with slips, through the checkpoint's keyboard (lm/evaluate/typing.py)."""
import json

import pytest
from click.testing import CliRunner

import lm
from cli import cli
from lm.evaluate.typing import run_typing
from lm.evaluate.typist import NoiseConfig, Typist
from lm.suggest.keyboard import Keyboard

TEXT = "the clouds are in the sky .\nmy friend sees the river .\n"
WORDS = [w for w in TEXT.split() if w.isalpha()]  # the words typed: 10, the full stops are context only
QUIET = NoiseConfig(sigma_x=1e-3, sigma_y=1e-3, omission=0, insertion=0, double_tap=0, swap=0, missed_space=0,
                    turn_sigma=0.01, bow=0.0, point_jitter=0.0)


class SwapsSky(Typist):
    """Types every word as it is, but "sky" with its first two letters swapped: "ksy"."""

    def tap(self, word):
        typed, touches = super().tap(word)
        if word == "sky":
            return typed[1] + typed[0] + typed[2:], [touches[1], touches[0], *touches[2:]]
        return typed, touches


@pytest.fixture(scope="module")
def keyboard(tiny_checkpoints):
    return Keyboard.load(lm.load(tiny_checkpoints("word")))


def test_a_typist_without_slips_types_the_text_and_nothing_is_corrected(keyboard):
    assert [Typist(keyboard.layout, QUIET).tap(w)[0] for w in WORDS] == WORDS
    result = run_typing(keyboard, TEXT, words=100, noise=QUIET)
    assert (result.words, result.typed_wrong) == (len(WORDS), 0.0)
    for name, figures in result.keyboards.items():
        # Nothing typed wrong and nothing changed: no precision, no recall, so F is 0.
        assert (figures["clean_changed"], figures["correction_precision"], figures["correction_recall"],
                figures["correction_f"]) == (0.0, 0.0, 0.0, 0.0), name


def test_a_swapped_word_in_a_context_that_fixes_it_is_corrected(keyboard):
    result = run_typing(keyboard, TEXT, words=100, typist=SwapsSky(keyboard.layout, QUIET))
    assert result.typed_wrong == pytest.approx(1 / len(WORDS))  # "ksy", the one slip
    figures = result.keyboards["lm"]
    assert (figures["correction_recall"], figures["correction_precision"], figures["clean_changed"]) == (1.0, 1.0, 0.0)
    assert figures["correction_f"] == pytest.approx(1.0)  # (1 + b²)·1·1 / (b²·1 + 1)
    assert result.keyboards["none"]["correction_recall"] == 0.0  # the plain keyboard leaves "ksy"


def test_the_first_words_only(keyboard):
    assert run_typing(keyboard, TEXT, words=4, noise=QUIET).words == 4


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(TEXT)
    return CliRunner()


def test_eval_prints_the_typing_table_and_its_json(runner, tiny_checkpoints):
    args = ["eval", "text.txt", "-c", str(tiny_checkpoints("word")), "--no-keyboard", "--typing", "--typing-words", "6"]
    table = runner.invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "Typing with slips: 6 words" in table.output
    for row in ("next-word top-3", "completion top-3, noisy prefix", "auto-correction F(0.9)",
                "clean words wrongly changed", "swipe top-1", "ms per finish, p50 / p99", "none", "lm"):
        assert row in table.output
    typing = json.loads(runner.invoke(cli, [*args, "--json"]).output)["typing"]
    assert typing["words"] == 6 and list(typing["keyboards"])[0] == "none" and "lm" in typing["keyboards"]
    plain = json.loads(runner.invoke(cli, args[:-3] + ["--json"]).output)
    assert plain["typing"] is None  # only with --typing


def test_a_bad_typing_words_is_one_line(runner, tiny_checkpoints):
    result = runner.invoke(cli, ["eval", "text.txt", "-c", str(tiny_checkpoints("word")), "--typing-words", "0"])
    assert (result.exit_code, result.output) == (1, "Error: --typing-words must be positive, not 0 — pass 1 or more\n")
