"""The continuous cache: its arithmetic against plain loops, tuning, and its use by suggestions and lm eval."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lm
from cli import cli
from conftest import make_text
from lm.mix.cache import CacheConfig, CacheMemory, mix
from lm.mix.cache_tune import cache_nll, target_probs, tune
from lm.suggest.engine import Suggester, SuggestionSession
from lm.data.text import START_TEXT


def naive_cache_p(features, targets, t, window, sharpness):
    """p_cache(targets[t]) at position t by the definition, one key at a time."""
    keys = [i for i in range(max(0, t - window), t)]
    if not keys:
        return 0.0
    scores = [math.exp(sharpness * float(features[t] @ features[i])) for i in keys]
    hits = sum(s for s, i in zip(scores, keys) if targets[i] == targets[t])
    return hits / sum(scores)


def test_target_probs_follow_the_definition():
    torch.manual_seed(0)
    features = torch.randn(700, 4)  # longer than a query block
    targets = torch.randint(0, 6, (700,))
    got = target_probs(features, targets, window=50, sharpness=0.7)
    for t in [0, 1, 2, 49, 50, 51, 511, 512, 513, 699]:
        assert got[t].item() == pytest.approx(naive_cache_p(features, targets, t, 50, 0.7), rel=1e-4, abs=1e-7), t


def test_mix_is_the_weighted_sum_of_model_and_cache_distributions():
    torch.manual_seed(1)
    logits, query = torch.randn(2, 5), torch.randn(2, 3)
    keys, values = torch.randn(4, 3), torch.tensor([1, 3, 1, 0])
    config = CacheConfig(window=10, sharpness=0.5, weight=0.25)
    got = torch.from_numpy(mix(logits.numpy(), query.numpy(), keys.numpy(), values.numpy(), config)).exp()
    for q in range(2):
        model_p = torch.softmax(logits[q], -1)
        attention = torch.softmax(0.5 * (keys @ query[q]), -1)
        cache_p = torch.zeros(5)
        for a, v in zip(attention, values):
            cache_p[v] += a
        weight = 0.25 * 4 / 10  # the memory holds 4 of its 10 entries
        torch.testing.assert_close(got[q], (1 - weight) * model_p + weight * cache_p)
    empty = torch.from_numpy(mix(logits.numpy(), query.numpy(), keys[:0].numpy(), values[:0].numpy(), config))
    torch.testing.assert_close(empty, torch.log_softmax(logits, -1))


def test_tune_keeps_the_cache_off_when_no_setting_helps_and_picks_the_best_otherwise():
    torch.manual_seed(2)
    features = torch.randn(400, 8)
    never_repeats = torch.arange(400)
    config, report = tune(features, never_repeats, torch.full((400,), 2.0))
    assert not config.enabled and report["cache_nll"] == pytest.approx(2.0)
    repeats = torch.arange(400) % 7  # every token seen seven positions ago
    features = torch.nn.functional.one_hot(repeats, 8).float() * 3
    config, report = tune(features, torch.roll(repeats, -1), torch.full((400,), 2.0))
    assert config.enabled
    assert report["cache_nll"] == min(t["nll"] for t in report["tried"]) < 2.0


def test_a_repeated_rare_word_becomes_likelier_with_the_cache(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    text = "the cat finds the river at home .\nmy friend keeps some bread by the sea .\nthe cat finds the river"
    ids = tokenizer.encode(START_TEXT + text)
    repeat = len(ids) - 2  # the position that predicts the second "river"
    assert ids[repeat + 1] == tokenizer.encode("river")[0]
    without, with_cache = cache_nll(model, ids, CacheConfig(window=20, sharpness=0.05, weight=0.3))  # a full memory
    assert with_cache[repeat] < without[repeat] - 0.1


@pytest.mark.parametrize("kind", ["word", "char", "unigram"])
def test_a_cached_session_equals_reading_the_whole_text_at_every_keystroke(tiny_checkpoints, kind):
    folder = tiny_checkpoints(kind)
    loaded = lm.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    cache = CacheConfig(window=24, sharpness=0.1, weight=0.3)  # a small window: the memory drops old entries
    suggester = Suggester(model, tokenizer, lexicon=lm.Lexicon.load(folder), cache=cache)
    rng = random.Random(kind)
    text = make_text(12, seed=3)[:240]
    session = SuggestionSession(suggester)
    for end in range(1, len(text) + 1):
        session.type(text[end - 1])
        if rng.random() < 0.08 and end > 5:  # an edit: delete a few characters and retype them
            session.delete(3)
            session.type(text[end - 3: end])
        if end % 7 == 0 or end == len(text):
            assert session.suggestions() == suggester.suggest(text[:end]), repr(text[:end])


def test_word_suggestions_follow_the_mixed_distribution(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    cache = CacheConfig(window=50, sharpness=0.05, weight=0.4)
    text = "the birds want a small house near the road .\nour teacher wants the "
    shown = Suggester(model, tokenizer, cache=cache).suggest(text, k=3)
    # The reference: the model's features over the whole text, the cache by its definition.
    ids = torch.tensor([tokenizer.encode(START_TEXT) + tokenizer.encode(text)])
    with torch.no_grad():
        features, _ = model.features(ids)
        model_p = torch.softmax(model.output(features)[0, -1], -1)
    h = features[0]
    attention = torch.softmax(0.05 * (h[:-1] @ h[-1]), -1)
    cache_p = torch.zeros_like(model_p).index_add_(0, ids[0, 1:], attention)
    weight = 0.4 * min(len(h) - 1, 50) / 50  # λ grows with the memory
    mixed = (1 - weight) * model_p + weight * cache_p
    first, second = (tokenizer.encode(s.word)[0] for s in shown[:2])
    assert shown[0].probability / shown[1].probability == pytest.approx((mixed[first] / mixed[second]).item(), rel=1e-4)
    plain = Suggester(model, tokenizer).suggest(text, k=3)
    assert [s.probability for s in plain] != [s.probability for s in shown]


def test_memory_views_survive_rewrites_and_drop_what_the_window_left_behind():
    memory = CacheMemory(CacheConfig(window=4, sharpness=1.0, weight=0.1))
    keys = np.repeat(np.arange(400, dtype=np.float32)[:, None], 2, 1)
    assert memory.write(0, keys[:3], np.arange(3)) == 3
    assert memory.write(3, keys[3:6], np.arange(3, 6)) == 6
    assert memory.view(6)[1].tolist() == [2, 3, 4, 5] and memory.view(3)[1].tolist() == [0, 1, 2]
    assert memory.write(2, keys[20:22], np.array([20, 21])) == 4  # an edit after entry 2
    assert memory.view(4)[1].tolist() == [0, 1, 20, 21]
    end = 4
    for i in range(CacheMemory.capacity(memory.config) + 10):  # past the capacity: old entries go
        end = memory.write(end, keys[i: i + 1], np.array([1000 + i]))
        assert memory.view(end)[1].tolist()[-min(i + 1, 4):] == list(range(1000 + max(i - 3, 0), 1000 + i + 1))
        assert len(memory.view(end)[1]) == 4
    assert memory.view(end)[1].tolist() == [1000 + i - 3, 1000 + i - 2, 1000 + i - 1, 1000 + i]
    assert memory.view(end)[0][:, 0].tolist() == [i - 3, i - 2, i - 1, i]
    assert not memory.covers(5) and memory.covers(end)


def test_training_saves_a_tuned_cache_and_eval_reports_it(tmp_path, corpus_file, tiny_checkpoints):
    from conftest import train_tiny

    run = train_tiny(corpus_file, tmp_path / "run", kind="word", max_steps=40, tune_cache=True)
    saved = json.loads((run.checkpoint / "config.json").read_text())["cache"]
    assert set(saved) >= {"window", "sharpness", "weight", "valid_perplexity", "valid_perplexity_with_cache"}
    assert saved["valid_perplexity_with_cache"] <= saved["valid_perplexity"]  # a cache that does not pay stays off
    # The perplexity without it is the saved model's on the validation text, read as one stream.
    loaded = lm.load(run.checkpoint)
    model, tokenizer = loaded.model, loaded.tokenizer
    valid = torch.tensor([lm.data.corpus.token_ids(lm.load_corpus([str(corpus_file)]).valid, tokenizer).tolist()])
    with torch.no_grad():
        logits, _ = model(valid[:, :-1])
    nll = torch.nn.functional.cross_entropy(logits[0], valid[0, 1:])
    assert saved["valid_perplexity"] == pytest.approx(math.exp(nll.item()), rel=1e-5)
    test_file = tmp_path / "test.txt"
    test_file.write_text(make_text(40, seed=9))
    forced = {"window": 100, "sharpness": 0.05, "weight": 0.2}
    lm.checkpoint.store.update_config(run.checkpoint, cache=forced)
    result = CliRunner().invoke(cli, ["eval", str(test_file), "-c", str(run.checkpoint), "--json", "--keyboard-words", "50", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["cache"]
    assert report["settings"] == forced
    assert report["with"]["perplexity"] != report["without"]["perplexity"]
    assert report["keyboard"]["words"] == 50
    tuned = CliRunner().invoke(cli, ["eval", str(test_file), "-c", str(run.checkpoint), "--tune-cache", "--no-keyboard", "-q"])
    assert tuned.exit_code == 0, tuned.output
    # Tuned again on the checkpoint's own validation text (not the evaluated one): what training chose.
    assert json.loads((run.checkpoint / "config.json").read_text())["cache"] == pytest.approx(saved, rel=1e-6)


def test_suggest_uses_the_saved_cache_unless_told_not_to(tmp_path, tiny_checkpoints):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("word"), folder)
    lm.checkpoint.store.update_config(folder, cache={"window": 100, "sharpness": 0.05, "weight": 0.4})
    text = "the birds want a small house near the road .\nour teacher wants the "
    run = lambda *flags: json.loads(CliRunner().invoke(  # noqa: E731  (the cache alone: --no-ngram)
        cli, ["suggest", text, "-c", str(folder), "--json", "--fp32", "--no-ngram", *flags]).output)
    loaded = lm.load(folder)
    model, tokenizer = loaded.backend, loaded.tokenizer  # the backend the CLI runs on (auto)
    with_cache = Suggester(model, tokenizer, cache=CacheConfig(100, 0.05, 0.4)).suggest(text)
    assert run() == [s.to_dict() for s in with_cache]
    assert run("--no-cache") == [s.to_dict() for s in Suggester(model, tokenizer).suggest(text)]
    assert run() != run("--no-cache")


def test_cache_nll_mixes_each_position_with_a_weight_that_grows_with_its_memory(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer.encode(START_TEXT + make_text(6, seed=11))
    config = CacheConfig(window=16, sharpness=0.05, weight=0.3)
    without, with_cache = cache_nll(model, ids, config)
    with torch.no_grad():
        features, _ = model.features(torch.tensor([ids[:-1]]))
        model_p = torch.softmax(model.output(features)[0], -1)
    h, targets = features[0], ids[1:]
    for t in range(len(targets)):
        weight = 0.3 * min(t, 16) / 16
        p = (1 - weight) * model_p[t, targets[t]].item() + weight * naive_cache_p(h, targets, t, 16, 0.05)
        assert with_cache[t].item() == pytest.approx(-math.log(p), rel=1e-4, abs=1e-5), t
        assert without[t].item() == pytest.approx(-math.log(model_p[t, targets[t]].item()), rel=1e-4, abs=1e-5)
