"""Resuming pairs weights with their own tokenizer and corpus; fine-tuning starts from a trained model."""
import json
import os
import shutil
import signal

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import lm
from cli import cli
from lm.checkpoint.folder import WEIGHTS_FILE, newest_checkpoint

from conftest import TINY_MODEL, InterruptAt, make_text, train_tiny

TINY = dict(layers=1, hidden=32, emb=16, dropout=0.0)
SETTINGS = dict(batch=4, bptt=16, lr=1e-2, warmup=0, log_every=5, eval_every=10, patience=0, device="cpu", tune_cache=False)


@pytest.fixture
def two_texts(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(make_text(300, seed=0))
    second.write_text(make_text(300, seed=1).replace("the", "thy").replace("garden", "meadow"))
    return first, second


def test_resume_on_another_corpus_is_refused_naming_both_fingerprints(tmp_path, two_texts):
    first, second = two_texts
    train_tiny(first, tmp_path / "m", "unigram", max_steps=10)
    before = lm.load_corpus([str(first)]).fingerprint()
    after = lm.load_corpus([str(second)]).fingerprint()
    with pytest.raises(lm.ConfigError, match=f"another text \\(corpus fingerprint {before}, this one {after}\\) .*--new-corpus"):
        lm.train(lm.load_corpus([str(second)]), tmp_path / "m", resume=True, config=lm.TrainConfig(max_steps=20))


def test_resume_always_uses_the_checkpoint_tokenizer(tmp_path, two_texts):
    first, second = two_texts
    train_tiny(first, tmp_path / "m", "unigram", max_steps=10)
    vocabulary = (tmp_path / "m" / "tokenizer.model").read_bytes()
    result = lm.train(lm.load_corpus([str(second)]), tmp_path / "m", resume=True, new_corpus=True,
                      config=lm.TrainConfig(max_steps=20, tune_cache=False))
    assert result.step == 20
    # A unigram vocabulary trained on the second text would differ: the saved one must stay.
    assert (tmp_path / "m" / "tokenizer.model").read_bytes() == vocabulary
    loaded = lm.load(tmp_path / "m")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert tokenizer.model_proto == vocabulary


def test_library_resume_keeps_the_saved_settings_and_takes_the_ones_given(tmp_path, corpus_file):
    corpus = lm.load_corpus([str(corpus_file)])
    lm.train(corpus, tmp_path / "m", lm.ModelConfig(**TINY), lm.TokenizerConfig(kind="word", min_count=1),
             lm.TrainConfig(max_steps=10, **SETTINGS))
    result = lm.train(corpus, tmp_path / "m", config=lm.TrainConfig(max_steps=20, tune_cache=False), resume=True)
    assert result.step == 20
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model"]["hidden"] == 32 and saved["tokenizer"]["kind"] == "word"  # not the defaults 512 and char
    assert saved["training"]["batch"] == 4 and saved["training"]["max_steps"] == 20


def test_resume_refuses_a_different_tokenizer(tmp_path, corpus_file):
    train_tiny(corpus_file, tmp_path / "m", "char", max_steps=5)
    with pytest.raises(lm.ConfigError, match="uses a char tokenizer of its own — drop the tokenizer flags"):
        lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "m", tokenizer_config=lm.TokenizerConfig(kind="word"), resume=True)


def test_init_from_starts_from_the_trained_weights_with_a_fresh_optimizer(tmp_path, two_texts):
    first, second = two_texts
    train_tiny(first, tmp_path / "base", "word", max_steps=30)
    # A learning rate too small to move an fp32 weight: the fine-tuned weights are the base's.
    lm.train(lm.load_corpus([str(second)]), tmp_path / "tuned", init_from=tmp_path / "base",
             config=lm.TrainConfig(max_steps=3, lr=1e-30, weight_decay=0.0, **{k: v for k, v in SETTINGS.items() if k != "lr"}))
    base, tuned = load_file(str(tmp_path / "base" / WEIGHTS_FILE)), load_file(str(tmp_path / "tuned" / WEIGHTS_FILE))
    assert base.keys() == tuned.keys()
    for name in base:
        assert torch.equal(base[name], tuned[name]), name
    resume = load_file(str(tmp_path / "tuned" / "resume.safetensors"))
    assert resume["optim.0.step"].item() == 3  # a fresh optimizer: its steps counted from zero
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert saved["init_from"] == str(tmp_path / "base")
    # The base's vocabulary: the second text's new words ("thy", "meadow") are <unk>.
    assert (tmp_path / "tuned" / "tokenizer.json").read_text() == (tmp_path / "base" / "tokenizer.json").read_text()
    tokenizer = lm.load(tmp_path / "tuned").tokenizer
    assert tokenizer.encode("thy meadow") == [tokenizer.unk_id] * 2


def test_init_from_adapts_the_model_to_the_new_text(tmp_path, two_texts):
    first, second = two_texts
    train_tiny(first, tmp_path / "base", "char", max_steps=150)
    loaded = lm.load(tmp_path / "base")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert lm.Suggester(model, tokenizer).suggest("the clouds are in ")[0].word == "the"
    result = lm.train(lm.load_corpus([str(second)]), tmp_path / "tuned", init_from=tmp_path / "base",
                      config=lm.TrainConfig(max_steps=120, **{k: v for k, v in SETTINGS.items() if k != "lr"}))
    loaded = lm.load(tmp_path / "tuned")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert lm.Suggester(model, tokenizer).suggest("thy clouds are in ")[0].word == "thy"
    before = lm.evaluate_text(lm.load(tmp_path / "base").model, lm.load(tmp_path / "base").tokenizer, second.read_text(), lm.EvalConfig(keyboard=False))
    assert result.best["valid_loss"] < 0.9 * before.loss.loss


def test_init_from_refuses_a_different_shape_and_a_resume(tmp_path, corpus_file):
    train_tiny(corpus_file, tmp_path / "base", max_steps=5)
    corpus = lm.load_corpus([str(corpus_file)])
    with pytest.raises(lm.ConfigError, match="--init-from: .* different model \\(hidden 64→128\\)"):
        lm.train(corpus, tmp_path / "t", lm.ModelConfig(hidden=128), init_from=tmp_path / "base")
    with pytest.raises(lm.ConfigError, match="--resume and --init-from exclude each other"):
        lm.train(corpus, tmp_path / "base", resume=True, init_from=tmp_path / "base")
    with pytest.raises(lm.CheckpointError, match="does not exist"):
        lm.train(corpus, tmp_path / "t", init_from=tmp_path / "missing")


def test_init_from_on_the_command_line(tmp_path, corpus_file, monkeypatch):
    train_tiny(corpus_file, tmp_path / "base", max_steps=5)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train", str(corpus_file), "--init-from", "base", "--max-steps", "5",
                                      "--batch", "4", "--no-tune-cache", "--out", "tuned"])
    assert result.exit_code == 0, result.output
    assert "Fine-tuning base: " in result.output
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["model"]["hidden"] == TINY_MODEL["hidden"]


def test_a_save_interrupted_between_its_renames_is_found_without_c(tmp_path, tiny_checkpoints, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_checkpoints("char"), tmp_path / "checkpoints" / "run")
    weights = (tmp_path / "checkpoints" / "run" / WEIGHTS_FILE).read_bytes()
    os.replace(tmp_path / "checkpoints" / "run", tmp_path / "checkpoints" / "run.old")  # after the first rename
    assert newest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "run"
    assert (tmp_path / "checkpoints" / "run" / WEIGHTS_FILE).read_bytes() == weights
    folder = tmp_path / "checkpoints" / "run"
    expected = [s.word for s in lm.Suggester(lm.load(folder).model, lm.load(folder).tokenizer, lexicon=lm.Lexicon.load(folder)).suggest("the clouds are in the ")]
    os.replace(tmp_path / "checkpoints" / "run", tmp_path / "checkpoints" / "run.old")
    result = CliRunner().invoke(cli, ["suggest", "the clouds are in the ", "--plain", "--fp32"])
    assert result.exit_code == 0 and result.output.split() == expected, result.output


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(tmp_path, corpus_file):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or in a background job
    try:
        result = lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "m", lm.ModelConfig(**TINY),
                          config=lm.TrainConfig(max_steps=20, **SETTINGS), progress=InterruptAt(5))
        assert result.stop_reason == lm.Stop.MAX_STEPS and result.step == 20
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
