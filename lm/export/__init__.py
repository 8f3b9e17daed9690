"""Export to ONNX, and the torch-free runtime shipped with an export.

onnx (the graph and its manifest), runtime (runs an export with onnxruntime and numpy alone;
copied into each export, so it imports nothing from lm).

May import: lm.checkpoint, lm.model, lm.errors, lm._util.
"""

from .._util import submodule_getter

__getattr__ = submodule_getter(__name__)
