"""--size presets: their shapes, and flags given beside them win."""
from __future__ import annotations

import json

from click.testing import CliRunner

import lm
from cli import cli
from lm.model import LanguageModel, count_parameters


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
