import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lm
from lm.model.config import ModelConfig
from lm.model.network import LanguageModel
from lm.backend.base import read_chunk
from lm.suggest.sampler import (
    START_TEXT, GenerationConfig, Sampler, draw, TextStream, count_word_starts, generate, next_tokens,
    repetition_guard, top_k_filter, top_p_filter,
)
from lm.data.tokenizer import CharTokenizer, TokenizerConfig, WordTokenizer, train_tokenizer

from conftest import make_text

TEXT = make_text(40)
CHAR = CharTokenizer(sorted(set(TEXT)))
CELLS = ["lstm", "gru", "rnn"]


def random_model(cell: str = "lstm", vocab: int = CHAR.vocab_size, seed: int = 0, scale: float = 1.0) -> LanguageModel:
    """Random weights; a larger scale gives peaked distributions (no near-ties between the top tokens)."""
    torch.manual_seed(seed)
    model = LanguageModel(ModelConfig(vocab_size=vocab, cell=cell, layers=2, hidden=24, emb=16, dropout=0.0)).eval()
    with torch.no_grad():
        model.embedding.weight.mul_(scale)
    return model


def read_at_once(model, tokenizer, ids: list[int]) -> torch.Tensor:
    fresh = Sampler(model, tokenizer)
    return torch.from_numpy(fresh.feed_ids(ids))


class Script(nn.Module):
    """Not a trained model: fixed next-token logits for each token, table[token] -> [vocab]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)

    @classmethod
    def following(cls, successor: list[int]) -> "Script":
        """After token i, token successor[i] takes all the probability."""
        table = torch.full((len(successor), len(successor)), -10.0)
        table[torch.arange(len(successor)), torch.tensor(successor)] = 10.0
        return cls(table)

    def forward(self, ids, state=None):
        return self.table[ids], state  # [batch, time, vocab]


def word_script():
    """Writes "the cat sat . a dog" line after line."""
    tokenizer = WordTokenizer(["the", "cat", "sat", ".", "a", "dog"])
    order = ["<eos>", "the", "cat", "sat", ".", "a", "dog", "<eos>"]
    successor = {tokenizer.pieces.index(a): tokenizer.pieces.index(b) for a, b in zip(order, order[1:])}
    successor[tokenizer.unk_id] = tokenizer.eos_id
    return Script.following([successor[i] for i in range(tokenizer.vocab_size)]), tokenizer


def char_script():
    """Writes "ab. cd" line after line, one character per token."""
    tokenizer = CharTokenizer(sorted(set("ab. cd\n")))
    line = "\nab. cd\n"
    successor = {tokenizer.encode(a)[0]: tokenizer.encode(b)[0] for a, b in zip(line, line[1:])}
    successor[0] = tokenizer.encode("\n")[0]
    return Script.following([successor[i] for i in range(tokenizer.vocab_size)]), tokenizer


GREEDY = dict(temperature=0.0, repetition_penalty=1.0)


# Carryover is exact.

@pytest.mark.parametrize("cell", CELLS)
@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 120), max_size=4))
def test_feeding_in_pieces_equals_feeding_at_once(cell, cuts):
    model, text = random_model(cell), TEXT[:120]
    bounds = [0, *sorted(cuts), len(text)]
    sampler = Sampler(model, CHAR)
    for start, end in zip(bounds, bounds[1:]):
        sampler.feed(text[start:end])
    torch.testing.assert_close(torch.from_numpy(sampler.logits), read_at_once(model, CHAR, CHAR.encode(text)))


def test_a_long_prompt_is_read_in_bounded_calls_with_the_same_result(monkeypatch):
    model, ids = random_model(), CHAR.encode(make_text(300))  # ~12,000 tokens
    whole = model(torch.tensor([ids]))[0][0, -1]
    lengths = []
    features = model.features
    monkeypatch.setattr(model, "features", lambda x, state=None: lengths.append(x.shape[1]) or features(x, state))
    logits = torch.from_numpy(Sampler(model, CHAR).feed_ids(ids))
    assert max(lengths) == read_chunk(CHAR.vocab_size) < len(ids) and sum(lengths) == len(ids)
    torch.testing.assert_close(logits, whole, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_generating_from_carried_state_equals_rereading(cell):
    model = random_model(cell)
    sampler = Sampler(model, CHAR)
    sampler.feed("\nthe clouds")
    prompt_ids = CHAR.encode("\nthe clouds")
    first = sampler.generate(GenerationConfig(max_tokens=15, seed=1)).run()[0]
    torch.testing.assert_close(torch.from_numpy(sampler.logits), read_at_once(model, CHAR, prompt_ids + first.ids))
    sampler.feed(" are")
    second = sampler.generate(GenerationConfig(max_words=3, seed=2)).run()[0]
    assert second.finish_reason == "max_words" and second.words == 3
    assert second.stop_reason == "max_words"  # the former name stays, for Python code written before the rename
    expected = read_at_once(model, CHAR, prompt_ids + first.ids + CHAR.encode(" are") + second.ids)
    torch.testing.assert_close(torch.from_numpy(sampler.logits), expected)


def test_stopping_a_generation_early_leaves_the_sampler_at_what_was_emitted():
    model = random_model()
    sampler = Sampler(model, CHAR)
    pieces = iter(sampler.generate(GenerationConfig(max_tokens=50, seed=0)))
    taken = [next(pieces).token for _ in range(7)]
    pieces.close()
    torch.testing.assert_close(torch.from_numpy(sampler.logits), read_at_once(model, CHAR, CHAR.encode(START_TEXT) + taken))


def test_a_copy_branches_without_moving_the_original():
    model = random_model()
    sampler = Sampler(model, CHAR)
    sampler.feed("\nthe cat")
    before = sampler.logits.copy()
    branch = sampler.copy()
    branch.generate(GenerationConfig(max_tokens=10, seed=0)).run()
    assert np.array_equal(sampler.logits, before) and not np.array_equal(branch.logits, before)


def test_a_batch_greedy_run_gives_the_single_stream_text_and_leaves_the_sampler_alone():
    model = random_model("gru")
    single = generate(model, CHAR, "the", GenerationConfig(max_tokens=20, **GREEDY)).run()[0]
    sampler = Sampler(model, CHAR)
    sampler.feed(START_TEXT + "the")
    before = sampler.logits.copy()
    batch = sampler.generate(GenerationConfig(n=4, max_tokens=20, **GREEDY)).run()
    assert [s.ids for s in batch] == [single.ids] * 4
    assert np.array_equal(sampler.logits, before)


def test_batch_samples_are_each_a_valid_continuation():
    model = random_model()
    samples = generate(model, CHAR, "a", GenerationConfig(n=3, max_tokens=12, top_k=2, seed=5, repetition_penalty=1.0)).run()
    assert len({tuple(s.ids) for s in samples}) > 1  # the streams draw independently
    start = CHAR.encode(START_TEXT + "a")
    for sample in samples:
        for i, token in enumerate(sample.ids):
            logits = read_at_once(model, CHAR, start + sample.ids[:i])
            assert token in torch.topk(logits, 2).indices.tolist()


# Decoding.

def test_same_seed_same_text_and_another_seed_another():
    model = random_model()
    runs = [generate(model, CHAR, "the", GenerationConfig(max_tokens=40, seed=s)).run()[0].text for s in (7, 7, 8)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_the_seed_of_an_unseeded_run_reproduces_it():
    model = random_model()
    first = generate(model, CHAR, "", GenerationConfig(max_tokens=30))
    text = first.run()[0].text
    assert generate(model, CHAR, "", GenerationConfig(max_tokens=30, seed=first.seed)).run()[0].text == text


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_temperature_near_zero_equals_greedy(penalty):
    model = random_model(scale=30)
    greedy = generate(model, CHAR, "the", GenerationConfig(max_tokens=30, temperature=0, repetition_penalty=penalty)).run()[0]
    cold = generate(model, CHAR, "the", GenerationConfig(max_tokens=30, temperature=1e-5, seed=3, repetition_penalty=penalty)).run()[0]
    assert cold.ids == greedy.ids


def test_greedy_takes_the_argmax_at_every_step():
    model = random_model("rnn")
    sample = generate(model, CHAR, "", GenerationConfig(max_tokens=20, **GREEDY)).run()[0]
    start = CHAR.encode(START_TEXT)
    for i, token in enumerate(sample.ids):
        assert token == read_at_once(model, CHAR, start + sample.ids[:i]).argmax().item()


@pytest.mark.parametrize("options, allowed", [
    (dict(top_k=3), lambda probs: set(torch.topk(probs, 3).indices.tolist())),
    (dict(top_p=0.6), lambda probs: nucleus(probs, 0.6)),
])
def test_top_k_and_top_p_never_emit_outside_the_allowed_set(options, allowed):
    model = random_model()
    config = GenerationConfig(max_tokens=60, temperature=1.0, repetition_penalty=1.0, seed=0, **options)
    sample = generate(model, CHAR, "the", config).run()[0]
    start = CHAR.encode(START_TEXT + "the")
    for i, token in enumerate(sample.ids):
        probs = read_at_once(model, CHAR, start + sample.ids[:i]).softmax(-1)
        assert token in allowed(probs)


def nucleus(probs: torch.Tensor, p: float) -> set[int]:
    """The fewest most likely tokens whose probability reaches p."""
    kept, total = set(), 0.0
    for value, index in zip(*probs.sort(descending=True)):
        kept.add(index.item())
        total += value.item()
        if total >= p:
            return kept
    return kept


logit_rows = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=2, max_size=30, unique=True)


@settings(max_examples=50, deadline=None)
@given(row=logit_rows, k=st.integers(1, 40))
def test_top_k_filter_keeps_exactly_the_k_largest(row, k):
    logits = torch.tensor([row])
    kept = torch.isfinite(torch.from_numpy(top_k_filter(logits.numpy(), k)))[0]
    expected = set(torch.topk(logits[0], min(k, len(row))).indices.tolist())
    assert set(kept.nonzero().flatten().tolist()) == expected


@settings(max_examples=50, deadline=None)
@given(row=logit_rows, p=st.floats(0.01, 1.0))
def test_top_p_filter_keeps_the_nucleus(row, p):
    logits = torch.tensor([row], dtype=torch.float64)
    kept = torch.isfinite(torch.from_numpy(top_p_filter(logits.numpy(), p)))[0]
    probs = logits[0].softmax(-1)
    assert kept.any()
    if (~kept).any():
        assert probs[kept].min() >= probs[~kept].max()  # the most likely tokens
    assert probs[kept].sum() >= p - 1e-9  # hold p
    assert probs[kept].sum() - probs[kept].min() < p + 1e-9  # and no fewer would


def test_repetition_guard_pushes_recent_tokens_down_and_can_be_switched_off():
    logits = np.array([[2.0, -1.0, 0.5, 3.0]])
    recent = np.array([[0, 1, 0]])
    guarded = repetition_guard(logits, recent, 2.0)
    assert guarded.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert repetition_guard(logits, recent, 1.0) is logits
    config = GenerationConfig(temperature=0, repetition_penalty=2.0)
    assert next_tokens(np.array([[3.0, 2.0]]), np.array([[0]]), config).tolist() == [1]
    assert next_tokens(np.array([[3.0, 2.0]]), np.array([[0]]), GenerationConfig(**GREEDY)).tolist() == [0]


def test_the_guard_breaks_a_loop_that_greedy_decoding_falls_into():
    tokenizer = CharTokenizer(["a", "b"])
    table = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 1.5], [0.0, 2.0, 1.5]])  # "a" is always the likeliest
    model = Script(table)
    plain = generate(model, tokenizer, "a", GenerationConfig(max_tokens=6, **GREEDY)).run()[0]
    assert plain.text == "aaaaaa"
    guarded = generate(model, tokenizer, "a", GenerationConfig(max_tokens=6, temperature=0, repetition_penalty=1.5, repetition_window=1)).run()[0]
    assert guarded.text == "bababa"


@pytest.mark.parametrize("field, value, message", [
    ("temperature", -1.0, "--temperature must be 0 or more"),
    ("top_p", 0.0, "--top-p must be in (0, 1]"),
    ("top_k", -2, "--top-k must be 0 (off)"),
    ("n", 0, "--n must be a positive integer"),
    ("max_words", 0, "--max-words must be a positive integer"),
    ("stop_at", "page", "--stop-at must be one of sentence, paragraph"),
    ("repetition_penalty", 0.0, "--repetition-penalty must be above 0"),
])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(lm.ConfigError, match=re.escape(message)):
        generate(random_model(), CHAR, "", GenerationConfig(**{field: value}))


# Stopping.

@pytest.mark.parametrize("options, text, reason", [
    (dict(max_tokens=3), "the cat sat", "max_tokens"),
    (dict(max_words=4), "the cat sat .", "max_words"),
    (dict(stop_at="sentence"), "the cat sat .", "sentence"),
    (dict(stop_at="paragraph"), "the cat sat . a dog\n", "paragraph"),
    (dict(stop=("a d", "zzz")), "the cat sat . a dog", "stop"),
    (dict(), "the cat sat . a dog\n" * 28 + "the cat sat .", "max_tokens"),  # 200 tokens by default
])
def test_stop_conditions_on_a_word_model(options, text, reason):
    model, tokenizer = word_script()
    sample = generate(model, tokenizer, "", GenerationConfig(**GREEDY, **options)).run()[0]
    assert (sample.text, sample.finish_reason) == (text, reason)


def test_a_word_model_continues_a_prompt_with_a_space_and_counts_words():
    model, tokenizer = word_script()
    generation = generate(model, tokenizer, "the cat", GenerationConfig(max_words=3, **GREEDY))
    pieces = [piece.text for piece in generation]
    assert pieces == [" sat", " .", " a"]
    assert generation.samples[0].words == 3


def test_a_char_model_stops_before_the_word_past_max_words():
    model, tokenizer = char_script()
    sample = generate(model, tokenizer, "", GenerationConfig(max_words=2, **GREEDY)).run()[0]
    assert (sample.text, sample.words, sample.finish_reason) == ("ab. cd\n", 2, "max_words")
    half = generate(model, tokenizer, "a", GenerationConfig(max_words=1, **GREEDY)).run()[0]
    assert half.text == "b. cd\n"  # the prompt's word is not counted again


def test_a_line_end_right_after_the_prompt_does_not_end_the_turn():
    model, tokenizer = char_script()
    sample = generate(model, tokenizer, "ab. cd", GenerationConfig(stop_at="sentence", **GREEDY)).run()[0]
    assert sample.text == "\nab."


def test_word_starts_are_counted_across_pieces():
    assert count_word_starts("\n", "the cat") == 2
    assert count_word_starts("e", "t sat") == 1
    assert count_word_starts(" ", "") == 0


# Streaming text.

@pytest.fixture(scope="module")
def tokenizers():
    found = {"char": CHAR, "word": WordTokenizer.train(TEXT, TokenizerConfig(kind="word", min_count=1))}
    for kind in ("unigram", "bpe"):
        found[kind] = train_tokenizer(TEXT, TokenizerConfig(kind=kind, vocab_size=300))
    return found


@pytest.mark.parametrize("kind", ["char", "unigram", "bpe", "word"])
@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("the cloud skyé☃😀 .\n")), max_size=40))
def test_streamed_pieces_join_to_the_decoded_text(tokenizers, kind, text):
    tokenizer = tokenizers[kind]
    ids = tokenizer.encode(text)
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.flush() == tokenizer.decode(ids)
    assert all("\ufffd" not in piece for piece in pieces)  # never half a character


def test_byte_pieces_wait_for_the_whole_character(tokenizers):
    tokenizer = tokenizers["bpe"]
    ids = tokenizer.encode("☃")
    assert len(ids) == 3 and all(tokenizer.sp.is_byte(i) for i in ids)
    stream = TextStream(tokenizer)
    assert [stream.push(i) for i in ids] == ["", "", "☃"]


def test_no_prompt_starts_from_the_newline_context():
    model = random_model()
    first = generate(model, CHAR, "", GenerationConfig(max_tokens=1, **GREEDY)).run()[0].ids[0]
    assert first == read_at_once(model, CHAR, CHAR.encode("\n")).argmax().item()


@pytest.mark.parametrize("vocab", [5, 700])  # one block, and several with a partial last one
def test_a_draw_follows_the_softmax_and_never_takes_a_token_of_probability_zero(vocab):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (1, vocab))
    logits[0, rng.choice(vocab, vocab // 3, replace=False)] = -np.inf  # a third filtered out, as top-k does
    probs = np.exp(logits[0] - logits[0].max())
    probs /= probs.sum()
    draws = np.concatenate([draw(logits, rng) for _ in range(20000)])
    counts = np.bincount(draws, minlength=vocab)
    assert counts[probs == 0].sum() == 0
    expected = probs * len(draws)
    seen = expected > 50  # a chi-square statistic over the tokens drawn often enough to count
    chi2 = (((counts - expected) ** 2)[seen] / expected[seen]).sum()
    assert chi2 < seen.sum() + 4 * np.sqrt(2 * seen.sum())  # its mean is the degrees of freedom, its sd sqrt(2 df)


def test_the_top_of_the_range_lands_on_the_last_token_with_weight():
    """u * total can round up to the total: the draw must still take a token of weight, never one filtered out."""
    from lm.suggest.sampler import DRAW_BLOCK, inverse_cdf

    assert inverse_cdf(np.array([0.5, 0.5, 0.0, 0.0]), 1.0) == 1
    weights = np.zeros(3 * DRAW_BLOCK + 7)
    weights[[3, DRAW_BLOCK + 5]] = 1.0  # the last blocks hold no weight
    assert inverse_cdf(weights, 1.0) == DRAW_BLOCK + 5
    assert inverse_cdf(weights, 0.0) == 3
