import json
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lm
from lm.data.corpus import token_ids
from lm.evaluate.config import EvalProgress
from lm.evaluate.evaluation import EvalConfig, evaluate_text, read_eval_text
from lm.mix.cache_tune import tune_on
from lm.model.likelihood import stream_plan, total_nll
from lm.data.tokenizer import CharTokenizer, WordTokenizer

from conftest import make_text


class Uniform(nn.Module):
    """Obeys the model contract and gives every token the same probability, 1 / vocab_size."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the evaluator a device

    def forward(self, ids, state=None):
        return self.anchor.expand(*ids.shape, self.vocab_size), state  # [batch, time, vocab]


class Bigram(nn.Module):
    """Stateless: the next-token distribution depends on the current token only, so any cut is exact."""

    def __init__(self, vocab_size: int, seed: int = 0):
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(seed)))

    def forward(self, ids, state=None):
        return self.table[ids], state  # [batch, time, vocab]


NO_KEYBOARD = EvalConfig(keyboard=False)


def test_uniform_word_model_gives_the_hand_computed_figures():
    tokenizer = WordTokenizer(["a", "b", "c", "d", "e"])  # vocab: <unk> <eos> a b c d e
    text = "a b c\nd e\n"  # 7 tokens (eos ends each line), 5 words, 10 characters
    result = evaluate_text(Uniform(7), tokenizer, text, NO_KEYBOARD)
    metrics = result.loss
    assert (metrics.tokens, metrics.words, metrics.chars) == (7, 5, 10)
    assert metrics.loss == pytest.approx(math.log(7))
    assert metrics.perplexity == pytest.approx(7)
    assert metrics.word_perplexity == pytest.approx(7 ** (7 / 5))
    assert metrics.bits_per_char == pytest.approx(7 * math.log2(7) / 10)


def test_uniform_char_model_scores_every_character_including_the_first():
    tokenizer = CharTokenizer(sorted(set("ab \n")))  # 4 characters + <unk>
    text = "ab ba\n"
    metrics = evaluate_text(Uniform(5), tokenizer, text, NO_KEYBOARD).loss
    assert (metrics.tokens, metrics.words, metrics.chars) == (6, 2, 6)
    assert metrics.bits_per_char == pytest.approx(math.log2(5))
    assert metrics.word_perplexity == pytest.approx(5 ** 3)


def test_max_words_evaluates_a_leading_sample_and_says_so():
    tokenizer = WordTokenizer(["a", "b", "c", "d", "e"])
    result = evaluate_text(Uniform(7), tokenizer, "a b c\nd e\n", EvalConfig(keyboard=False, max_words=2))
    assert (result.loss.tokens, result.loss.words, result.total_words) == (2, 2, 5)
    assert result.sampled and result.to_dict()["sampled"] is True


@settings(max_examples=60, deadline=None)
@given(length=st.integers(2, 400), first=st.integers(1, 20), batch=st.integers(1, 12), overlap=st.integers(0, 50))
def test_stream_plan_scores_every_token_exactly_once(length, first, batch, overlap):
    first = min(first, length - 1)
    read, score, end = stream_plan(length, first, batch, overlap)
    covered = np.concatenate([np.arange(s, e) for s, e in zip(score, end)])
    assert (covered == np.arange(first - 1, length - 1)).all()  # in order, no gap, no repeat
    assert read[0] == 0 and (read[1:] == np.maximum(score[1:] - overlap, 0)).all()


@settings(max_examples=25, deadline=None)
@given(length=st.integers(2, 300), batch=st.integers(1, 8), bptt=st.integers(1, 40), overlap=st.integers(0, 30))
def test_a_stateless_model_gives_the_same_total_for_any_streams_and_windows(length, batch, bptt, overlap):
    ids = np.random.default_rng(length).integers(0, 11, length)
    model = Bigram(11)
    reference, n = total_nll(model, ids, batch=1, bptt=length)
    total, scored = total_nll(model, ids, batch=batch, bptt=bptt, overlap=overlap)
    assert scored == n == length - 1
    assert total.item() == pytest.approx(reference.item(), rel=1e-9)


@pytest.fixture(scope="module")
def char_model(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("char"))
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = np.asarray(tokenizer.encode(make_text(60, seed=3)), dtype=np.int64)
    return model, ids


def test_window_length_does_not_change_the_single_stream_loss(char_model):
    model, ids = char_model
    reference, _ = total_nll(model, ids, batch=1, bptt=len(ids))
    total, _ = total_nll(model, ids, batch=1, bptt=7)
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)


def test_a_large_vocabulary_shortens_windows_to_bound_memory_not_the_sum(char_model, monkeypatch):
    model, ids = char_model
    reference, _ = total_nll(model, ids, batch=4, bptt=256)
    seen = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda x, state=None: seen.append(x.shape[1]) or original(x, state))
    monkeypatch.setattr(lm.model.likelihood, "LOGITS_BUDGET_BYTES", 4 * 4 * 10 * model.config.vocab_size)  # 10 tokens a stream
    total, _ = total_nll(model, ids, batch=4, bptt=256, vocab_size=model.config.vocab_size)
    assert max(seen) == 10
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)
    assert lm.model.likelihood.window_for_budget(256, 16, 33278) < 256


@pytest.mark.parametrize("batch,bptt", [(4, 256), (8, 32), (16, 64)])
def test_primed_streams_agree_with_one_stream(char_model, batch, bptt):
    model, ids = char_model
    reference, n = total_nll(model, ids, batch=1, bptt=256)
    total, scored = total_nll(model, ids, batch=batch, bptt=bptt, overlap=64)
    assert scored == n
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)


def test_streams_cut_without_priming_do_not_agree(char_model):
    """The check above can fail: zero-state cuts lose context and raise the loss."""
    model, ids = char_model
    reference, _ = total_nll(model, ids, batch=1, bptt=256)
    total, _ = total_nll(model, ids, batch=8, bptt=32, overlap=0)
    assert total.item() > reference.item() * (1 + 1e-4)


def test_evaluate_loss_keeps_the_trainer_api(char_model):
    model, ids = char_model
    metrics = lm.evaluate_loss(model, ids, chars=len(ids), words=100, batch=4, bptt=32)
    assert metrics.tokens == len(ids) - 1
    assert set(metrics.to_dict()) == {"loss", "tokens", "chars", "words", "perplexity", "word_perplexity", "bits_per_char"}
    assert metrics.bits_per_char == pytest.approx(metrics.loss * metrics.tokens / metrics.chars / math.log(2))


def test_read_eval_text_joins_files_and_folders(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("one two")
    (tmp_path / "b.txt").write_text("three\n")
    text, sources = read_eval_text([str(tmp_path / "docs"), str(tmp_path / "b.txt")])
    assert text == "one two\nthree\n"
    assert sources == [str(tmp_path / "docs" / "a.txt"), str(tmp_path / "b.txt")]


def test_missing_text_and_bad_settings_raise_named_errors(tmp_path):
    with pytest.raises(lm.CorpusError, match="does not exist"):
        read_eval_text([str(tmp_path / "nope.txt")])
    with pytest.raises(lm.ConfigError, match="--max-words must be positive"):
        EvalConfig(max_words=0).validate()


def test_hf_datasets_give_the_chosen_split(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.txt").write_text("line one\nline two\n")
    (folder / "validation.txt").write_text("held out\n")
    (folder / "test.txt").write_text("the test\n")
    text, sources = read_eval_text([f"hf:{folder}"])
    assert text == "the test\n" and sources == [f"hf:{folder} (test)"]
    assert read_eval_text([f"hf:{folder}"], split="valid")[0] == "held out\n"


def test_progress_hears_each_phase_with_its_total(tiny_checkpoints):
    class Recording(EvalProgress):
        def __init__(self):
            self.totals, self.done = {}, {}

        def start(self, task, total):
            self.totals[task], self.done[task], self.task = total, 0, task

        def advance(self, n):
            self.done[self.task] += n

    loaded = lm.load(tiny_checkpoints("word"))

    model, tokenizer = loaded.model, loaded.tokenizer
    progress = Recording()
    result = evaluate_text(model, tokenizer, make_text(20, seed=2), EvalConfig(keyboard_words=25), progress)
    assert progress.totals == progress.done == {"loss": result.loss.tokens, "keyboard": 25}


def test_evaluate_paths_tunes_the_cache_without_a_progress_object(tiny_checkpoints, corpus_file, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoints("char"), folder)  # tuning writes into the checkpoint
    text = tmp_path / "test.txt"
    text.write_text(make_text(20, seed=3))
    result = lm.evaluate_paths([str(text)], folder, EvalConfig(tune_cache=True, keyboard=False))  # no progress given
    # The reference: the cache tuned by hand on the checkpoint's own validation text.
    loaded = lm.load(folder, cache=False)
    expected, _ = tune_on(loaded.model.eval(), token_ids(lm.load_corpus([str(corpus_file)]).valid, loaded.tokenizer))
    saved = json.loads((folder / "config.json").read_text())["cache"]
    assert {name: saved[name] for name in ("window", "sharpness", "weight")} == expected.to_dict()
    assert result.cache == (expected if expected.enabled else None)  # the figures use the cache just tuned
