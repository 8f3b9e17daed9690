"""The PyTorch backend: a LanguageModel (on a GPU, or on the CPU when asked) behind the step interface."""
from __future__ import annotations

import numpy as np
import torch

from ..model.state import select_state
from .base import Backend


class TorchBackend(Backend):
    """A LanguageModel (float, or int8 from lm.model.int8) as a `Backend`; the state stays on its device."""

    name = "torch"

    def __init__(self, model, int8: bool = False, vocab_size: int | None = None):
        """
        Args:
            vocab_size: for a model without a config (anything that keeps the one contract).
        """
        self.model = model.eval()
        self.int8 = int8
        self.config = getattr(model, "config", None)
        self.vocab_size = vocab_size or self.config.vocab_size
        self.device = next(model.parameters(), torch.empty(0)).device

    def _ids(self, ids: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ids, np.int64), device=self.device)

    @torch.inference_mode()
    def run(self, ids, state):
        logits, state = self.model(self._ids(ids), state)
        return _numpy(logits), state

    @torch.inference_mode()
    def run_features(self, ids, state, last_only: bool = False):
        features, state = self.model.features(self._ids(ids), state)  # [batch, time, emb]
        logits = self.model.output(features[:, -1:])[:, -1] if last_only else self.model.output(features)
        return _numpy(logits), _numpy(features), state

    @torch.inference_mode()
    def run_last(self, ids, state):
        if not hasattr(self.model, "features"):  # a model that keeps only the one contract
            logits, state = self.run(ids, state)
            return logits[:, -1], state
        return super().run_last(ids, state)

    @torch.inference_mode()
    def select(self, state, rows):
        return select_state(state, self._ids(rows))


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy (a copy: a view would keep a whole chunk's tensor alive)."""
    return t.detach().to("cpu", torch.float32).numpy().copy()
