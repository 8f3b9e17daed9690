"""Dynamic evaluation: the update rule against a hand-written step, the gain on repeated text, lm eval --adapt."""
from __future__ import annotations

import copy
import json

import torch
import torch.nn.functional as F
from click.testing import CliRunner

import lm
from cli import cli
from conftest import make_text
from lm.mix.adapt import SQUARE_DECAY, AdaptConfig, adapted_nll


def test_two_segments_follow_the_update_rule_and_the_weights_come_back(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("char"))
    model, tokenizer = loaded.model, loaded.tokenizer
    before = copy.deepcopy(model.state_dict())
    ids = tokenizer.encode("the cat sees the ball .\nthe cat")[:9]  # two segments of 4 tokens
    config = AdaptConfig(lr=0.01, decay=0.1, segment=4)
    got = adapted_nll(model, ids, config)

    # By hand: score segment 1, one RMS-normalised step with the decay, score segment 2.
    reference = copy.deepcopy(model).eval()
    x = torch.tensor([ids])
    logits, state = reference(x[:, :4])
    first = F.cross_entropy(logits[0], x[0, 1:5], reduction="none")
    first.mean().backward()
    with torch.no_grad():
        for p, p0 in zip(reference.parameters(), model.parameters()):
            g = p.grad
            rms = ((1 - SQUARE_DECAY) * g * g / (1 - SQUARE_DECAY)).sqrt() + 1e-8
            stepped = p - 0.01 * g / rms
            p.copy_(stepped + 0.1 * (p0 - stepped))
        state = tuple(s.detach() for s in state)
        logits, _ = reference(x[:, 4:8], state)
        second = F.cross_entropy(logits[0], x[0, 5:9], reduction="none")
    torch.testing.assert_close(got, torch.cat([first.detach(), second]), rtol=1e-4, atol=1e-5)
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name


def test_adapting_to_a_repeated_passage_lowers_its_loss(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    passage = "my friend keeps the river near the road .\nher sister calls a small house by the sea .\n"
    ids = tokenizer.encode(passage * 6)
    plain = adapted_nll(model, ids, AdaptConfig(lr=1e-12, decay=0.0))  # a step too small to matter
    adapted = adapted_nll(model, ids, AdaptConfig(lr=3e-3, decay=0.0))
    half = len(plain) // 2
    assert adapted[half:].mean() < plain[half:].mean() - 0.05


def test_eval_adapt_reports_both_figures_and_refuses_int8(tmp_path, tiny_checkpoints):
    text = tmp_path / "t.txt"
    text.write_text(make_text(20, seed=4))
    folder = str(tiny_checkpoints("char"))
    result = CliRunner().invoke(cli, ["eval", str(text), "-c", folder, "--adapt", "--no-keyboard", "--no-cache", "--json", "-q"])
    assert result.exit_code == 0, result.output
    adapt = json.loads(result.output)["adapt"]
    assert adapt["with"]["tokens"] == adapt["without"]["tokens"] > 0
    assert adapt["with"]["loss"] != adapt["without"]["loss"]
    bad = CliRunner().invoke(cli, ["eval", str(text), "-c", folder, "--adapt", "--int8"])
    assert bad.exit_code != 0 and "--adapt" in bad.output and "int8" in bad.output


def test_suggest_adapt_leans_toward_the_text_read(tiny_checkpoints):
    folder = tiny_checkpoints("word")
    text = ("her sister calls the river near the road .\n" * 8) + "her sister calls the"
    plain = lm.suggest_words(text, folder, lm.SuggestConfig(k=5))
    adapted = lm.suggest_words(text, folder, lm.SuggestConfig(k=5), adapt=AdaptConfig(lr=3e-3))
    p = lambda strip: next((s.probability for s in strip if s.word == "river"), 0.0)  # noqa: E731
    assert p(adapted) > p(plain)
    loaded = lm.load(folder)
    model, tokenizer = loaded.model, loaded.tokenizer
    reference = copy.deepcopy(model)
    lm.mix.adapt.adapt_to(model, tokenizer.encode(text), AdaptConfig(lr=3e-3))
    assert not torch.equal(model.rnn.weight_hh_l0, reference.rnn.weight_hh_l0)


def test_adapting_with_the_cache_is_the_cache_over_the_adapting_models_features(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    passage = "my friend keeps the river near the road .\nher sister calls a small house by the sea .\n"
    text = passage * 4
    cache = lm.CacheConfig(window=40, sharpness=0.05, weight=0.3)
    config = lm.evaluate.evaluation.EvalConfig(keyboard=False, adapt=True, adapt_lr=1e-12, adapt_decay=0.0, device="cpu")
    result = lm.evaluate.evaluation.evaluate_text(model, tokenizer, text, config, cache=cache)
    # A step too small to matter: together they are the cache alone (read without adapting).
    assert abs(result.adapt_cache_loss.loss - result.cache_loss.loss) < 1e-4
    # A real step: the cache remembers the adapting model's features, as they were when read.
    config.adapt_lr = 3e-3
    result = lm.evaluate.evaluation.evaluate_text(model, tokenizer, text, config, cache=cache)
    ids = tokenizer.encode(lm.data.text.START_TEXT) + tokenizer.encode(text)  # as lm eval scores the first token
    features, nll = lm.mix.adapt.adapted_read(model, ids, lm.AdaptConfig(lr=3e-3, decay=0.0))
    plain_features, _ = lm.mix.cache_tune.read_text(model, ids)
    assert (features - plain_features).abs().max() > 1e-3  # adapting moved them
    targets = torch.tensor(ids[1:])
    by_hand = lm.mix.cache_tune.mixed_nll(nll, lm.mix.cache_tune.target_probs(features, targets, 40, 0.05), 0.3, 40).mean().item()
    assert abs(result.adapt_cache_loss.loss - by_hand) < 1e-4


def test_a_session_that_adapts_takes_the_same_steps_as_dynamic_evaluation_of_its_text(tiny_checkpoints):
    from lm.suggest.engine import Suggester, SuggestionSession
    from lm.data.text import START_TEXT

    loaded = lm.load(tiny_checkpoints("word"))

    model, tokenizer = loaded.model, loaded.tokenizer
    before = copy.deepcopy(model.state_dict())
    config = AdaptConfig(lr=1e-3, decay=0.01, segment=5)
    text = make_text(4, seed=3).replace("\n", " ")  # ends in a space: the whole text is context
    suggester = Suggester(model, tokenizer)
    session = SuggestionSession(suggester, adapt=config)
    for ch in text:  # typed key by key
        session.type(ch)
    adapted = session.suggestions()
    # The reference: dynamic evaluation over the same ids, as many whole segments as it took.
    ids = tokenizer.encode(START_TEXT) + tokenizer.encode(text)
    steps = (len(ids) - 1) // config.segment
    assert steps >= 3
    reference = copy.deepcopy(model)
    adapted_nll(reference, ids[: steps * config.segment + 1], config, keep=True)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(session.suggester.model.state_dict()[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert not torch.equal(reference.state_dict()["rnn.weight_hh_l0"], before["rnn.weight_hh_l0"])
    # The suggester's own model is untouched, and its strips differ from the adapting session's.
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    plain = SuggestionSession(suggester, text).suggestions()
    assert [s.probability for s in plain] != [s.probability for s in adapted]


def test_a_session_cannot_adapt_int8_weights(tiny_checkpoints):
    import pytest

    from lm.suggest.engine import Suggester, SuggestionSession

    loaded = lm.load(tiny_checkpoints("word"), int8=True)

    model, tokenizer = loaded.model, loaded.tokenizer
    with pytest.raises(lm.ConfigError, match="float weights"):
        SuggestionSession(Suggester(model, tokenizer), adapt=AdaptConfig())
