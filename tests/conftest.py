"""Fixtures that cost almost nothing: a generated text, and tiny models trained on it once per run."""
from __future__ import annotations

import dataclasses
import os
import random
import signal
from pathlib import Path

import pytest

import lm

SHARED_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "her sister", "the birds", "our teacher"]
VERBS = ["sees", "likes", "finds", "wants", "keeps", "calls"]
OBJECTS = ["the ball", "a red apple", "the green door", "some bread", "a small house", "the river"]
PLACES = ["in the garden", "near the road", "at home", "by the sea", "under the tree"]


def make_text(sentences: int = 600, seed: int = 0) -> str:
    """A small English-like text with a fixed pattern: "the clouds are in the" is always followed by "sky"."""
    rng = random.Random(seed)
    lines = []
    for i in range(sentences):
        if i % 4 == 0:
            lines.append("the clouds are in the sky .")
        else:
            lines.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} .")
    return "\n".join(lines) + "\n"


TINY_MODEL = dict(layers=1, hidden=64, emb=32, dropout=0.0)
# tune_cache=False: the end-of-run tuning of the cache (and a word model's n-gram) and the second save
# it makes cost about a second a run, for figures only test_cache.py and test_ngram.py read; they ask for it.
TINY_TRAIN = dict(batch=8, bptt=32, max_steps=150, eval_every=75, lr=1e-2, warmup=0, log_every=25, device="cpu",
                  tune_cache=False)
TINY_VOCAB = {"char": None, "unigram": 300, "bpe": 300, "word": None}


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """Keep the token and tokenizer cache inside the test run."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("LM_CACHE_DIR", str(cache))
    yield cache
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread here and in the processes the tests start (OMP_NUM_THREADS). The tiny models
    gain nothing from a second thread, and where other jobs hold the cores the two spin waiting for
    each other: a 60-step run of the tiny char model took 2 s on one thread and 330 s on two, on
    this two-core machine under a load of 19."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")
    yield
    mp.undo()
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def train_tiny(corpus_path: Path, out: Path, kind: str = "char", **overrides) -> lm.TrainResult:
    """Train a tiny model on a corpus file; overrides go to the model or train config."""
    model_fields = {f.name for f in dataclasses.fields(lm.ModelConfig)} - {"vocab_size"}
    model = {**TINY_MODEL, **{k: v for k, v in overrides.items() if k in model_fields}}
    train = {**TINY_TRAIN, **{k: v for k, v in overrides.items() if k not in model}}
    corpus = lm.load_corpus([str(corpus_path)])
    return lm.train(
        corpus, out,
        model_config=lm.ModelConfig(**model),
        tokenizer_config=lm.TokenizerConfig(kind=kind, vocab_size=TINY_VOCAB[kind], min_count=1),
        config=lm.TrainConfig(**train),
    )


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, corpus_file):
    """kind -> checkpoint folder of a tiny model trained on the generated text (built on first use)."""
    built: dict[str, Path] = {}

    def get(kind: str = "char") -> Path:
        if kind not in built:
            out = tmp_path_factory.mktemp(f"ckpt-{kind}") / "model"
            train_tiny(corpus_file, out, kind)
            built[kind] = out
        return built[kind]

    return get


@pytest.fixture
def shared_corpora() -> Path:
    if not SHARED_CORPORA.is_dir():
        pytest.skip(f"needs the shared corpora at {SHARED_CORPORA} (beside the repository)")
    return SHARED_CORPORA


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler during a test, even when the suite runs with SIGINT ignored (nohup)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class InterruptAt(lm.Progress):
    """Sends the process a real SIGINT when training reaches a step."""

    def __init__(self, step):
        self.at = step

    def step(self, stats):
        if stats["step"] == self.at:
            os.kill(os.getpid(), signal.SIGINT)
