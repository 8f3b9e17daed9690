"""The model's step function as an ONNX graph, built from a checkpoint's weights with numpy (no torch).

    inputs   ids          [batch, time] int64
             h, c         [layers, batch, hidden]    the state (c for an LSTM only); zeros to start
             logits_from  [1] int64, optional        the first position the output layer reads:
                                                     0 (the default) every position, -1 the last alone
    outputs  logits       [batch, positions, vocab]  raw logits (log-probabilities with the adaptive softmax)
             h_out, c_out [layers, batch, hidden]    the state after the last position
             features     [batch, time, emb]         what the output layer reads (after the projection)

ONNX Runtime runs every node of a graph whatever outputs a call asks for (measured: its profile
lists the output layer's nodes on a call that fetches only the state), so reading a text would
pay for `time` positions of a word model's output layer to keep one. `logits_from` = -1 slices
the features before the output layer instead. It is an input with a default (an initializer of
the same name), which ONNX Runtime notes in a warning when it loads the graph: the sessions that
use it set the log level to errors, and `logits_from=False` builds a graph without it.

Inside: the ids are turned time-major ([time, batch], the only layout ONNX Runtime's recurrent
kernels take), one ONNX LSTM / GRU / RNN node per layer (ONNX's are single-layer), the
projection, then the output layer. The tied [vocab, emb] matrix is one initializer: the
embedding's Gather reads it, and the output layer reads it through a Transpose that ONNX
Runtime folds into a constant when it loads the graph (so the file holds it once).

int8 (`int8=True`): symmetric int8 weights, activations quantized on the fly. LSTM layers become
com.microsoft DynamicQuantizeLSTM with one scale per gate row (ONNX Runtime has no int8 GRU or
RNN: those stay float); every matrix product becomes DynamicQuantizeMatMul with one scale per
matrix, and the embedding gathers rows of the same int8 matrix and dequantizes them, so the tied
matrix is still stored once. Measured on the 2x512 LSTMs of checkpoints/ (one stream, one thread):
as fast per step as the graph ONNX Runtime's quantize_dynamic made of the traced model (one scale
per matrix), with log-probabilities at most 0.37 from the fp32 model where that graph's reached
0.63 (char model; 0.36 and 0.34 on the 33k-word one), thanks to the LSTM's per-row scales. Per-row
scales for the output matrices too brought the word model to 0.23 but cost 10-30 % per step:
ONNX Runtime's int8 MatMul is slower with a scale per column.
"""
from __future__ import annotations

import numpy as np

from ..model.config import GATES, ModelConfig

OPSET = 17  # ONNX Runtime 1.14+ (2023) on every platform, mobile builds included
IR_VERSION = 8  # the IR of opset 17: loads in every ONNX Runtime that runs the opset
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's own operators (the int8 LSTM and MatMul)
# PyTorch's gate blocks in ONNX's order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h; RNN one block.
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
INT8_CELLS = ("lstm",)  # the cells ONNX Runtime has an int8 kernel for
TIED_NAMES = ("embedding.weight", "decoder.weight")  # a tied matrix is saved under one of these
LOGITS_FROM = "logits_from"  # the optional input: the first position the output layer reads (default 0)
LAST = np.iinfo(np.int64).max  # a Slice's end: the end of the axis


def state_names(cell: str) -> list[tuple[str, str]]:
    """(input name, output name) of each state tensor the graph carries."""
    return [("h", "h_out"), ("c", "c_out")] if cell == "lstm" else [("h", "h_out")]


def output_names(cell: str) -> list[str]:
    """Every output of the graph, in order: the logits and the state first, as `lm export` always wrote them."""
    return ["logits", *(o for _, o in state_names(cell)), "features"]


def build_graph(config: ModelConfig, weights: dict[str, np.ndarray], int8: bool = False, logits_from: bool = True):
    """The step graph of a model as an onnx.ModelProto.

    Args:
        config: the checkpoint's ModelConfig (resolved here).
        weights: name -> array, as model.safetensors holds them (a tied matrix under one name).
        int8: int8 weights (see the module's docstring).
        logits_from: give the graph its optional `logits_from` input (without it, every position's logits).
    """
    from onnx import TensorProto, helper

    config = config.resolved()
    graph = _Graph(weights, int8)
    ids = graph.node("Transpose", ["ids"], perm=[1, 0])  # [time, batch]
    x = graph.embed(ids)  # [time, batch, emb]
    x = _recur(graph, config, x)  # [time, batch, hidden]
    if config.projection:
        x = graph.linear(x, "projection.weight")  # [time, batch, emb]
    features = graph.node("Transpose", [x], ["features"], perm=[1, 0, 2])  # [batch, time, emb]
    if logits_from:
        graph.constant(LOGITS_FROM, np.array([0], np.int64))  # its default: every position
        features = graph.node("Slice", [features, LOGITS_FROM, graph.int64([LAST]), graph.int64([1])])  # [batch, positions, emb]
    _output(graph, config, features, "logits")  # [batch, positions, vocab]

    batch_time = ["batch", "time"]
    state = [config.layers, "batch", config.hidden]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, batch_time)]
    inputs += [helper.make_tensor_value_info(i, TensorProto.FLOAT, state) for i, _ in state_names(config.cell)]
    if logits_from:
        inputs.append(helper.make_tensor_value_info(LOGITS_FROM, TensorProto.INT64, [1]))
    positions = "positions" if logits_from else "time"
    shapes = {"logits": ["batch", positions, config.vocab_size], "features": [*batch_time, config.emb],
              **{o: state for _, o in state_names(config.cell)}}
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name]) for name in output_names(config.cell)]
    body = helper.make_graph(graph.nodes, "lm_step", inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(MS_DOMAIN, 1)] if int8 else [])
    return helper.make_model(body, opset_imports=opsets, ir_version=IR_VERSION, producer_name="lm")


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per row: (int8 [rows, cols], float32 scales [rows]); row ≈ int8 * scale."""
    scale = np.abs(matrix).max(axis=1) / 127.0
    scale[scale == 0] = 1.0  # an all-zero row: any scale gives zeros
    quantized = np.clip(np.rint(matrix / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale.astype(np.float32)


def quantize_matrix(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale for the whole matrix: (int8 array, float32 scalar scale)."""
    quantized, scale = quantize_rows(matrix.reshape(1, -1))
    return quantized.reshape(matrix.shape), scale.reshape(())


class _Graph:
    """Nodes and initializers as they are added; each weight matrix is stored once, however often it is read."""

    def __init__(self, weights: dict[str, np.ndarray], int8: bool):
        self.weights, self.int8 = weights, int8
        self.nodes, self.initializers, self._names, self._done = [], [], 0, {}

    def node(self, op: str, inputs: list[str], outputs: list[str] | int = 1, domain: str = "", **attrs):
        """Add a node; returns its output name (or names, when it has several)."""
        from onnx import helper

        if isinstance(outputs, int):
            outputs = [self._name(op) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self._name(op + "_node"), domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def int64(self, values: list[int]) -> str:
        """A constant int64 vector (axes, slice bounds), added once per value."""
        name = "int64_" + "_".join(str(v) for v in values).replace("-", "m")
        return self.once(name, lambda: self.constant(name, np.array(values, np.int64)))

    def _name(self, op: str) -> str:
        self._names += 1
        return f"{op.lower()}_{self._names}"

    def once(self, key: str, make):
        if key not in self._done:
            self._done[key] = make()
        return self._done[key]

    def matrix(self, name: str) -> np.ndarray:
        """A weight [out, in] as float32; the tied matrix under whichever name the file saved it."""
        if name in TIED_NAMES:
            name = next(n for n in TIED_NAMES if n in self.weights)
        return np.asarray(self.weights[name], np.float32)

    def stored(self, name: str) -> tuple[str, str | None]:
        """The initializer of weight `name` [out, in] and, in int8, of its scale."""
        if name in TIED_NAMES:
            name = "embedding.weight"  # one initializer for the embedding and the tied output layer

        def make():
            if not self.int8:
                return self.constant(name, self.matrix(name)), None
            quantized, scale = quantize_matrix(self.matrix(name))
            return self.constant(name + ".int8", quantized), self.constant(name + ".scale", scale)
        return self.once("stored:" + name, make)

    def transposed(self, name: str) -> str:
        """The weight as [in, out], for a MatMul: a Transpose node that ONNX Runtime folds at load."""
        return self.once("transposed:" + name, lambda: self.node("Transpose", [self.stored(name)[0]], perm=[1, 0]))

    def linear(self, x: str, name: str, bias: str | None = None, out: list[str] | int = 1) -> str:
        """x [..., in] -> x @ weight.T (+ bias) [..., out]."""
        if self.int8:
            scale = self.stored(name)[1]
            inputs = [x, self.transposed(name), scale, "", *([bias] if bias else [])]
            return self.node("DynamicQuantizeMatMul", inputs, out, domain=MS_DOMAIN)
        if bias is None:
            return self.node("MatMul", [x, self.transposed(name)], out)
        return self.node("Add", [self.node("MatMul", [x, self.transposed(name)]), bias], out)

    def embed(self, ids: str) -> str:
        """The embedding rows of ids [time, batch] -> [time, batch, emb]."""
        table, scale = self.stored("embedding.weight")
        rows = self.node("Gather", [table, ids])
        if not self.int8:
            return rows
        zero = self.constant("embedding.zero", np.zeros((), np.int8))
        return self.node("DequantizeLinear", [rows, scale, zero])


def _recur(graph: _Graph, config: ModelConfig, x: str) -> str:
    """The stacked cells over x [time, batch, emb], one ONNX node per layer; names the state outputs."""
    names = state_names(config.cell)
    per_layer = [graph.node("Split", [i], config.layers, axis=0) if config.layers > 1 else i for i, _ in names]
    per_layer = [[p] if isinstance(p, str) else p for p in per_layer]  # [state][layer]: [1, batch, hidden]
    finals = [[] for _ in names]
    for layer in range(config.layers):
        y, *state = _layer(graph, config, layer, x, [p[layer] for p in per_layer])
        x = graph.node("Squeeze", [y, graph.int64([1])])  # [time, batch, hidden]
        for final, s in zip(finals, state):
            final.append(s)
    for (_, output), final in zip(names, finals):
        graph.node("Concat", final, [output], axis=0)  # [layers, batch, hidden]
    return x  # [time, batch, hidden]


def _layer(graph: _Graph, config: ModelConfig, layer: int, x: str, state: list[str]) -> list[str]:
    """One recurrent layer: (Y [time, 1, batch, hidden], Y_h[, Y_c])."""
    cell = config.cell
    w_ih, w_hh, b_ih, b_hh = (_gates(graph.weights[f"rnn.{name}_l{layer}"], cell)
                              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    prefix = f"rnn.l{layer}"
    bias = graph.constant(prefix + ".B", np.concatenate([b_ih, b_hh])[None])  # [1, 2 * gates * hidden]: ONNX's Wb, Rb
    attrs = {"hidden_size": config.hidden, **({"linear_before_reset": 1} if cell == "gru" else {})}
    outputs = 1 + len(state)
    if graph.int8 and cell in INT8_CELLS:
        w, w_scale, w_zero = _int8_gates(graph, prefix + ".W", w_ih)
        r, r_scale, r_zero = _int8_gates(graph, prefix + ".R", w_hh)
        inputs = [x, w, r, bias, "", *state, "", w_scale, w_zero, r_scale, r_zero]  # DynamicQuantizeLSTM's order
        return graph.node("DynamicQuantizeLSTM", inputs, outputs, domain=MS_DOMAIN, **attrs)
    weights = [graph.constant(f"{prefix}.{name}", m[None]) for name, m in (("W", w_ih), ("R", w_hh))]
    return graph.node(cell.upper(), [x, *weights, bias, "", *state], outputs, **attrs)


def _int8_gates(graph: _Graph, name: str, matrix: np.ndarray) -> list[str]:
    """A layer's matrix [gates * hidden, inputs] for DynamicQuantizeLSTM: int8 [1, inputs, gates * hidden]
    (transposed, as ONNX Runtime's kernel reads it), a scale per gate row [1, gates * hidden], zero points."""
    quantized, scale = quantize_rows(matrix)
    return [graph.constant(name + ".int8", np.ascontiguousarray(quantized.T)[None]),
            graph.constant(name + ".scale", scale[None]),
            graph.constant(name + ".zero", np.zeros((1, len(scale)), np.int8))]


def _gates(array: np.ndarray, cell: str) -> np.ndarray:
    """A PyTorch weight or bias [gates * hidden, ...] with its gate blocks in ONNX's order."""
    blocks = np.split(np.asarray(array, np.float32), GATES[cell], axis=0)
    return np.concatenate([blocks[i] for i in ONNX_GATE_ORDER[cell]], axis=0)


def _output(graph: _Graph, config: ModelConfig, x: str, out: str) -> str:
    """The output layer over x [..., emb] into `out` [..., vocab]: raw logits (full softmax) or
    the adaptive softmax's full log-probabilities."""
    if config.softmax == "full":
        bias = graph.constant("decoder.bias", np.asarray(graph.weights["decoder.bias"], np.float32))
        return graph.linear(x, "decoder.weight", bias, [out])
    # AdaptiveLogSoftmaxWithLoss.log_prob: the head's log-probabilities for the shortlist, and
    # each tail cluster's own log-softmax plus the head's log-probability of the cluster.
    head = graph.node("LogSoftmax", [graph.linear(x, "adaptive.head.weight")], axis=-1)  # [..., shortlist + clusters]
    short = config.cutoffs[0]
    parts = [_last_axis_slice(graph, head, 0, short)]
    for i in range(len(config.cutoffs)):
        tail = graph.linear(graph.linear(x, f"adaptive.tail.{i}.0.weight"), f"adaptive.tail.{i}.1.weight")
        parts.append(graph.node("Add", [graph.node("LogSoftmax", [tail], axis=-1),
                                        _last_axis_slice(graph, head, short + i, short + i + 1)]))
    return graph.node("Concat", parts, [out], axis=-1)  # [..., vocab]


def _last_axis_slice(graph: _Graph, x: str, start: int, end: int) -> str:
    return graph.node("Slice", [x, graph.int64([start]), graph.int64([end]), graph.int64([-1])])
