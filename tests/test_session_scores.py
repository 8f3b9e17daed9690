"""The prior of the noisy-channel decoder: log P(word | context) for given words, checked against
plain model calls, hand-computed probabilities and the strip's own numbers."""
from __future__ import annotations

import math

import pytest
import torch

import lm
from lm.data.text import LETTER, char_class
from lm.data.tokenizer import Tokenizer
from lm.mix.config import CacheConfig
from lm.suggest.engine import SuggestConfig, Suggester
from lm.suggest.session import SuggestionSession
from test_suggest import UniformModel

CLOUDS = "the clouds are in the "
WORDS = ["sky", "the", "garden", "clouds", "qzx"]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    cache = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = lm.load(tiny_checkpoints(kind))
        return cache[kind]

    return get


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits[0, -1].float(), -1)  # [vocab]


@torch.no_grad()
def spelled_probability(model, tokenizer, context: str, word: str) -> float:
    """P(" " + word, then a piece that ends the word | context) / P(a word starts after " "),
    summed over every piece sequence that spells it, by plain `model(ids, state)` calls."""
    pieces, target = tokenizer.pieces, " " + word
    logits, state = model(torch.tensor([tokenizer.encode("\n" + context)]), None)
    first = _probs(logits)
    starts = sum(first[i].item() for i, p in enumerate(pieces) if p == " " or p[:1] == " " and not p[1].isspace())

    def walk(rest: str, probs, state) -> float:
        total = 0.0
        for i, piece in enumerate(pieces):
            if piece and rest.startswith(piece):
                logits, after = model(torch.tensor([[i]]), state)
                if piece == rest:  # spelled: the next piece must end the word
                    following = _probs(logits)
                    ends = sum(following[j].item() for j, p in enumerate(pieces) if p and char_class(p[0]) != LETTER)
                    total += probs[i].item() * ends
                else:
                    total += probs[i].item() * walk(rest[len(piece):], _probs(logits), after)
            elif piece.startswith(rest) and len(piece) > len(rest) and char_class(piece[len(rest)]) != LETTER:
                total += probs[i].item()  # the word ends inside the piece
        return total

    return walk(target, first, state) / starts


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_char_and_subword_scores_are_the_spelled_probabilities(loaded, kind):
    p = loaded(kind)
    suggester = Suggester(p.model, p.tokenizer)
    scores = suggester.score_words(CLOUDS, WORDS)
    for word, score in zip(WORDS, scores):
        expected = spelled_probability(p.model, p.tokenizer, CLOUDS[:-1], word)
        assert math.exp(score) == pytest.approx(expected, rel=1e-4), word


@pytest.mark.parametrize("kind, cache", [("char", None), ("char", CacheConfig(window=200, sharpness=1.0, weight=0.3)),
                                         ("word", None), ("word", CacheConfig(window=200, sharpness=1.0, weight=0.3))])
def test_a_word_found_by_the_search_scores_its_strip_probability(loaded, kind, cache):
    p = loaded(kind)
    suggester = Suggester(p.model, p.tokenizer, SuggestConfig(punctuation_min=0.0), cache=cache)
    for text in [CLOUDS, "the cat sees the ball in the garden . my friend likes "]:
        strip = suggester.suggest(text, 6)
        scores = suggester.score_words(text, [s.word for s in strip])
        assert [math.exp(v) for v in scores] == pytest.approx([s.probability for s in strip], rel=1e-4)


def test_word_scores_are_the_softmax_row_given_a_word(loaded):
    p = loaded("word")
    suggester, tokenizer = Suggester(p.model, p.tokenizer), p.tokenizer
    with torch.no_grad():
        probs = _probs(p.model(torch.tensor([tokenizer.encode("\n" + CLOUDS)]), None)[0])
    words_mass = sum(probs[i].item() for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids)
    scores = suggester.score_words(CLOUDS, ["sky", "garden", "qzx"])
    expected = [probs[tokenizer.encode(w)[0]].item() / words_mass for w in ("sky", "garden")]
    expected.append(probs[tokenizer.unk_id].item() / words_mass)  # outside the vocabulary: the <unk> share
    assert [math.exp(v) for v in scores] == pytest.approx(expected, rel=1e-4)
    assert tokenizer.encode("qzx") == [tokenizer.unk_id]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_a_session_scores_as_a_fresh_read_and_after_the_typed_words_context(loaded, kind):
    p = loaded(kind)
    suggester = Suggester(p.model, p.tokenizer)
    session = SuggestionSession(suggester)
    for ch in "the cat sees the ball in the gar":
        session.type(ch)
        assert session.score_words(WORDS) == suggester.score_words(session.text, WORDS), repr(session.text)
    # The candidates stand in for the word being typed: "gar" is not part of their context.
    assert session.score_words(WORDS) == suggester.score_words("the cat sees the ball in the ", WORDS)
    # Two words (a missed space): the first, then the second after it.
    two = suggester.score_words("the clouds are in ", ["the sky"])[0]
    first, second = suggester.score_words("the clouds are in ", ["the"])[0], suggester.score_words(CLOUDS, ["sky"])[0]
    assert two == pytest.approx(first + second, rel=1e-4)


class PiecesTokenizer(Tokenizer):
    """Longest-match pieces; "ab" can be spelled [a, b], [ab] or, ending in a full stop, [a, b.]."""

    kind, unk_id = "bpe", 0
    pieces = ["", "\n", " ", "a", "b", "ab", ".", "b."]
    vocab_size = len(pieces)

    def encode(self, text: str) -> list[int]:
        ids = []
        while text:
            piece = max((p for p in self.pieces if p and text.startswith(p)), key=len, default="")
            ids.append(self.pieces.index(piece))
            text = text[len(piece) or 1:]
        return ids


def test_scores_by_hand_on_a_uniform_model():
    # Each of the 8 pieces has p = 1/8. "\n", " " and "." end a word of letters; every piece but
    # "." and the empty one ends a word of punctuation. Given the space that starts the word:
    # "ab" = a·b·end + ab·end + a·"b." = (1/8)(1/8)(3/8) + (1/8)(3/8) + (1/8)(1/8) = 35/512,
    # "a" = a·end = 3/64, "b" = b·end + "b." = 3/64 + 1/8 = 11/64, "." = .·end = (1/8)(6/8) = 3/32.
    suggester = Suggester(UniformModel(PiecesTokenizer.vocab_size), PiecesTokenizer(),
                          SuggestConfig(beam_width=64, max_depth=3, punctuation_min=0.0))
    scores = suggester.score_words("b ", ["ab", "a", ".", "a b", "a.", "", "ba."])
    expected = [35 / 512, 3 / 64, 3 / 32, 3 / 64 * 11 / 64, 0.0, 0.0, 0.0]  # "a b": "a", then "b" after " a"
    assert [math.exp(v) for v in scores] == pytest.approx(expected, rel=1e-5)
    # The search sums the same spellings when its beam holds them all.
    found = {s.word: s.probability for s in suggester.suggest("b ", 10)}
    assert found["ab"] == pytest.approx(35 / 512, rel=1e-5) and found["."] == pytest.approx(3 / 32, rel=1e-5)


def test_a_word_too_long_to_be_typed_has_no_score(loaded):
    p = loaded("char")
    assert Suggester(p.model, p.tokenizer).score_words("a" * 100, ["sky"]) == [-math.inf]
