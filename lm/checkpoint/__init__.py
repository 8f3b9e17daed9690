"""The checkpoint folder: what is saved, how it is written atomically, how it is read.

store (the folder's files, atomic saves, config.json), report (curves and `lm info`'s summary).

May import: lm.model, lm.data, lm.mix, lm.errors, lm._util.
"""

from importlib import import_module


def __getattr__(name: str):
    """`lm.checkpoint.MODULE` after a plain `import lm.checkpoint`: the module is imported when first used."""
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
