"""The step interface over ONNX Runtime: the graph built from a checkpoint (graph.py), or an export's.

    backend = OnnxBackend.from_checkpoint("checkpoints/demo", config, int8=True)
    logits, state = backend.run(ids, None)          # ids [batch, time] -> logits [batch, time, vocab]

No torch: onnxruntime and numpy at inference, onnx and safetensors only when a graph is built.
The state is a tuple of numpy arrays, (h, c) for an LSTM and (h,) otherwise, each
[layers, batch, hidden].
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError
from .base import Backend
from .graph import LOGITS_FROM

DEFAULT_THREADS = 1  # one stream's step is a few small products: a second thread buys little and takes a core
LAST_POSITION = np.array([-1], np.int64)  # logits_from: the output layer reads the last position alone


def import_onnxruntime():
    """onnxruntime, or a one-line ConfigError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("the onnx backend needs onnxruntime — pip install 'lm[runtime]', or use the torch "
                          "backend (--backend torch)") from None
    return onnxruntime


def make_session(graph: Path | bytes, threads: int = DEFAULT_THREADS):
    """An ONNX Runtime CPU session for one stream of work.

    `threads` intra-op threads, none spinning while it waits for work: a spinning thread takes a
    core from everything else on the machine. Measured per step (10k-word 2x512 LSTM, int8, this
    two-core machine with other jobs on it): 1 thread 0.36 ms p50 spinning or not; 2 threads 0.43 ms
    without spinning, 0.33 ms spinning at the cost of a core kept busy.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: loading notes that logits_from has a default (graph.py)
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxBackend(Backend):
    """A model's step function on ONNX Runtime (see lm/backend/base.py for the calls)."""

    name = "onnx"

    def __init__(self, graph: Path | bytes, int8: bool = False, threads: int = DEFAULT_THREADS):
        """Args:
            graph: an ONNX file's path or its bytes, with graph.py's inputs and outputs (an `lm
                export` graph without `features` runs `run` alone).
            int8: whether its weights are int8 (for whoever shows it).
        """
        self.session = make_session(graph, threads)
        self.int8 = int8
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.state_inputs = [name for name in ("h", "c") if name in inputs]
        self.state_outputs = [name + "_out" for name in self.state_inputs]
        self.layers, _, self.hidden = inputs["h"]
        self.vocab_size = self.session.get_outputs()[outputs.index("logits")].shape[-1]
        self.reads_last_alone = LOGITS_FROM in {i.name for i in self.session.get_overridable_initializers()}
        self._run_outputs = ["logits", *self.state_outputs]
        self._all_outputs = [*self._run_outputs, "features"]

    @classmethod
    def from_checkpoint(cls, folder: str | Path, config, int8: bool = False, threads: int = DEFAULT_THREADS):
        """The checkpoint's graph, built on first use and cached in the folder (graph_cache.py).

        Args:
            config: the checkpoint's lm.model.config.ModelConfig.
        """
        import_onnxruntime()  # before a build that would need it anyway
        from .graph_cache import cached_graph

        backend = cls(cached_graph(folder, config, int8), int8=int8, threads=threads)
        backend.config = config
        return backend

    @classmethod
    def from_export(cls, folder: str | Path, threads: int = DEFAULT_THREADS):
        """An `lm export` folder's graph, as its manifest.json describes it."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            graph, weights = folder / manifest["graph"]["file"], manifest["model"]["weights"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{folder} is not a readable lm export ({e}) — pass the folder `lm export` wrote") from None
        return cls(graph, int8=weights == "int8", threads=threads)

    def run(self, ids: np.ndarray, state) -> tuple[np.ndarray, tuple]:
        logits, *state = self.session.run(self._run_outputs, self._feed(ids, state))
        return logits, tuple(state)  # logits [batch, time, vocab]

    def run_features(self, ids: np.ndarray, state, last_only: bool = False):
        feed = self._feed(ids, state)
        if last_only and self.reads_last_alone:
            feed[LOGITS_FROM] = LAST_POSITION
        logits, *state, features = self.session.run(self._all_outputs, feed)
        return (logits[:, -1] if last_only else logits), features, tuple(state)

    def select(self, state, rows: np.ndarray) -> tuple | None:
        return None if state is None else tuple(s[:, rows] for s in state)

    def _feed(self, ids: np.ndarray, state) -> dict[str, np.ndarray]:
        ids = np.asarray(ids, np.int64)  # [batch, time]
        if state is None:
            state = [np.zeros((self.layers, ids.shape[0], self.hidden), np.float32) for _ in self.state_inputs]
        return {"ids": ids, **dict(zip(self.state_inputs, state))}
