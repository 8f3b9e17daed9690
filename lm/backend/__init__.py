"""Inference backends: the model's step function on PyTorch or on ONNX Runtime.

Every inference face (the suggestion engine, the sampler, the REPL, the server) calls a
`Backend` (base.py): token ids in, numpy logits and an opaque state out, so the engine above
it is numpy-level and runs the same on either. torch_backend wraps a LanguageModel (GPU, or
the CPU when asked); onnx_backend runs an ONNX graph built from the checkpoint's weights
(graph.py, no torch needed) and kept in the checkpoint folder (graph_cache.py). choose.py
picks one.

May import: lm.model (torch_backend only), lm.data, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
