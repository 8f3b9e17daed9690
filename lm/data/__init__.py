"""The data stage: text in, token ids out.

text (character classes, the start-of-text mark), tokenizer (char, subword, word), corpus
(files, folders and `datasets` datasets, tokenized once and cached), batching (streams as
columns, windows down them) and lexicon (the words of the training text).

May import: lm.errors, lm._util. Never torch-heavy stages above it.
"""

from importlib import import_module


def __getattr__(name: str):
    """`lm.data.MODULE` after a plain `import lm.data`: the module is imported when first used."""
    try:
        return import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
