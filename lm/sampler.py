"""The sampler: a model plus the hidden state of the text read so far.

Text is read once; every token after it costs one step of the model, never a re-read of the
prefix. The sampler drives generation, the REPL and suggestions.
"""
from __future__ import annotations

import torch

from .model import map_state


class Sampler:
    """Carries the model's state across calls.

    Attributes:
        state: what the cell carries after the text fed so far (None before any text).
        logits: [vocab] raw next-token logits after the last token fed (None before any).
    """

    def __init__(self, model, tokenizer, state=None, logits: torch.Tensor | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.state = state
        self.logits = logits

    @torch.inference_mode()
    def feed_ids(self, ids: list[int]) -> torch.Tensor | None:
        """Advance the state over token ids; returns the next-token logits [vocab]."""
        if not ids:
            return self.logits
        x = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, time]
        logits, self.state = self.model(x, self.state)
        self.logits = logits[0, -1].float()
        return self.logits

    def feed(self, text: str) -> torch.Tensor | None:
        """Advance the state over a text; returns the next-token logits [vocab]."""
        return self.feed_ids(self.tokenizer.encode(text))

    def copy(self) -> "Sampler":
        """An independent sampler at the same point, to branch from the same context."""
        state = map_state(self.state, lambda t: t.clone())
        logits = None if self.logits is None else self.logits.clone()
        return Sampler(self.model, self.tokenizer, state, logits)

    def reset(self) -> None:
        """Forget the context."""
        self.state, self.logits = None, None
