"""--size presets: their shapes, and flags given beside them win."""
from __future__ import annotations

import json
import random

from click.testing import CliRunner

import lm
from cli import cli
from lm.model.network import LanguageModel, count_parameters


def test_tiny_is_a_phone_keyboard_model_of_about_1_4_million_parameters():
    model_config, _ = lm.apply_size("tiny", lm.ModelConfig(vocab_size=10_000), lm.TrainConfig())
    # embedding 10,000×96 (tied with the output layer, whose bias is 10,000), one LSTM layer of
    # 4×256×(96+256) weights and 2×4×256 biases, a 256→96 projection.
    by_hand = 10_000 * 96 + 10_000 + 4 * 256 * (96 + 256) + 2 * 4 * 256 + 256 * 96
    assert count_parameters(LanguageModel(model_config)) == by_hand == 1_357_072


def test_a_preset_fills_only_what_was_not_given():
    model_config, train_config = lm.apply_size("large", lm.ModelConfig(), lm.TrainConfig(lr=5.0), given={"lr"})
    assert (model_config.layers, model_config.hidden, model_config.emb, model_config.weight_drop) == (3, 1150, 400, 0.5)
    assert (train_config.optimizer, train_config.average, train_config.vary_bptt, train_config.lr) == ("sgd", "asgd", True, 5.0)


def test_size_on_the_command_line_with_a_flag_beside_it(tmp_path, corpus_file):
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", str(corpus_file), "--size", "tiny", "--hidden", "64", "--max-steps", "3",
                                      "--batch", "4", "--no-tune-cache", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    model = json.loads((out / "config.json").read_text())["model"]
    assert (model["layers"], model["hidden"], model["emb"], model["dropout"]) == (1, 64, 96, 0.1)
    bad = CliRunner().invoke(cli, ["train", str(corpus_file), "--size", "huge"])
    assert bad.exit_code != 0 and "huge" in bad.output


# The budget rule (--size auto). Recurrent weights and speeds of three made-up sizes, so the
# expected choices can be worked out by hand.
WEIGHTS = {"tiny": 400_000, "small": 1_000_000, "medium": 4_000_000}
SPEEDS = {"tiny": 20_000.0, "small": 8_000.0, "medium": 3_000.0, "classic": 9_000.0}  # tokens/s
CHARS, WORDS, MANY_WORDS = 65, 10_000, 33_000  # vocabularies: characters, a tied word layer, an adaptive softmax's


def test_repeated_tokens_count_less_with_each_epoch():
    assert lm.training.presets.useful_tokens(1000, 0.5) == 500
    assert lm.training.presets.useful_tokens(1000, 1) == 1000
    # one half-life of repeats after the first pass: 1 + 15.4 × (1 − 1/e) passes' worth
    assert abs(lm.training.presets.useful_tokens(1000, 16.4) - 1000 * (1 + 15.4 * (1 - 0.36787944))) < 1e-3
    assert lm.training.presets.useful_tokens(1000, 1000) < 1000 * 16.5  # never more than 1 + 15.4 passes


def test_the_budget_rule_picks_a_smaller_model_for_a_tiny_corpus_or_a_short_time():
    def choose(tokens, seconds):
        return lm.training.presets.choose_size(tokens, seconds, 10, WEIGHTS, SPEEDS.__getitem__, CHARS).size

    # At 0.8 useful tokens per weight: an hour lets medium read 10.8 M tokens of a large corpus
    # (≥ 0.8 × 4 M); 15 minutes only 2.7 M, so small (7.2 M ≥ 0.8 M); a 20k-token corpus read
    # hundreds of times is worth ~328k tokens, too few for small: tiny.
    assert choose(100_000_000, 3600) == "medium"
    assert choose(100_000_000, 900) == "small"
    assert choose(20_000, 900) == "tiny"
    # Without a time limit, ten epochs: 2 M tokens are worth 2 M × (1 + 15.4 (1 − e^(−9/15.4))) ≈ 15.6 M;
    # 200k tokens ≈ 1.56 M (small); 50k ≈ 391k (tiny).
    assert choose(2_000_000, None) == "medium"
    assert choose(200_000, None) == "small"
    assert choose(50_000, None) == "tiny"


def test_a_word_vocabulary_gets_the_classic_recipe_when_the_time_cannot_feed_medium():
    def choose(tokens, seconds, vocab=WORDS):
        return lm.training.presets.choose_size(tokens, seconds, 10, WEIGHTS, SPEEDS.__getitem__, vocab).size

    # 1 M words: in 2 minutes medium reads 360k tokens (< 0.8 × 4 M) and small would be chosen, so
    # the word vocabulary takes the classic recipe; in an hour medium reads 10.8 epochs, worth
    # 1 M × (1 + 15.4 (1 − e^(−9.8/15.4))) ≈ 8.3 M ≥ 3.2 M: medium.
    assert choose(1_000_000, 120) == "classic"
    assert choose(1_000_000, 3600) == "medium"
    # The same hour: 10 M words feed medium (10.8 M tokens in 1.08 epochs); 100 k words read 108
    # times are worth only ≈ 1.64 M: small is fed, and a word vocabulary gets the classic recipe.
    assert choose(10_000_000, 3600) == "medium"
    assert choose(100_000, 3600) == "classic"
    # Characters and an adaptive softmax's vocabulary keep AdamW's sizes; so does a run by epochs.
    assert choose(1_000_000, 120, CHARS) == "small"
    assert choose(1_000_000, 120, MANY_WORDS) == "small"
    assert choose(200_000, None) == "small"


def test_a_timed_plan_counts_no_more_epochs_than_the_run_will_take():
    # An hour at medium's 3,000 tokens/s buys 10.8 passes over 1 M tokens, but --epochs 10 ends
    # the run first: the plan says 10, and its line says why.
    plan = lm.training.presets.choose_size(1_000_000, 3600, 10, WEIGHTS, SPEEDS.__getitem__, CHARS)
    assert (plan.size, plan.epochs, plan.seen_tokens) == ("medium", 10.0, 10_000_000)
    line = plan.describe(lm.ModelConfig(), lm.TrainConfig(), 3600)
    assert "≈ 10.0 epochs (--epochs stops it first: the time would buy 10.8)" in line
    assert plan.at_speed(2_000, 3600).epochs == 7.2  # a slower run is not capped
    assert plan.at_speed(6_000, 3600).epochs == 10.0


def test_a_run_of_few_epochs_gets_less_dropout():
    def plan(epochs):
        return lm.training.presets.Plan("medium", 1000.0, epochs * 1e6, epochs, 1_000_000)

    assert plan(2.5).dropout(0.3) == 0.1  # WikiText-2 or wt1m in 15 minutes on this machine
    assert plan(3.99).dropout(0.2) == 0.1
    assert plan(4.0).dropout(0.3) == 0.3  # Tiny Shakespeare in 5 minutes reads 8 epochs
    assert plan(2.0).dropout(0.05) == 0.05  # never raised


def test_auto_size_lowers_the_dropout_of_a_short_run_unless_it_is_given(tmp_path, monkeypatch):
    # A fixed speed, not this machine's: a slower CI machine timed tiny and the test read no rule.
    monkeypatch.setattr(lm.training.setup, "measure_speed", lambda *args, **kwargs: 160_000.0)
    words = "the cat sees a dog in our garden and my friend likes it very much".split()
    rng = random.Random(0)
    corpus = tmp_path / "long.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(20_000)) + "\n")
    # 950 k characters: in 10 s at 160 k tokens/s the plan reads 1.7 epochs, enough for small
    # (0.8 M useful tokens) and short of 4 epochs.
    for given, expected in (([], None), (["--dropout", "0.25"], 0.25)):
        out = tmp_path / f"m{len(given)}"
        result = CliRunner().invoke(cli, ["train", str(corpus), "--hidden", "48", "--max-steps", "2", "--max-time", "10s",
                                          "--no-tune-cache", "--out", str(out), *given])
        assert result.exit_code == 0, result.output
        saved = json.loads((out / "config.json").read_text())
        assert saved["plan"]["epochs"] < lm.training.presets.SHORT_RUN_EPOCHS
        preset = lm.training.presets.SIZES[saved["plan"]["size"]]["model"]["dropout"]
        assert preset > 0.1  # small or medium: a size whose own dropout the rule lowers
        assert saved["model"]["dropout"] == (min(preset, 0.1) if expected is None else expected)
        assert f"dropout {saved['model']['dropout']:g}," in result.output  # the start line says so


def test_auto_size_times_the_sizes_and_keeps_the_flags_given(tmp_path, corpus_file):
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", str(corpus_file), "--hidden", "48", "--max-steps", "2", "--max-time", "10m",
                                      "--batch", "4", "--no-tune-cache", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Size " in result.output and "for 10 min at" in result.output
    assert "lr 0.006, EMA 0.995, batch 4×64" in result.output  # the start line names the average
    saved = json.loads((out / "config.json").read_text())
    chosen = lm.training.presets.SIZES[saved["plan"]["size"]]["model"]
    assert saved["plan"]["tokens_per_s"] > 0
    assert saved["model"]["hidden"] == 48  # given
    assert (saved["model"]["layers"], saved["model"]["emb"], saved["model"]["dropout"]) == \
        (chosen["layers"], chosen["emb"], chosen["dropout"])
    info = CliRunner().invoke(cli, ["info", "-c", str(out)])
    assert f"{saved['plan']['size']} by --size auto" in info.output


def test_the_classic_recipe_keeps_the_flags_given(tmp_path, monkeypatch):
    monkeypatch.setattr(lm.training.setup, "measure_speed", lambda *args, **kwargs: 9_000.0)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(1_500)]  # a word vocabulary of 1,500, above CLASSIC_VOCAB's floor
    corpus = tmp_path / "words.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(2_000)) + "\n")
    runs, outputs = {}, {}
    for name, given in (("plain", []), ("given", ["--optimizer", "adamw", "--hidden", "48", "--batch", "8"])):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["train", str(corpus), "--tokenizer", "word", "--max-steps", "2", "--max-time", "2m",
                                          "--no-tune-cache", "--out", str(out), *given])
        assert result.exit_code == 0, result.output
        runs[name], outputs[name] = json.loads((out / "config.json").read_text()), result.output
        assert runs[name]["plan"]["size"] == "classic"
    plain, given = (runs[k] for k in ("plain", "given"))
    # 9,000 tokens/s for 2 minutes over 18,000 training words: dozens of epochs, the preset's dropout
    assert (plain["model"]["hidden"], plain["model"]["emb"], plain["model"]["dropout"]) == (200, 200, 0.2)
    assert (plain["training"]["optimizer"], plain["training"]["batch"], plain["training"]["bptt"]) == ("sgd", 20, 35)
    assert "Size classic (2×200 LSTM, emb 200 tied without a projection, dropout 0.2, SGD lr 20, EMA 0.995, batch 20×35)" in outputs["plain"]
    assert (given["model"]["hidden"], given["model"]["emb"]) == (48, 200)
    assert (given["training"]["optimizer"], given["training"]["lr"], given["training"]["batch"]) == ("adamw", None, 8)
