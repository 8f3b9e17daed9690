"""The language model: embedding -> stacked RNN -> tied output layer.

Every other stage talks to it through one call, `model(ids, state) -> (logits, state)`. The
forward reads top to bottom: embed, recur (the stacked cells, one path), project, output.
Beside the network, not inside it: the loss (loss.py), int8 weights (int8.py), the state
helpers (state.py) and reading a text through the model (reading.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ADAPTIVE_DIV, ModelConfig
from .state import layer_state, stack_layers, zero_state

CELL_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # config.CELLS, as torch modules
# One layer of each cell, with weights of our own: the fused kernel behind nn.LSTM / GRU / RNN
# for a whole window, and the single-step cell.
FUSED_CELLS = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}
STEP_CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}

# Inference over at most this many time steps runs each layer's cell step by step: on CPU a
# whole nn.LSTM call costs milliseconds of set-up (oneDNN), a cell step a fraction of that.
# Measured (2x512 LSTM, one stream, one CPU thread, medians of 9; a busy two-core machine):
# one step 2.0 ms by cell steps against 7.0 ms for one nn.LSTM call; four steps 8.5 against 12.2 ms.
STEP_LOOP_MAX_TIME = 4


class LanguageModel(nn.Module):
    """Stacked RNN language model with the output layer tied to the embedding.

    Tying (Press & Wolf 2017, Inan et al. 2017) shares the [vocab, emb] matrix between
    input and output; a linear projection maps hidden -> emb first.
    Large vocabularies use an adaptive softmax instead (untied): frequent words in a head,
    rare ones in smaller tail clusters, so training never builds the full distribution.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config = config.resolved()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.emb)
        self.dropout = nn.Dropout(config.dropout)
        rnn_dropout = config.dropout if config.layers > 1 else 0.0
        self.rnn = CELL_MODULES[config.cell](
            config.emb, config.hidden, config.layers, batch_first=True, dropout=rnn_dropout
        )
        self.projection = nn.Linear(config.hidden, config.emb, bias=False) if config.projection else None
        if config.softmax == "adaptive":
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(config.emb, config.vocab_size, config.cutoffs, div_value=ADAPTIVE_DIV)
        else:
            self.decoder = nn.Linear(config.emb, config.vocab_size)
            self.decoder.weight = self.embedding.weight
        self._init_weights()

    def set_dropout(self, p: float) -> None:
        """Change --dropout between the layers and before the output (the budget rule's re-plan)."""
        self.config.dropout = p
        self.dropout.p = p
        self.rnn.dropout = p if self.config.layers > 1 else 0.0

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.config.softmax == "full":
            nn.init.zeros_(self.decoder.bias)

    # The forward, stage by stage.

    def forward(self, ids: torch.Tensor, state=None):
        """Raw next-token logits for every position, and the state after the last one.

        Args:
            ids: [batch, time] token ids.
            state: what the cells carry (see state.py), or None for zeros.
        Returns:
            logits [batch, time, vocab] (log-probabilities with the adaptive softmax) and the new state.
        """
        features, state = self.features(ids, state)  # [batch, time, emb]
        return self.output(features), state

    def features(self, ids: torch.Tensor, state=None):
        """What the output layer reads at every position [batch, time, emb], and the new state.

        `output(features(ids, state)[0])` equals `forward`'s logits; the continuous cache
        (lm/mix/cache.py) keeps these vectors as its memory of the text.
        """
        hidden, state = self.rnn_output(ids, state)  # [batch, time, hidden]
        return self.project(self.drop(hidden)), state

    def rnn_output(self, ids: torch.Tensor, state=None):
        """The last layer's output before its dropout [batch, time, hidden], and the new state."""
        return self.recur(self.drop(self.embed(ids)), state)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding rows of `ids` [batch, time, emb]; in training, with embedding dropout."""
        x = self.embedding(ids)
        p = self.config.embedding_dropout
        if self.training and p:
            # Embedding dropout (Merity et al. 2017, after Gal & Ghahramani 2016): a dropped word
            # type is zero at every occurrence in the batch. Scaling the rows looked up equals
            # masking the [vocab, emb] matrix, at the cost of the batch instead of the vocabulary.
            keep = x.new_empty(self.config.vocab_size).bernoulli_(1 - p) / (1 - p)  # [vocab]
            x = x * keep[ids].unsqueeze(-1)  # [batch, time, emb]
        return x

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout at --dropout: a mask per element, or with locked_dropout in training one per sequence."""
        if self.training and self.config.locked_dropout:
            return locked_dropout(x, self.config.dropout)
        return self.dropout(x)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden -> emb [batch, time, emb], the width of the tied output layer (identity without a projection)."""
        return self.projection(hidden) if self.projection is not None else hidden

    def output(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [batch, time, vocab] from features (log-probabilities with the adaptive softmax)."""
        if self.config.softmax == "adaptive":
            with full_precision(features):
                return self.adaptive.log_prob(features.flatten(0, 1).float()).view(*features.shape[:2], -1)
        return self.decoder(features)  # [batch, time, vocab]

    # The stacked cells: one path, layer by layer.

    def recur(self, x: torch.Tensor, state=None):
        """The stacked cells over x [batch, time, emb]: the last layer's output [batch, time,
        hidden] and the new state.

        Layer by layer, with --dropout between the layers, as nn.LSTM defines it. When nothing
        asks for a layer of its own, one nn.LSTM call runs the whole stack instead: the same
        numbers and dropout masks (tests/test_model.py checks both against a plain nn.LSTM), with
        the layers fused by cuDNN on a GPU. On CPU the two cost about the same: a training
        window of 32x64 on a 2x512 LSTM took 1.24 s forward and backward as one call, 1.30 s by
        layers (one thread, medians of 5, a busy two-core machine).
        """
        if self._whole_stack_at_once(x):
            return self.rnn(x, state)  # [batch, time, hidden]
        if state is None:
            state = self.init_state(x.shape[0])
        layer_states = []
        for layer in range(self.config.layers):
            if layer > 0:
                x = self.drop(x)  # between layers, as nn.LSTM's own dropout
            x, new = self._run_layer(x, layer_state(state, layer), layer)  # [batch, time, hidden]
            layer_states.append(new)
        return x, stack_layers(layer_states)

    def _whole_stack_at_once(self, x: torch.Tensor) -> bool:
        """True when the loop over layers would compute what one nn.LSTM call does.

        The loop is needed in training for what nn.LSTM cannot do: weight drop, and a dropout
        mask shared across time between the layers; in inference for short windows, which run
        cell by cell (STEP_LOOP_MAX_TIME). An int8 RNN has no float weights to loop over.
        """
        if not isinstance(getattr(self.rnn, "weight_ih_l0", None), torch.Tensor):
            return True  # int8 (quantized) or otherwise swapped: the module runs itself
        if self.training:
            locked_between_layers = self.config.locked_dropout and self.config.layers > 1 and self.config.dropout > 0
            return not (locked_between_layers or self.config.weight_drop > 0)
        return x.shape[1] > STEP_LOOP_MAX_TIME

    def _run_layer(self, x: torch.Tensor, state, layer: int):
        """One layer over x [batch, time, inputs] from its state (every tensor [1, batch, hidden]):
        its output [batch, time, hidden] and new state."""
        weights = self._layer_weights(layer)
        if not self.training:
            return _cell_steps(self.config.cell, x, state, weights)
        # Arguments: has_biases, num_layers, dropout, train, bidirectional, batch_first.
        out, *new = FUSED_CELLS[self.config.cell](x, state, weights, True, 1, 0.0, True, False, True)
        return out, (tuple(new) if self.config.cell == "lstm" else new[0])

    def _layer_weights(self, layer: int) -> list[torch.Tensor]:
        """[w_ih, w_hh, b_ih, b_hh] of one layer; in training, the hidden-to-hidden matrix weight-dropped."""
        w_ih, w_hh, b_ih, b_hh = (getattr(self.rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        if self.training and self.config.weight_drop > 0:
            # Weight drop (Merity et al. 2017): DropConnect on the hidden-to-hidden matrix, one
            # mask per window for every step, so the whole window is still one fused kernel call.
            # The parameter itself stays unmasked: inference and checkpoints never see a mask.
            w_hh = F.dropout(w_hh, self.config.weight_drop, training=True)
        return [w_ih, w_hh, b_ih, b_hh]

    def init_state(self, batch: int):
        """Zero state for `batch` streams, on the weights' device and dtype."""
        return zero_state(self.config, batch, self.embedding.weight)


def _cell_steps(cell: str, x: torch.Tensor, state, weights: list[torch.Tensor]):
    """One layer's cell, one time step at a time over x [batch, time, inputs]: the fused
    kernel's maths, for inference windows too short to pay for its set-up."""
    step = STEP_CELLS[cell]
    state = tuple(t[0] for t in state) if cell == "lstm" else state[0]  # [batch, hidden]
    outputs = []
    for t in range(x.shape[1]):
        state = step(x[:, t], state, *weights)
        outputs.append(state[0] if cell == "lstm" else state)  # h [batch, hidden]
    new = tuple(t.unsqueeze(0) for t in state) if cell == "lstm" else state.unsqueeze(0)  # [1, batch, hidden]
    return torch.stack(outputs, dim=1), new  # [batch, time, hidden]


def locked_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence of x [batch, time,
    features], the same at every time step, so a dropped unit stays dropped across the window."""
    if p == 0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # [batch, 1, features]
    return x * mask


def full_precision(tensor: torch.Tensor):
    """No autocast: the adaptive softmax mixes dtypes in place, and its layers are small."""
    return torch.autocast(tensor.device.type, enabled=False)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (the tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())
