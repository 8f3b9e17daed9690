"""The language model: embedding -> stacked RNN -> tied output layer.

Every other stage talks to it through one call, `model(ids, state) -> (logits, state)`;
`read_ids` below reads a text through that call. This module imports nothing else from the
project but its errors and config helpers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .config import ADAPTIVE_DIV, ModelConfig, expected_shapes

CELL_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # config.CELLS, as torch modules
STEP_CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}
# The fused kernels behind nn.LSTM / nn.GRU / nn.RNN, called with a weight list of our own.
FUSED_CELLS = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}

# Inference over at most this many time steps runs the cells one step at a time: on CPU a
# whole nn.LSTM call costs milliseconds of set-up (oneDNN), a cell step a tenth of that.
STEP_LOOP_MAX_TIME = 4

READ_LOGITS_BUDGET = 2**22  # floats of [1, time, vocab] logits one call of read_ids may build (16 MB)

# LSTM state is a pair (h, c); GRU and RNN state is h alone. Each is [layers, batch, hidden],
# even with batch_first=True.
State = "torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None"


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

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.config.softmax == "full":
            nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: torch.Tensor, state=None):
        """Raw next-token logits for every position, and the state after the last one.

        Args:
            ids: [batch, time] token ids.
            state: what the cell carries, or None for zeros.
        Returns:
            logits [batch, time, vocab] (log-probabilities with the adaptive softmax) and the new state.
        """
        out, _, state = self._features(ids, state)  # [batch, time, emb]
        return self.output(out), state

    def features(self, ids: torch.Tensor, state=None):
        """What the output layer reads at every position [batch, time, emb], and the new state.

        `output(features(ids, state)[0])` equals `forward`'s logits; the continuous cache
        (lm/mix/cache.py) keeps these vectors as its memory of the text.
        """
        out, _, state = self._features(ids, state)
        return out, state

    def output(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [batch, time, vocab] from features (log-probabilities with the adaptive softmax)."""
        if self.config.softmax == "adaptive":
            with _full_precision(features):
                return self.adaptive.log_prob(features.flatten(0, 1).float()).view(*features.shape[:2], -1)
        return self.decoder(features)  # [batch, time, vocab]

    def token_nll(self, ids: torch.Tensor, targets: torch.Tensor, state=None):
        """Next-token negative log-likelihood of each of `targets` after `ids`, and the new state.

        Args:
            ids, targets: [batch, time] token ids (targets are ids shifted by one).
        Returns:
            nll [batch, time] in nats (fp32) and the new state. The same numbers as
            cross-entropy over `self(ids, state)`'s logits; with the adaptive softmax they are
            computed without the full [batch, time, vocab] distribution.
        """
        if self.config.softmax == "adaptive":
            nll, _, state = self._nll(ids, targets, state)
            return nll, state
        logits, state = self(ids, state)  # through forward, which wrappers of the model may watch
        return _cross_entropy(logits, targets), state

    def loss(self, ids: torch.Tensor, targets: torch.Tensor, state=None):
        """Mean next-token cross-entropy of `targets` [batch, time] after `ids`, and the new state."""
        nll, state = self.token_nll(ids, targets, state)
        return nll.mean(), state

    def training_loss(self, ids: torch.Tensor, targets: torch.Tensor, state=None):
        """What training minimizes and what it reports: (objective, mean cross-entropy, new state).

        The objective adds to the cross-entropy activation regularization, ar * mean(h^2) of
        the last layer's dropped-out output, and temporal activation regularization,
        tar * mean((h_t - h_{t-1})^2) of that output before dropout (Merity et al. 2017, 4.6):
        they keep the activations small and slowly changing.
        """
        nll, (raw, dropped), state = self._nll(ids, targets, state)
        loss = nll.mean()
        objective = loss
        if self.config.ar:
            objective = objective + self.config.ar * dropped.float().pow(2).mean()
        if self.config.tar:
            objective = objective + self.config.tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        return objective, loss, state

    def _nll(self, ids: torch.Tensor, targets: torch.Tensor, state):
        """nll [batch, time], the last layer's output before and after dropout, and the new state."""
        out, activations, state = self._features(ids, state)
        if self.config.softmax == "adaptive":
            with _full_precision(out):
                logp = self.adaptive(out.flatten(0, 1).float(), targets.flatten()).output  # [batch * time]
            return -logp.view(targets.shape), activations, state
        return _cross_entropy(self.decoder(out), targets), activations, state

    def _features(self, ids: torch.Tensor, state):
        """What the output layer reads [batch, time, emb]; the last layer's output before and
        after its dropout, ([batch, time, hidden], [batch, time, hidden]); the new state."""
        x = self._drop(self._embed(ids))  # [batch, time, emb]
        if self.training and self._needs_layer_loop():
            raw, state = self._layer_loop(x, state)
        elif not self.training and ids.shape[1] <= STEP_LOOP_MAX_TIME and self._has_plain_weights():
            raw, state = self._step_loop(x, state)
        else:
            raw, state = self.rnn(x, state)  # [batch, time, hidden]
        dropped = self._drop(raw)
        out = self.projection(dropped) if self.projection is not None else dropped  # [batch, time, emb]
        return out, (raw, dropped), state

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
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

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout at --dropout: a mask per element, or with locked_dropout in training one per sequence."""
        if self.training and self.config.locked_dropout:
            return locked_dropout(x, self.config.dropout)
        return self.dropout(x)

    def _needs_layer_loop(self) -> bool:
        """nn.LSTM can neither mask its recurrent weights nor share a dropout mask across time."""
        locked_between_layers = self.config.locked_dropout and self.config.layers > 1 and self.config.dropout > 0
        return (locked_between_layers or self.config.weight_drop > 0) and self._has_plain_weights()

    def _layer_loop(self, x: torch.Tensor, state):
        """Training through the fused kernel, one layer at a time: weight drop and locked dropout
        between the layers; the same maths as self.rnn when both are off."""
        if state is None:
            state = self.init_state(x.shape[0])
        lstm = self.config.cell == "lstm"
        h, c = (state[0], state[1]) if lstm else (state, None)  # [layers, batch, hidden]
        fused = FUSED_CELLS[self.config.cell]
        new_h, new_c = [], []
        for layer in range(self.config.layers):
            if layer > 0:
                x = self._drop(x)  # between layers, as nn.LSTM's own dropout
            w_ih, w_hh, b_ih, b_hh = (getattr(self.rnn, f"{name}_l{layer}")
                                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            # Weight drop (Merity et al. 2017): DropConnect on the hidden-to-hidden matrix, one
            # mask per window for every step, so the whole window is still one fused kernel call.
            # The parameter itself stays unmasked: inference and checkpoints never see a mask.
            w_hh = F.dropout(w_hh, self.config.weight_drop, training=True)
            weights = [w_ih, w_hh, b_ih, b_hh]
            # Arguments: has_biases, num_layers, dropout, train, bidirectional, batch_first.
            if lstm:
                x, h_l, c_l = fused(x, (h[layer: layer + 1], c[layer: layer + 1]), weights, True, 1, 0.0, True, False, True)
                new_c.append(c_l)
            else:
                x, h_l = fused(x, h[layer: layer + 1], weights, True, 1, 0.0, True, False, True)
            new_h.append(h_l)  # [1, batch, hidden]
        h = torch.cat(new_h)  # [layers, batch, hidden]
        return x, ((h, torch.cat(new_c)) if lstm else h)

    def _has_plain_weights(self) -> bool:
        """False once the RNN has been swapped for a quantized or compiled one."""
        return isinstance(getattr(self.rnn, "weight_ih_l0", None), torch.Tensor)

    def _step_loop(self, x: torch.Tensor, state):
        """The stacked cells one time step at a time: same maths as self.rnn, less overhead."""
        batch, time, _ = x.shape
        if state is None:
            state = self.init_state(batch)
        lstm = self.config.cell == "lstm"
        h = list(state[0].unbind(0)) if lstm else list(state.unbind(0))
        c = list(state[1].unbind(0)) if lstm else None
        step = STEP_CELLS[self.config.cell]
        weights = [
            [getattr(self.rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for layer in range(self.config.layers)
        ]
        outputs = []
        for t in range(time):
            layer_input = x[:, t]
            for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
                if lstm:
                    h[layer], c[layer] = step(layer_input, (h[layer], c[layer]), w_ih, w_hh, b_ih, b_hh)
                else:
                    h[layer] = step(layer_input, h[layer], w_ih, w_hh, b_ih, b_hh)
                layer_input = h[layer]  # no inter-layer dropout: this path is inference only
            outputs.append(layer_input)
        out = torch.stack(outputs, dim=1)  # [batch, time, hidden]
        new_h = torch.stack(h)
        return out, ((new_h, torch.stack(c)) if lstm else new_h)

    @staticmethod
    def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Shape of every weight a config implies (lm.model.config.expected_shapes)."""
        return expected_shapes(config)

    def init_state(self, batch: int):
        """Zero state for `batch` streams, on the weights' device and dtype."""
        weight = self.embedding.weight
        shape = (self.config.layers, batch, self.config.hidden)
        h = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        if self.config.cell == "lstm":
            return (h, torch.zeros_like(h))
        return h


def locked_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence of x [batch, time,
    features], the same at every time step, so a dropped unit stays dropped across the window."""
    if p == 0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # [batch, 1, features]
    return x * mask


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nll [batch, time] of targets under logits [batch, time, vocab], in fp32."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view(targets.shape)


def _full_precision(tensor: torch.Tensor):
    """No autocast: the adaptive softmax mixes dtypes in place, and its layers are small."""
    return torch.autocast(tensor.device.type, enabled=False)


def quantize_int8(model: LanguageModel) -> LanguageModel:
    """int8 dynamic quantization of the RNN, projection and output layer, for CPU inference.

    Weights become int8 (a quarter of the memory traffic that bounds one-stream decoding);
    activations stay float and are quantized on the fly. The embedding stays float, so
    the tied matrix is stored twice. Inference only: the result cannot be trained or saved.
    """
    import warnings

    from torch.ao.quantization import quantize_dynamic

    if model.embedding.weight.device.type != "cpu":
        raise ConfigError("int8 weights run on the CPU only — load the model with device='cpu', or use --fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao points users at torchao; the eager API still works
        quantized = quantize_dynamic(model.eval(), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8, inplace=False)
    quantized.config = model.config
    return quantized


def read_chunk(vocab_size: int) -> int:
    """Tokens per model call when reading a text: keeps the logits within READ_LOGITS_BUDGET."""
    return max(16, min(2048, READ_LOGITS_BUDGET // vocab_size))


@torch.inference_mode()
def read_ids(model, ids: list[int], state, chunk: int):
    """Advance the state over token ids, `chunk` tokens per model call (see read_chunk).

    Only the last position's logits are kept, so a text of megabytes costs time, not memory.
    Returns (state, [vocab] next-token logits as fp32, or None when `ids` is empty).
    """
    device = next(model.parameters()).device
    logits = None
    for at in range(0, len(ids), chunk):
        x = torch.tensor([ids[at: at + chunk]], dtype=torch.long, device=device)  # [1, time]
        out, state = model(x, state)  # [1, time, vocab]
        logits = out[0, -1].to(torch.float32, copy=True)  # a copy: a view would keep the chunk's logits alive
    return state, logits


@torch.inference_mode()
def read_features(model, ids: list[int], state, chunk: int):
    """Like `read_ids`, also keeping what the output layer read at every position.

    Returns (state, features [len(ids), emb] fp32, [vocab] next-token logits fp32); ids must not be empty.
    """
    device = next(model.parameters()).device
    features = []
    for at in range(0, len(ids), chunk):
        x = torch.tensor([ids[at: at + chunk]], dtype=torch.long, device=device)  # [1, time]
        h, state = model.features(x, state)  # [1, time, emb]
        features.append(h[0].float())
    logits = model.output(h[:, -1:])[0, -1].float()  # [vocab]
    return state, torch.cat(features), logits


def map_state(state, fn):
    """Apply `fn` to every tensor of a state (tensor, tuple of tensors or None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return tuple(map_state(s, fn) for s in state)


def detach_state(state):
    """Cut the graph at a window boundary (truncated BPTT) while keeping the values."""
    return map_state(state, lambda t: t.detach())


def select_state(state, index: torch.Tensor):
    """Pick streams (dim 1 of every tensor) from a state, e.g. to branch a beam."""
    return map_state(state, lambda t: t.index_select(1, index))


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (the tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())
