"""The model stage: embedding -> stacked RNN -> tied output layer, and the one contract.

Every other stage calls `model(ids, state) -> (logits, state)`. Beside the network live the
loss over a text (likelihood), the int8 conversion and the state helpers.

May import: lm.errors, lm._util. Nothing else of the project, like nanoGPT's model.py.
"""

from importlib import import_module


def __getattr__(name: str):
    """`lm.model.MODULE` after a plain `import lm.model`: the module is imported when first used."""
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
