import json
import math
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

import lm
from lm.checkpoint.store import WEIGHTS_FILE

from conftest import InterruptAt, train_tiny


def test_tiny_model_learns_the_pattern_below_what_an_untrained_model_can_reach(tiny_checkpoints):
    config = json.loads((tiny_checkpoints("char") / "config.json").read_text())
    vocab = config["model"]["vocab_size"]
    # An untrained model is close to uniform: log(vocab) nats. The text's characters are far
    # from uniform and its sentences repeat, so a model that learned reaches well under half.
    assert config["metrics"]["valid_loss"] < 0.5 * math.log(vocab)


def test_each_evaluation_is_logged_and_the_best_weights_are_kept(tmp_path, corpus_file):
    result = train_tiny(corpus_file, tmp_path / "m", max_steps=60, eval_every=20, patience=0)
    lines = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [20, 40, 60]
    best = min(lines, key=lambda r: r["valid_loss"])
    assert result.best["valid_loss"] == best["valid_loss"]
    assert {"valid_perplexity", "valid_word_perplexity", "valid_bits_per_char"} <= set(best)


def params(folder):
    return {k[len("model."):]: v for k, v in load_file(str(folder / "resume.safetensors")).items() if k.startswith("model.")}


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one_bitwise(tmp_path, corpus_file, default_sigint):
    settings = dict(max_steps=80, eval_every=0, patience=0, log_every=5, dropout=0.2, batch=4, bptt=16)
    train_tiny(corpus_file, tmp_path / "straight", **settings)

    corpus = lm.load_corpus([str(corpus_file)])
    model_config = lm.ModelConfig(layers=1, hidden=64, emb=32, dropout=0.2)
    tok_config = lm.TokenizerConfig(kind="char", min_count=1)
    train_config = lm.TrainConfig(max_steps=80, eval_every=0, patience=0, log_every=5, batch=4, bptt=16, lr=1e-2, warmup=0, device="cpu",
                                  tune_cache=False)
    first = lm.train(corpus, tmp_path / "resumed", model_config, tok_config, train_config, progress=InterruptAt(35))
    assert first.interrupted and first.step == 35
    second = lm.train(corpus, tmp_path / "resumed", lm.ModelConfig(layers=1, hidden=64, emb=32, dropout=0.2),
                      tok_config, train_config, resume=True)
    assert second.step == 80 and second.stop_reason == "max-steps"
    straight, resumed = params(tmp_path / "straight"), params(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_interrupt_saves_a_loadable_checkpoint(tmp_path, corpus_file, default_sigint):
    corpus = lm.load_corpus([str(corpus_file)])
    result = lm.train(corpus, tmp_path / "m", lm.ModelConfig(layers=1, hidden=32, emb=16),
                      config=lm.TrainConfig(max_steps=500, batch=4, bptt=16, log_every=5), progress=InterruptAt(10))
    assert result.stop_reason == "interrupted" and result.step == 10
    loaded = lm.load(tmp_path / "m")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert tokenizer.kind == "char"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler from before training


def test_resume_with_a_different_model_is_refused(tmp_path, corpus_file):
    train_tiny(corpus_file, tmp_path / "m", max_steps=5)
    corpus = lm.load_corpus([str(corpus_file)])
    with pytest.raises(lm.ConfigError, match="different model .*hidden 64→128"):
        lm.train(corpus, tmp_path / "m", lm.ModelConfig(layers=1, hidden=128, emb=32, dropout=0.0), resume=True)


def test_existing_checkpoint_is_not_overwritten_without_asking(tmp_path, corpus_file):
    train_tiny(corpus_file, tmp_path / "m", max_steps=5)
    before = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()
    with pytest.raises(lm.ConfigError, match="--overwrite"):
        train_tiny(corpus_file, tmp_path / "m", max_steps=5)
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes() == before


def test_early_stop_on_a_plateau(tmp_path, corpus_file):
    # A learning rate too small to change an fp32 weight: every evaluation equals the first.
    result = train_tiny(corpus_file, tmp_path / "m", max_steps=400, eval_every=5, patience=2, lr=1e-30, weight_decay=0.0)
    assert result.stop_reason == "early-stop" and result.step == 15
    result = train_tiny(corpus_file, tmp_path / "m2", max_steps=400, eval_every=5, patience=1, lr=0.5, clip=0)
    assert result.stop_reason == "early-stop"


def test_max_time_stops_the_run(tmp_path, corpus_file):
    result = train_tiny(corpus_file, tmp_path / "m", max_steps=None, epochs=1000, max_time=1.0, patience=0)
    assert result.stop_reason == "max-time"
    assert 1.0 <= result.elapsed < 10


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_train(tmp_path, corpus_file, cell):
    result = train_tiny(corpus_file, tmp_path / cell, cell=cell, max_steps=30)
    model = lm.load(tmp_path / cell).model
    assert model.config.cell == cell
    assert result.best["valid_loss"] < 0.9 * math.log(model.config.vocab_size)  # learned: below uniform


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_other_optimizers_train(tmp_path, corpus_file, optimizer):
    result = train_tiny(corpus_file, tmp_path / optimizer, optimizer=optimizer, lr=None, max_steps=30)
    vocab_size = lm.load(tmp_path / optimizer).model.config.vocab_size
    assert result.best["valid_loss"] < 0.9 * math.log(vocab_size)  # learned at the optimizer's default rate


def test_both_precisions_train_and_are_recorded(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setattr(lm.training.step, "cpu_has_fast_bf16", lambda: True)  # bf16 autocast runs on any CPU, slowly
    losses = {}
    for precision in ("fp32", "bf16"):
        losses[precision] = train_tiny(corpus_file, tmp_path / precision, precision=precision, max_steps=30).best["valid_loss"]
        saved = json.loads((tmp_path / precision / "config.json").read_text())
        assert saved["training"]["precision"] == precision
        assert losses[precision] < 0.9 * math.log(saved["model"]["vocab_size"])  # learned: below uniform
    assert losses["bf16"] != losses["fp32"]  # the same seed and steps: only bf16 rounding can move the loss


def test_autocast_is_on_for_bf16_only():
    cpu = torch.device("cpu")
    with lm.training.step.autocast_for(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with lm.training.step.autocast_for(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(lm.training.step, "cpu_has_fast_bf16", lambda: False)
    assert lm.training.step.pick_precision("auto", cpu) == "fp32"
    assert lm.training.step.pick_precision("auto", cuda) == "bf16"
    with pytest.raises(lm.ConfigError, match="no fast bf16 — use --precision fp32"):
        lm.training.step.pick_precision("bf16", cpu)
    monkeypatch.setattr(lm.training.step, "cpu_has_fast_bf16", lambda: True)
    assert lm.training.step.pick_precision("auto", cpu) == "bf16"
    assert lm.training.step.pick_precision("fp32", cuda) == "fp32"


@pytest.mark.parametrize(
    "bad, message",
    [(dict(batch=0), "--batch must be positive"), (dict(precision="fp16"), "--precision must be one of"), (dict(bptt=-3), "--bptt must be positive"),
     (dict(optimizer="adam"), "--optimizer must be one of"), (dict(max_time=-1), "--max-time must be positive")],
)
def test_impossible_training_flags(tmp_path, corpus_file, bad, message):
    with pytest.raises(lm.ConfigError, match=message):
        train_tiny(corpus_file, tmp_path / "m", **bad)


def test_batch_too_large_for_the_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("abc def\n" * 30)
    with pytest.raises(lm.ConfigError, match="too few for --batch 500"):
        train_tiny(tmp_path / "a.txt", tmp_path / "m", batch=500)


def nan_after(first_bad: int, last_bad: float):
    """A training loss that is NaN for calls first_bad..last_bad (1-based)."""
    calls = {"n": 0}
    loss_of = lm.model.loss.training_loss

    def flaky(model, *args, **kwargs):
        calls["n"] += 1
        objective, loss, state = loss_of(model, *args, **kwargs)
        nan = float("nan") if first_bad <= calls["n"] <= last_bad else 1.0
        return objective * nan, loss * nan, state

    return flaky


class Messages(lm.Progress):
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)


def run_with_nans(tmp_path, corpus_file, monkeypatch, first_bad, last_bad):
    monkeypatch.setattr(lm.model.loss, "training_loss", nan_after(first_bad, last_bad))
    corpus = lm.load_corpus([str(corpus_file)])
    progress = Messages()
    config = lm.TrainConfig(max_steps=60, eval_every=20, log_every=5, patience=0, batch=4, bptt=16, device="cpu", tune_cache=False)
    result = lm.train(corpus, tmp_path / "m", lm.ModelConfig(layers=1, hidden=32, emb=16), config=config, progress=progress)
    return result, progress.lines


def test_a_nan_loss_rolls_back_to_the_last_good_checkpoint_and_halves_the_lr(tmp_path, corpus_file, monkeypatch):
    result, messages = run_with_nans(tmp_path, corpus_file, monkeypatch, 31, 32)
    assert any("NaN or infinite at step 35: rolled back to step 20 and halved the learning rate" in m for m in messages)
    assert result.step == 60 and math.isfinite(result.best["valid_loss"])
    for name, tensor in params(tmp_path / "m").items():
        assert torch.isfinite(tensor).all(), name


def test_a_loss_that_stays_nan_stops_with_the_good_checkpoint_intact(tmp_path, corpus_file, monkeypatch):
    with pytest.raises(lm.LMError, match="NaN or infinite .* lower --lr .* intact"):
        run_with_nans(tmp_path, corpus_file, monkeypatch, 21, math.inf)
    model = lm.load(tmp_path / "m").model
    assert all(torch.isfinite(p).all() for p in model.parameters())
    steps = [json.loads(x)["step"] for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [20]


def test_an_adaptive_softmax_model_trains_reloads_and_suggests(tmp_path, corpus_file):
    result = train_tiny(corpus_file, tmp_path / "m", kind="word", softmax="adaptive", cutoffs=[8, 20], max_steps=150)
    loaded = lm.load(tmp_path / "m")
    model, tokenizer = loaded.model, loaded.tokenizer
    assert model.config.softmax == "adaptive" and model.config.cutoffs == [8, 20]
    assert result.best["valid_loss"] < 0.8 * math.log(tokenizer.vocab_size)
    assert lm.Suggester(model, tokenizer).suggest("the clouds are in the ")[0].word == "sky"


class Rates(lm.Progress):
    def __init__(self):
        self.events = []

    def step(self, stats):
        self.events.append(stats["tokens_per_s"])

    def evaluated(self, record):
        self.events.append("evaluated")


def test_tokens_per_s_after_an_evaluation_counts_training_only(tmp_path, corpus_file, monkeypatch):
    evaluate = lm.training.trainer.evaluate_loss

    def slow_evaluation(*args, **kwargs):
        time.sleep(1.0)  # far longer than the five steps of a log interval
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(lm.training.trainer, "evaluate_loss", slow_evaluation)
    progress = Rates()
    lm.train(lm.load_corpus([str(corpus_file)]), tmp_path / "m", lm.ModelConfig(layers=1, hidden=32, emb=16),
             config=lm.TrainConfig(max_steps=20, eval_every=10, log_every=5, batch=4, bptt=16, device="cpu", tune_cache=False),
             progress=progress)
    assert progress.events[2] == "evaluated"
    before, after = progress.events[1], progress.events[3]
    assert after > before / 4, progress.events


def test_plain_sgd_takes_the_classic_settings_no_weight_decay_and_a_tight_clip():
    model = lm.model.network.LanguageModel(lm.ModelConfig(vocab_size=12, layers=1, hidden=8, emb=8))
    before = [p.detach().clone() for p in model.parameters()]
    config = lm.TrainConfig(optimizer="sgd")  # lr 20
    optimizer = lm.training.step.make_optimizer(model, config)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # no gradient: only weight decay could move a weight (by lr × decay = 20 % at 0.01)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert config.clip_norm == 0.25 and lm.TrainConfig(optimizer="sgd", clip=2.0).clip_norm == 2.0
    adamw = lm.training.step.make_optimizer(model, lm.TrainConfig())
    assert adamw.param_groups[0]["weight_decay"] == 0.01 and lm.TrainConfig().clip_norm == 1.0
