"""The n-gram (lm/mix/ngram.py): Kneser-Ney by hand, pruning that keeps every distribution whole,
and its place in training, suggestions and evaluation of word models."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lm
from cli import cli
from conftest import make_text, train_tiny
from lm import load
from lm.errors import CheckpointError
from lm.mix.ngram import Ngram, modified_discounts
from lm.suggest.engine import Suggester, SuggestionSession
from lm.data.text import START_TEXT

A, B, C, D = 0, 1, 2, 3
HALF = [[0.5, 0.5, 0.5]] * 3  # D1 = D2 = D3+ = 0.5 at every order


def test_a_bigram_by_hand():
    # a b a b a c, vocabulary a b c d. Continuation counts: a, b, c each follow one distinct
    # word, d none. Unigram level with D = 0.5: gamma = 0.5 * 3 / 3 = 1/2, so
    # p1(a) = p1(b) = p1(c) = 0.5/3 + 1/2 * 1/4 = 7/24 and p1(d) = 1/8.
    # After "a": c(ab) = 2, c(ac) = 1, c(a•) = 3; with D1 = 0.5, D2 = 1:
    # gamma(a) = (0.5 * 1 + 1 * 1) / 3 = 1/2, p(b | a) = (2 - 1) / 3 + 1/2 * 7/24 = 23/48,
    # p(c | a) = 0.5/3 + 7/48 = 15/48, p(a | a) = 7/48, p(d | a) = 1/16.
    model = Ngram.build([A, B, A, B, A, C], 4, order=2, discounts=[[0.5, 0.5, 0.5], [0.5, 1.0, 1.5]])
    assert model.probs([A]) == pytest.approx([7 / 48, 23 / 48, 15 / 48, 1 / 16], abs=1e-7)
    assert model.probs([D]) == pytest.approx([7 / 24, 7 / 24, 7 / 24, 1 / 8], abs=1e-7)  # unseen context
    # After "b": c(ba) = 2 only, gamma(b) = 1/2, so p(d | b) = 1/2 * 1/8.
    assert model.logprobs([A, B, D, C], first=1) == pytest.approx(np.log([23 / 48, 1 / 16, 7 / 24]), abs=1e-6)


def test_a_trigram_by_hand_and_pruning_gives_the_pruned_mass_to_the_lower_order():
    # a b c a b d a b c. After "a b": abc twice, abd once, so kept(c) = 1.5/3, kept(d) = 0.5/3,
    # gamma(ab) = 1/3. After "b" (continuation counts: bc and bd each once): kept 0.25 each,
    # gamma(b) = 1/2. Unigrams (continuation counts a 2, b 1, c 1, d 1 of 5): p1 = .4 .2 .2 .2.
    # So p2(. | b) = a .2, b .1, c .35, d .35 and p3(. | a b) = p2 / 3 + kept.
    ids = [A, B, C, A, B, D, A, B, C]
    full = Ngram.build(ids, 4, order=3, min_count=1, discounts=HALF)
    assert full.probs([A, B]) == pytest.approx([0.2 / 3, 0.1 / 3, 0.5 + 0.35 / 3, 1 / 6 + 0.35 / 3], abs=1e-7)
    # Pruning "a b d" (seen once) moves its 1/6 into gamma(ab) = 1/2: p3 = p2 / 2 + kept(c).
    pruned = Ngram.build(ids, 4, order=3, min_count=2, discounts=HALF)
    assert pruned.probs([A, B]) == pytest.approx([0.1, 0.05, 0.5 + 0.175, 0.175], abs=1e-7)
    assert pruned.probs([B]) == pytest.approx([0.2, 0.1, 0.35, 0.35], abs=1e-7)  # bigrams are never pruned
    assert pruned.size() == full.size() - 5  # of the six trigrams only "a b c" was seen twice


def test_discounts_follow_chen_and_goodman_from_the_count_of_counts():
    counts = np.repeat([1, 2, 3, 4], [100, 40, 20, 10])  # n1..n4 = 100, 40, 20, 10
    y = 100 / 180
    assert modified_discounts(counts)[1:] == pytest.approx([1 - 2 * y * 0.4, 2 - 3 * y * 0.5, 3 - 4 * y * 0.5])


@pytest.mark.parametrize("min_count", [1, 2, 3])
def test_every_distribution_sums_to_one_and_the_stream_scores_agree_with_them(min_count):
    rng = np.random.default_rng(0)
    V = 50
    stream = np.minimum(rng.zipf(1.3, 20_000) - 1, V - 1)
    stream[::7] = stream[::7] % 5  # repeated structure, so the high orders have counts
    model = Ngram.build(stream, V, order=5, min_count=min_count)
    held_out = np.minimum(rng.zipf(1.3, 2_000) - 1, V - 1)
    scores = model.logprobs(held_out, first=1)
    for i in rng.integers(1, len(held_out), 200):
        p = model.probs(held_out[max(i - 4, 0):i])
        assert p.sum() == pytest.approx(1.0, abs=1e-6)
        assert scores[i - 1] == pytest.approx(math.log(p[held_out[i]]), abs=1e-5)
    assert model.probs([V - 1, V - 2, V - 3, V - 4]).sum() == pytest.approx(1.0, abs=1e-6)


def test_a_saved_ngram_loads_the_same_and_a_damaged_one_says_so(tmp_path):
    rng = np.random.default_rng(1)
    model = Ngram.build(rng.integers(0, 30, 5_000), 30, order=4)
    model.save(tmp_path)
    again = Ngram.load(tmp_path, weight=0.2)
    context = [3, 7, 1]
    assert np.array_equal(again.probs(context), model.probs(context)) and again.weight == 0.2
    (tmp_path / "ngram.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="ngram.safetensors is damaged"):
        Ngram.load(tmp_path, weight=0.2)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory, corpus_file):
    """A tiny word model trained once here: the end of training counts and weighs its n-gram."""
    return train_tiny(corpus_file, tmp_path_factory.mktemp("ngram") / "word", kind="word", max_steps=40, tune_cache=True).checkpoint


def test_training_a_word_model_saves_an_ngram_that_lowers_validation_perplexity(word_run, tmp_path, corpus_file):
    config = json.loads((word_run / "config.json").read_text())
    settings = config["ngram"]
    assert settings["weight"] in lm.mix.ngram.WEIGHTS  # a 40-step model gains from the counts
    assert settings["valid_perplexity_with_ngram"] < config["cache"]["valid_perplexity_with_cache"]
    ngram = load(word_run).ngram
    loaded = lm.load(word_run)
    # The saved n-gram is the training text's: "the clouds are in the" is always followed by "sky".
    model, tokenizer = loaded.backend, loaded.tokenizer
    context = tokenizer.encode("the clouds are in the")
    assert int(np.argmax(ngram.probs(context))) == tokenizer.encode("sky")[0]
    # Char models get none.
    char_run = train_tiny(corpus_file, tmp_path / "char", kind="char", max_steps=5, tune_cache=True)
    assert "ngram" not in json.loads((char_run.checkpoint / "config.json").read_text())
    assert not (char_run.checkpoint / "ngram.safetensors").exists()


def test_suggestions_mix_the_ngram_into_the_models_next_word_distribution(word_run):
    loaded = lm.load(word_run)
    model, tokenizer = loaded.model, loaded.tokenizer
    ngram = load(word_run).ngram
    ngram.weight = 0.5
    text = "the birds want a small house near the road .\nour teacher wants the "
    shown = Suggester(model, tokenizer, ngram=ngram).suggest(text, k=3)
    # The reference: the model's softmax over the whole text, mixed by hand with the n-gram's
    # distribution after the last four tokens.
    ids = tokenizer.encode(START_TEXT) + tokenizer.encode(text)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]), None)
    model_p = torch.softmax(logits[0, -1].double(), -1).numpy()
    mixed = 0.5 * model_p + 0.5 * ngram.probs(ids[-4:])
    first, second = (tokenizer.encode(s.word)[0] for s in shown[:2])
    assert shown[0].probability / shown[1].probability == pytest.approx(mixed[first] / mixed[second], rel=1e-4)
    best = [tokenizer.pieces[i] for i in np.argsort(-mixed) if i not in tokenizer.special_ids][:3]
    assert [s.word for s in shown] == best
    # Typed key by key, a session gives the same strips as reading each text whole.
    suggester = Suggester(model, tokenizer, ngram=ngram)
    session = SuggestionSession(suggester)
    for end in range(1, len(text) + 1):
        session.set_text(text[:end])
        if end % 5 == 0 or end == len(text):
            assert session.suggestions() == suggester.suggest(text[:end]), repr(text[:end])


def test_lm_suggest_uses_the_saved_ngram_unless_told_not_to(word_run):
    text = "our teacher wants the "
    loaded = lm.load(word_run)
    model, tokenizer = loaded.backend, loaded.tokenizer
    cache = load(word_run).cache

    def run(*flags):
        result = CliRunner().invoke(cli, ["suggest", text, "-c", str(word_run), "--json", "--fp32", *flags])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    with_ngram = Suggester(model, tokenizer, cache=cache, ngram=load(word_run).ngram).suggest(text)
    assert run() == [s.to_dict() for s in with_ngram]
    assert run("--no-ngram") == [s.to_dict() for s in Suggester(model, tokenizer, cache=cache).suggest(text)]
    assert run() != run("--no-ngram")


def test_eval_reports_perplexity_with_the_ngram_as_mixed_by_hand(word_run, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(word_run, folder)
    lm.checkpoint.store.update_config(folder, cache={"window": 0, "sharpness": 1.0, "weight": 0.0})  # the n-gram alone
    test_file = tmp_path / "test.txt"
    test_file.write_text(make_text(12, seed=5))
    result = CliRunner().invoke(cli, ["eval", str(test_file), "-c", str(folder), "--json", "--keyboard-words", "30",
                                      "--fp32", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["ngram"]
    loaded = lm.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    ngram = load(folder).ngram
    ids = tokenizer.encode(START_TEXT) + tokenizer.encode(test_file.read_text())
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]), None)
    model_p = torch.softmax(logits[0].double(), -1).numpy()
    nll = [-math.log((1 - ngram.weight) * model_p[t, ids[t + 1]] + ngram.weight * ngram.probs(ids[max(t - 3, 0): t + 1])[ids[t + 1]])
           for t in range(len(ids) - 1)]
    assert report["weight"] == ngram.weight
    assert report["with"]["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)
    assert report["keyboard"]["words"] + report["keyboard"]["unknown_words"] == 30
