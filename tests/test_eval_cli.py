import json
import math

import pytest
from click.testing import CliRunner

from cli import cli
from lm.evaluate.keyboard import KeyboardMetrics

from conftest import make_text


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(make_text(40, seed=5))
    return CliRunner()


def test_eval_prints_a_summary_table(runner, tiny_checkpoints):
    result = runner.invoke(cli, ["eval", "text.txt", "-c", str(tiny_checkpoints("char")), "--no-keyboard"])
    assert result.exit_code == 0, result.output
    for row in ("Evaluation of", "text.txt", "perplexity / token", "perplexity / word", "bits / char", "likelihood speed", "words/s on cpu"):
        assert row in result.output
    assert "(--max-words)" not in result.output and "keystroke savings" not in result.output


def test_eval_json_has_comparable_figures_and_states_the_sample(runner, tiny_checkpoints):
    args = ["eval", "text.txt", "-c", str(tiny_checkpoints("word")), "--no-keyboard", "--json", "--max-words", "50"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sampled"] and data["words"] == 50 and data["total_words"] == len(make_text(40, seed=5).split())
    assert data["word_perplexity"] == pytest.approx(math.exp(data["loss"] * data["tokens"] / data["words"]))
    assert data["bits_per_char"] == pytest.approx(data["loss"] * data["tokens"] / data["chars"] / math.log(2))
    assert data["keyboard"] is None and data["config"]["max_words"] == 50


@pytest.mark.parametrize("kind", ["word", "char"])
def test_keyboard_metrics_on_a_bounded_sample(runner, tiny_checkpoints, kind):
    args = ["eval", "text.txt", "-c", str(tiny_checkpoints(kind)), "--keyboard-words", "30"]
    table = runner.invoke(cli, args)
    assert table.exit_code == 0, table.output
    for row in ("keyboard sample", "first 30 words, 0 <unk> skipped", "top-1 accuracy", "top-3 accuracy", "keystroke savings"):
        assert row in table.output
    keyboard = json.loads(runner.invoke(cli, [*args, "--json"]).output)["keyboard"]
    assert keyboard["words"] + keyboard["unknown_words"] == 30
    pressed, baseline = keyboard["keystrokes"], keyboard["baseline_keystrokes"]
    line = f"{1 - pressed / baseline:.1%} saved ({baseline - pressed:,} of {baseline:,} keys; {pressed:,} pressed)"
    assert line in table.output  # the keys saved, not the keys pressed, are the share's numerator
    assert 0 <= keyboard["top1_accuracy"] <= keyboard["top3_accuracy"] <= 1
    assert keyboard["top3"] > 0 and 0 < keyboard["keystroke_savings"] < 1  # a trained model helps


def test_batch_does_not_change_the_reported_loss(runner, tiny_checkpoints):
    losses = []
    for batch in ("1", "8"):
        args = ["eval", "text.txt", "-c", str(tiny_checkpoints("char")), "--no-keyboard", "--json", "--batch", batch, "--overlap", "64"]
        losses.append(json.loads(runner.invoke(cli, args).output)["loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def test_int8_evaluates_the_quantized_model_close_to_the_exact_one(runner, tiny_checkpoints):
    losses = {}
    for flag in ("--fp32", "--int8"):
        args = ["eval", "text.txt", "-c", str(tiny_checkpoints("char")), "--no-keyboard", "--json", flag]
        data = json.loads(runner.invoke(cli, args).output)
        assert data["config"]["int8"] == (flag == "--int8")
        losses[flag] = data["loss"]
    assert losses["--int8"] != losses["--fp32"] and losses["--int8"] == pytest.approx(losses["--fp32"], rel=0.02)
    clash = runner.invoke(cli, ["eval", "text.txt", "-c", str(tiny_checkpoints("char")), "--int8", "--device", "cuda"])
    assert (clash.exit_code, clash.output) == (1, "Error: --int8 runs on the CPU, not --device cuda — drop one of the two\n")


def test_missing_text_is_one_error_line(runner, tiny_checkpoints):
    result = runner.invoke(cli, ["eval", "nope.txt", "-c", str(tiny_checkpoints("char"))])
    assert result.exit_code == 1
    assert result.output == "Error: nope.txt does not exist — check the path\n"


def test_missing_checkpoint_says_how_to_train_one(runner):
    result = runner.invoke(cli, ["eval", "text.txt"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: no checkpoint found under checkpoints/ — train one first with `lm train CORPUS`, "
        "or pass --checkpoint PATH\n"
    )


def test_bad_max_words_is_one_error_line(runner, tiny_checkpoints):
    result = runner.invoke(cli, ["eval", "text.txt", "-c", str(tiny_checkpoints("char")), "--max-words", "0"])
    assert result.exit_code == 1
    assert result.output == "Error: --max-words must be positive, not 0 — leave it out to evaluate everything\n"


def test_the_keystroke_line_counts_the_keys_saved_and_the_keys_pressed():
    from cli_render import keystroke_line

    assert keystroke_line(KeyboardMetrics(keystrokes=2435, baseline_keystrokes=3000)) == \
        "18.8% saved (565 of 3,000 keys; 2,435 pressed)"
    assert keystroke_line(KeyboardMetrics(keystrokes=845, baseline_keystrokes=887)) == "4.7% saved (42 of 887 keys; 845 pressed)"


def test_per_word_perplexity_says_what_it_is(runner, tiny_checkpoints):
    args = ["eval", "text.txt", "-c", str(tiny_checkpoints("char")), "--no-keyboard"]
    table = runner.invoke(cli, args).output
    word_perplexity = json.loads(runner.invoke(cli, [*args, "--json"]).output)["word_perplexity"]
    row = next(line for line in table.splitlines() if "perplexity / word" in line)
    assert f"{word_perplexity:.2f}" in row
    below = " ".join(table[table.index(row):].split())  # the note under the table, however it wraps
    assert "perplexity / word: the token losses summed over each word, so char, subword and word models compare" in below


def test_progress_bar_draws_on_a_terminal_and_stays_silent_when_disabled():
    import io

    from rich.console import Console

    from cli_render import EvalBar

    for show in (True, False):
        buffer = io.StringIO()
        with EvalBar(Console(file=buffer, force_terminal=True, width=100), show=show) as bar:
            bar.start("loss", 10)
            bar.advance(10)
        assert ("likelihood (tokens)" in buffer.getvalue()) == show
