"""Measuring a model: perplexity per token and per word, bits per character, keyboard metrics.

evaluation (`lm eval`: the loss over a text, with the cache, n-gram and dynamic evaluation),
keyboard (the suggestion strip's metrics), fast_keyboard (the same simulation, batched).

May import: lm.suggest, lm.checkpoint, lm.mix, lm.model, lm.data, lm.errors, lm._util.
"""

from importlib import import_module


def __getattr__(name: str):
    """`lm.evaluate.MODULE` after a plain `import lm.evaluate`: the module is imported when first used."""
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
