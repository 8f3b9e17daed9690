"""The inference engine: suggestions, generation and the REPL's commands.

engine (the suggester and the session that keeps state as text is typed), sampler
(generation), repl (the REPL's commands over a session). Every face (CLI, REPL, server,
keyboard simulation, export runtime) asks this package.

May import: lm.checkpoint, lm.mix, lm.model, lm.data, lm.errors, lm._util.
"""

from importlib import import_module


def __getattr__(name: str):
    """`lm.suggest.MODULE` after a plain `import lm.suggest`: the module is imported when first used."""
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
