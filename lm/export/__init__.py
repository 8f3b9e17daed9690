"""Export to ONNX, and the torch-free runtime shipped with an export.

onnx (the graph and its manifest), runtime (runs an export with onnxruntime and numpy alone;
copied into each export, so it imports nothing from lm).

May import: lm.checkpoint, lm.model, lm.errors, lm._util.
"""

from importlib import import_module


def __getattr__(name: str):
    """`lm.export.MODULE` after a plain `import lm.export`: the module is imported when first used."""
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
