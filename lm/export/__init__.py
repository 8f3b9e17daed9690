"""Export to ONNX: a checkpoint for inference without the PyTorch weights, and its runtime.

onnx (the graph, the manifest, the folder), engine_zip (the lm package as the zip each export
carries), runtime (copied into each export: puts that zip on sys.path and runs lm's engine over
the graph, with neither torch nor lm installed), web and web_onnxruntime (lm export --web).

May import: lm.backend, lm.checkpoint, lm.data, lm.mix, lm.model, lm.suggest, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
