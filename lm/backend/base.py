"""The step interface every inference backend implements, in numpy.

    logits, state = backend.run(ids, state)        # ids [batch, time] -> logits [batch, time, vocab]
    state, last = backend.read(ids, state)         # a long text, in bounded chunks: last logits [vocab]
    logits, state = backend.step(ids, state)       # ids [batch, 1] -> logits [batch, vocab]

It is the one contract `model(ids, state) -> (logits, state)` with numpy arrays at the
edges: logits are float32 (log-probabilities for an adaptive softmax: the same softmax),
and the state is whatever the backend carries (None means zeros; `select` picks streams).
The `*_features` calls also return what the output layer read (the continuous cache's keys).
"""
from __future__ import annotations

import numpy as np

READ_LOGITS_BUDGET = 2**22  # floats of [1, time, vocab] logits one call of `read` may build (16 MB)


def read_chunk(vocab_size: int) -> int:
    """Tokens per model call when reading a text: keeps the logits within READ_LOGITS_BUDGET."""
    return max(16, min(2048, READ_LOGITS_BUDGET // vocab_size))


class Backend:
    """A model's step function (see the module's docstring). Subclasses implement `run`,
    `run_features` and `select`; reading and stepping are built on them."""

    name = "?"  # "torch" or "onnx"
    int8 = False
    device = "cpu"  # where the model runs ("cuda:0" for the torch backend on a GPU)
    vocab_size: int
    config = None  # the model's lm.model.config.ModelConfig, when the backend knows it

    def run(self, ids: np.ndarray, state) -> tuple[np.ndarray, object]:
        """ids [batch, time] int64 -> (logits [batch, time, vocab] float32, state after the last position)."""
        raise NotImplementedError

    def run_features(self, ids: np.ndarray, state, last_only: bool = False):
        """ids [batch, time] -> (logits, features [batch, time, emb] float32, state).

        logits are [batch, time, vocab], or [batch, vocab] for the last position alone with
        `last_only` (reading a text needs no more, and a word model's output layer is most
        of a step's cost).
        """
        raise NotImplementedError

    def select(self, state, rows: np.ndarray):
        """Pick streams (rows of the batch) from a state, e.g. to branch a beam."""
        raise NotImplementedError

    @property
    def chunk(self) -> int:
        return read_chunk(self.vocab_size)

    def step(self, ids: np.ndarray, state) -> tuple[np.ndarray, object]:
        """One token per stream: ids [batch, 1] -> (logits [batch, vocab], state)."""
        logits, state = self.run(ids, state)
        return logits[:, -1], state

    def step_features(self, ids: np.ndarray, state):
        """One token per stream: (logits [batch, vocab], features [batch, emb], state)."""
        logits, features, state = self.run_features(ids, state, last_only=True)
        return logits, features[:, -1], state

    def read(self, ids: list[int], state) -> tuple[object, np.ndarray | None]:
        """Advance one stream over token ids, `chunk` per call; only the last logits are kept.

        Returns (state, [vocab] next-token logits, or None when `ids` is empty).
        """
        logits = None
        for at in range(0, len(ids), self.chunk):
            logits, state = self.run_last(np.asarray([ids[at: at + self.chunk]], np.int64), state)
            logits = logits[0]
        return state, logits

    def run_last(self, ids: np.ndarray, state) -> tuple[np.ndarray, object]:
        """ids [batch, time] -> (the last position's logits [batch, vocab], state)."""
        logits, _, state = self.run_features(ids, state, last_only=True)
        return logits, state

    def read_features(self, ids: list[int], state) -> tuple[object, np.ndarray, np.ndarray]:
        """Like `read`, also keeping the features at every position: (state, features [n, emb], logits [vocab]).

        `ids` must not be empty.
        """
        features = []
        for at in range(0, len(ids), self.chunk):
            logits, found, state = self.run_features(np.asarray([ids[at: at + self.chunk]], np.int64), state, last_only=True)
            features.append(found[0])
        return state, np.concatenate(features), logits[0]


def as_backend(model, vocab_size: int | None = None) -> Backend:
    """A Backend as it is; a PyTorch model wrapped in the torch backend (for code and tests
    that hand the engine a model; `vocab_size` for one without a config)."""
    if isinstance(model, Backend):
        return model
    from .torch_backend import TorchBackend

    return TorchBackend(model, vocab_size=vocab_size)
