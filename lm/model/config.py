"""The model's shape as data: ModelConfig and the names the command line offers.

It imports no torch, so `lm --help` can build its flags from it at no cost; the network
(lm/model/network.py) maps these names to torch modules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .._util import ConfigBase, flag
from ..errors import ConfigError

CELLS = ("lstm", "gru", "rnn")  # the recurrent cells; network.CELL_MODULES holds their torch classes
GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # weight blocks per cell: a layer's matrices are [gates * hidden, inputs]

SOFTMAXES = ("auto", "full", "adaptive")
# From this vocabulary size on, "auto" picks the adaptive softmax: the output layer then costs
# a few times less than a full [emb x vocab] product (Grave et al. 2017).
ADAPTIVE_MIN_VOCAB = 16_384
ADAPTIVE_CUTOFFS = (2_000, 10_000, 50_000)  # frequency-sorted word ids where clusters start
ADAPTIVE_DIV = 4.0  # each tail cluster works in a space this many times smaller than the last

# Evaluation's priming tokens per stream after the first (lm eval --overlap); an LSTM's memory of
# its start state is shorter.
DEFAULT_OVERLAP = 256

# Fields that change only training, not the weights: a resumed or fine-tuned run may change them.
REGULARIZERS = ("dropout", "locked_dropout", "embedding_dropout", "weight_drop", "ar", "tar")


@dataclass
class ModelConfig(ConfigBase):
    """Shape of the network; saved in config.json and enough to rebuild it."""

    vocab_size: int = 0
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    emb: int = 256
    dropout: float = 0.3  # WikiText-2 and Tiny Shakespeare overfit by epoch 5 at 0.1: bench/NOTES.md
    softmax: str = "auto"  # full (tied to the embedding), adaptive, or auto: by vocabulary size
    cutoffs: list[int] | None = None  # adaptive softmax clusters; None: from ADAPTIVE_CUTOFFS
    # A linear map hidden -> emb before the output layer. Without it (possible only when hidden
    # == emb) the tied logits are the bounded LSTM output times the embedding, and AdamW trains
    # such a model several times worse (bench/NOTES.md); checkpoints from before it load without.
    projection: bool = True
    # Training-only regularizers (AWD-LSTM, Merity et al. 2017), all off by default; none
    # changes a weight's shape or the model at inference.
    locked_dropout: bool = False  # one --dropout mask per sequence, the same at every step
    embedding_dropout: float = 0.0  # drop whole word types from the embedding
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights
    ar: float = 0.0  # activation regularization: ar * mean(h^2) of the last layer's output
    tar: float = 0.0  # temporal activation regularization: tar * mean((h_t - h_{t-1})^2)

    def validate(self) -> None:
        """Raises ConfigError naming the flag and what to pass."""
        if self.cell not in CELLS:
            raise ConfigError(f"--cell must be one of {', '.join(CELLS)}, not {self.cell!r} — pick one of those")
        if self.softmax not in SOFTMAXES:
            raise ConfigError(f"--softmax must be one of {', '.join(SOFTMAXES)}, not {self.softmax!r} — pick one of those")
        if self.cutoffs is not None:
            bounds = [0, *self.cutoffs, self.vocab_size - 1]
            if not all(isinstance(c, int) for c in self.cutoffs) or any(a >= b for a, b in zip(bounds, bounds[1:])):
                raise ConfigError(f"cutoffs must rise strictly between 0 and vocab_size - 1, not {self.cutoffs!r} — leave them out")
            if self.emb < ADAPTIVE_DIV ** len(self.cutoffs):
                raise ConfigError(f"--emb {self.emb} is too small for {len(self.cutoffs)} adaptive softmax clusters — "
                                  f"use --emb {int(ADAPTIVE_DIV ** len(self.cutoffs))} or more")
        for name in ("vocab_size", "layers", "hidden", "emb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{flag(name)} must be a positive integer, not {value!r} — pass 1 or more")
        for name in ("dropout", "embedding_dropout", "weight_drop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{flag(name)} must be in [0, 1), not {value!r} — 0 switches it off")
        for name in ("ar", "tar"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
                raise ConfigError(f"{flag(name)} cannot be negative, not {value!r} — pass 0 or more (0 switches it off)")
        if not self.projection and self.hidden != self.emb:
            raise ConfigError(f"--no-projection needs --hidden equal to --emb (not {self.hidden} and {self.emb}) — "
                              "drop --no-projection, or make them equal")
        if not isinstance(self.locked_dropout, bool):
            raise ConfigError(f"--locked-dropout is on or off, not {self.locked_dropout!r} — pass --locked-dropout or leave it out")

    def resolved(self) -> "ModelConfig":
        """A copy with softmax and cutoffs made concrete for the vocabulary (as saved)."""
        config = ModelConfig.from_dict(self.to_dict())
        if config.softmax == "auto":
            config.softmax = "adaptive" if config.vocab_size >= ADAPTIVE_MIN_VOCAB else "full"
        if config.softmax == "adaptive" and not config.cutoffs:
            config.cutoffs = [c for c in ADAPTIVE_CUTOFFS if c < config.vocab_size - 1]
            while config.cutoffs and config.emb < ADAPTIVE_DIV ** len(config.cutoffs):
                config.cutoffs.pop()  # each tail's width is emb / 4^i: keep it at least 1
            if not config.cutoffs:
                config.softmax = "full"
        if config.softmax == "full":
            config.cutoffs = None
        return config

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        # Checkpoints from before the adaptive softmax, and from before `projection` (which had
        # one exactly when hidden != emb).
        old_projection = data.get("hidden", cls.hidden) != data.get("emb", cls.emb)
        return super().from_dict({"softmax": "full", "projection": old_projection, **data})


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every weight a config implies, by its name in the state dict, without building the model.

    (Building on the meta device would pull in torch._dynamo: most of a second at start-up.)
    """
    gates = GATES[config.cell] * config.hidden
    shapes = {"embedding.weight": (config.vocab_size, config.emb)}
    for layer in range(config.layers):
        inputs = config.emb if layer == 0 else config.hidden
        shapes[f"rnn.weight_ih_l{layer}"] = (gates, inputs)
        shapes[f"rnn.weight_hh_l{layer}"] = (gates, config.hidden)
        shapes[f"rnn.bias_ih_l{layer}"] = (gates,)
        shapes[f"rnn.bias_hh_l{layer}"] = (gates,)
    if config.projection:
        shapes["projection.weight"] = (config.emb, config.hidden)
    config = config.resolved()
    if config.softmax == "full":
        shapes["decoder.weight"] = (config.vocab_size, config.emb)
        shapes["decoder.bias"] = (config.vocab_size,)
        return shapes
    bounds = [*config.cutoffs, config.vocab_size]
    shapes["adaptive.head.weight"] = (config.cutoffs[0] + len(config.cutoffs), config.emb)
    for i in range(len(config.cutoffs)):
        inner = int(config.emb // ADAPTIVE_DIV ** (i + 1))
        shapes[f"adaptive.tail.{i}.0.weight"] = (inner, config.emb)
        shapes[f"adaptive.tail.{i}.1.weight"] = (bounds[i + 1] - bounds[i], inner)
    return shapes
