"""The one loader: a checkpoint folder -> a `Predictor`, ready for inference.

Every face that predicts (lm suggest, the REPL, lm serve, lm eval, bench/) loads through
`load`, so the folder's config.json is read once and the backend that steps the model, the
tokenizer, the lexicon, the continuous cache's settings and the n-gram always come back together.

    p = lm.load("checkpoints/demo", int8=True)       # ONNX Runtime on a CPU where it is installed
    logits, state = p.backend.run(ids, None)         # numpy in, numpy out
    strip = lm.Suggester.load(p).suggest("the clouds are in the")

On the ONNX Runtime backend nothing here imports torch: the graph is built from the weights
(lm/backend/graph.py) and cached in the folder. `p.model`, the PyTorch model, is loaded when
first asked for (evaluation and dynamic evaluation train or score with it).

An `lm export` folder loads too, on ONNX Runtime: its graph in place of the weights, with the
checkpoint's config.json, tokenizer, lexicon and n-gram beside it (its runtime.py does this).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..backend.base import Backend
from ..backend.choose import choose_backend
from ..data.lexicon import Lexicon
from ..data.tokenizer import Tokenizer
from ..errors import CheckpointError, ConfigError
from ..mix.cache import CacheConfig
from ..mix.ngram import FILE as NGRAM_FILE, Ngram, NgramConfig
from .folder import is_export, read_export_manifest, read_model_config, read_parts, resolve_checkpoint


@dataclass
class Predictor:
    """A loaded checkpoint and what inference mixes in over the model's log-probabilities."""

    path: Path
    backend: Backend  # steps the model: ONNX Runtime or PyTorch (lm.backend)
    tokenizer: Tokenizer
    config: dict  # config.json as read at load time
    lexicon: Lexicon | None = None  # the words suggestions may offer (the training text's + the user's)
    cache: CacheConfig | None = None  # the continuous cache tuned for the checkpoint; None: off or not asked for
    ngram: Ngram | None = None  # a word model's n-gram, when it has one and it was asked for
    int8: bool = False
    _model: object = field(default=None, repr=False)

    @property
    def model(self):
        """The PyTorch model: the torch backend's, or loaded now on the CPU (int8 when the predictor is)."""
        if self._model is None:
            if is_export(self.path):
                raise ConfigError(f"{self.path} is an lm export: it has no PyTorch weights to score or train — "
                                  "use the checkpoint it was exported from")
            self._model = getattr(self.backend, "model", None)
            if self._model is None:
                self._model, _ = _torch_model(self.path, read_model_config(self.config, self.path), "cpu", self.int8)
        return self._model

    @property
    def device(self) -> str:
        """Where the model runs: "cpu", or the torch backend's device ("cuda:0")."""
        return str(getattr(self.backend, "device", "cpu"))

    @property
    def metrics(self) -> dict:
        return self.config.get("metrics", {})

    def to_int8(self) -> "Predictor":
        """On the torch backend on the CPU, the same predictor with int8 weights (others are returned as they are)."""
        if self.int8 or self.backend.name != "torch" or self.device != "cpu":
            return self
        from ..backend.torch_backend import TorchBackend
        from ..model.int8 import quantize_int8

        model = quantize_int8(self.model)
        return dataclasses.replace(self, backend=TorchBackend(model, int8=True), int8=True, _model=model)


def load(path: str | Path | None = None, device: str = "cpu", int8: bool = False, cache: bool = True,
         ngram: bool = True, words: list[str] = (), backend: str = "auto") -> Predictor:
    """Load a checkpoint folder (the newest under checkpoints/ when `path` is None) for inference.

    An `lm export` folder loads on ONNX Runtime, with the weights it was exported with (`int8`
    does not change them).

    Args:
        device: "cpu", "cuda", or "auto" (a CUDA GPU when there is one, else the CPU).
        int8: on the CPU, run int8 weights (several times faster per token, a slightly
            different distribution: see bench/quantize_quality.py); a GPU runs the trained weights.
        cache: use the continuous cache tuned for the checkpoint, when it has one.
        ngram: mix in a word model's n-gram, when it has one.
        words: a user dictionary added to the checkpoint's lexicon.
        backend: "auto" (ONNX Runtime on the CPU when it is installed, else PyTorch), "torch" or "onnx".

    Raises:
        CheckpointError: the folder is missing or damaged (NoCheckpointError: none under checkpoints/).
        ConfigError: an unknown backend or device, or one that cannot run here.
    """
    folder = resolve_checkpoint(path)
    config, model_config, tokenizer = read_parts(folder)
    if is_export(folder):
        stepper = _export_backend(folder, backend, device, model_config)
    elif choose_backend(backend, str(device)) == "onnx":
        from ..backend.onnx_backend import OnnxBackend

        stepper = OnnxBackend.from_checkpoint(folder, model_config, int8)
    else:
        from ..backend.torch_backend import TorchBackend

        stepper = TorchBackend(*_torch_model(folder, model_config, device, int8))
    return Predictor(folder, stepper, tokenizer, config, _lexicon(folder, words),
                     _cache(config) if cache else None, _ngram(folder, config) if ngram else None, stepper.int8)


def _export_backend(folder: Path, backend: str, device, model_config) -> Backend:
    """An export's graph on ONNX Runtime: an export has no PyTorch weights for torch or a GPU."""
    read_export_manifest(folder)
    choose_backend(backend, "cpu")  # an unknown name is refused as for a checkpoint
    if backend == "torch" or str(device).startswith("cuda"):
        raise ConfigError(f"{folder} is an lm export: an ONNX graph, without the PyTorch weights that PyTorch or a GPU "
                          "would run — use ONNX Runtime on the CPU (--backend onnx), or the checkpoint it was exported from")
    from ..backend.onnx_backend import OnnxBackend

    stepper = OnnxBackend.from_export(folder)
    if stepper.vocab_size != model_config.vocab_size:
        raise CheckpointError(f"{folder}: the graph has {stepper.vocab_size} tokens but config.json says "
                              f"{model_config.vocab_size} — the files do not belong together; export the checkpoint again")
    stepper.config = model_config
    return stepper


def _torch_model(folder: Path, model_config, device, int8: bool):
    """The checkpoint's PyTorch model on `device`, and whether it is int8: on the CPU when asked
    (a GPU runs the trained weights)."""
    from .._util import pick_device
    from ..model.int8 import quantize_int8
    from .store import load_weights

    device = pick_device(device) if isinstance(device, str) else device
    model = load_weights(folder, model_config, device)
    quantized = int8 and device.type == "cpu"
    return (quantize_int8(model) if quantized else model), quantized


def _lexicon(folder: Path, words: list[str]) -> Lexicon | None:
    """The lexicon saved in the folder plus a user's words; None when the folder has none."""
    lexicon = Lexicon.load(folder)
    if lexicon is not None and words:
        lexicon.add(list(words))
    return lexicon


def _cache(config: dict) -> CacheConfig:
    """The continuous cache settings config.json holds; off (weight 0) when it has none."""
    return CacheConfig.from_dict(config.get("cache") or {})


def _ngram(folder: Path, config: dict) -> Ngram | None:
    """The n-gram config.json says to mix in, or None when it has none."""
    settings = NgramConfig.from_dict(config.get("ngram") or {})
    if settings.weight <= 0 or not (folder / NGRAM_FILE).exists():
        return None
    return Ngram.load(folder, settings.weight)
