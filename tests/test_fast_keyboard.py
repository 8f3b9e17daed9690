"""The fast keyboard simulation gives exactly the metrics of the session-based one."""
from __future__ import annotations

import random
from dataclasses import asdict

import pytest

import lm
from lm.evaluate.evaluation import unknown_word_test
from lm.evaluate.fast_keyboard import ChunkedWordSession, fast_keyboard_metrics
from lm.evaluate.keyboard import keyboard_metrics
from lm.suggest.engine import Suggester, SuggestionSession

from conftest import make_text


def random_text(tokenizer, seed: int, words: int = 300) -> str:
    """Words of the model's vocabulary (some capitalised or glued to punctuation), unknown and
    over-long words, and every kind of separator, mixed with the generated corpus's sentences."""
    rng = random.Random(seed)
    vocab = [w for i, w in enumerate(tokenizer.pieces) if i not in tokenizer.special_ids]
    corpus = make_text(40, seed=seed).split()
    out = [rng.choice(["", " ", "\n", "  \t"])]
    for _ in range(words):
        r = rng.random()
        if r < 0.5:
            word = rng.choice(corpus)
        elif r < 0.75:
            word = rng.choice(vocab)
        elif r < 0.85:
            word = rng.choice(vocab).capitalize()
        elif r < 0.9:
            word = rng.choice(vocab) + rng.choice([".", ",", "!"])
        elif r < 0.97:
            word = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 6)))
        else:
            word = "x" * rng.randint(60, 70)  # longer than a word being typed can be
        out.append(word + rng.choice([" "] * 8 + ["\n", " \n ", "\t", "  "]))
    return "".join(out).rstrip(" ") if seed % 2 else "".join(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_word_model_metrics_equal_the_session_simulation(tiny_checkpoints, seed):
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Suggester(model, tokenizer)
    text = random_text(tokenizer, seed)
    unknown = unknown_word_test(tokenizer)
    reference = keyboard_metrics(suggester, text, session=SuggestionSession(suggester), is_unknown=unknown)
    fast = ChunkedWordSession(suggester, text)
    fast.chunk = 37  # several chunks, with word boundaries on both sides of their edges
    assert asdict(keyboard_metrics(suggester, text, session=fast, is_unknown=unknown)) == asdict(reference)
    assert reference.words > 200 and reference.unknown_words > 0 and reference.taps > 0


def test_strips_equal_the_session_keystroke_by_keystroke(tiny_checkpoints):
    """Every strip the typist sees, including those where the typed word may be whole."""
    loaded = lm.load(tiny_checkpoints("word"))
    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Suggester(model, tokenizer)
    text = random_text(tokenizer, 3, words=120)
    fast, reference = ChunkedWordSession(suggester, text), SuggestionSession(suggester)
    fast.chunk = 50
    seen_after = 0
    for at in range(len(text)):
        if not text[at].isspace():
            got, want = fast.suggestions(3), reference.suggestions(3)
            assert [(s.word, s.completion) for s in got] == [(s.word, s.completion) for s in want], repr(text[:at])
            assert [s.probability for s in got] == pytest.approx([s.probability for s in want], rel=1e-4)
            seen_after += any(s.completion.startswith(" ") for s in got)
        fast.type(text[at])
        reference.type(text[at])
    assert seen_after > 0  # the words after a typed word entered some strips


def test_models_without_plain_cells_read_the_chunk_in_pieces(tiny_checkpoints, monkeypatch):
    """int8 cells cannot be followed position by position: each chunk is read in pieces that
    end at its word boundaries, and the marks there give the session's metrics."""
    import lm.evaluate.fast_keyboard as fast_keyboard

    assert not fast_keyboard._has_plain_cells(lm.load(tiny_checkpoints("word"), int8=True).model)
    loaded = lm.load(tiny_checkpoints("word"))
    suggester = Suggester(loaded.model, loaded.tokenizer)
    text = random_text(loaded.tokenizer, 5, words=150)
    unknown = unknown_word_test(loaded.tokenizer)
    reference = keyboard_metrics(suggester, text, session=SuggestionSession(suggester), is_unknown=unknown)
    monkeypatch.setattr(fast_keyboard, "_has_plain_cells", lambda model: False)  # as for int8 cells
    monkeypatch.setattr(fast_keyboard, "states_along", None)  # would fail if it were used
    fast = ChunkedWordSession(suggester, text)
    fast.chunk = 37
    assert asdict(keyboard_metrics(suggester, text, session=fast, is_unknown=unknown)) == asdict(reference)


def test_fast_keyboard_metrics_picks_the_session_for_other_models(tiny_checkpoints):
    loaded = lm.load(tiny_checkpoints("char"))
    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Suggester(model, tokenizer)
    text = make_text(3, seed=5)
    reference = keyboard_metrics(suggester, text, session=SuggestionSession(suggester))
    assert asdict(fast_keyboard_metrics(suggester, text)) == asdict(reference)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_states_along_equal_reading_token_by_token(cell):
    import torch
    from lm.evaluate.fast_keyboard import states_along
    from lm.model.config import ModelConfig
    from lm.model.network import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=50, cell=cell, layers=2, hidden=16, emb=8)).eval()
    ids = torch.randint(0, 50, (12,)).tolist()
    with torch.inference_mode():
        _, state = model(torch.tensor([[3, 4]]), None)  # a state that is not zeros
        along = states_along(model, ids, state)
        for t, token in enumerate(ids):
            _, state = model(torch.tensor([[token]]), state)
            for got, want in zip(along if cell == "lstm" else [along], state if cell == "lstm" else [state]):
                assert torch.allclose(got[:, t], want[:, 0], atol=1e-6)


def test_a_suggester_with_a_cache_types_through_the_session(tiny_checkpoints, monkeypatch):
    """Chunked reads know nothing of the cache yet: such a suggester keeps the session path."""
    import lm.evaluate.fast_keyboard as fast_keyboard
    from lm.mix.cache import CacheConfig

    loaded = lm.load(tiny_checkpoints("word"))

    model, tokenizer = loaded.model, loaded.tokenizer
    suggester = Suggester(model, tokenizer, cache=CacheConfig(window=50, sharpness=1.0, weight=0.3))
    text = random_text(tokenizer, 4, words=60)
    reference = keyboard_metrics(suggester, text, session=SuggestionSession(suggester), is_unknown=unknown_word_test(tokenizer))
    monkeypatch.setattr(fast_keyboard, "ChunkedWordSession", None)  # would fail if it were used
    assert asdict(fast_keyboard_metrics(suggester, text, is_unknown=unknown_word_test(tokenizer))) == asdict(reference)
