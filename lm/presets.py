"""Model sizes people ask for, as named presets of the model and training settings.

`lm train --size tiny` fills every setting the preset names, unless the command line sets it:
the preset is a starting point, never a cage.

- tiny: a phone-keyboard model. The published Gboard model was a single-layer CIFG LSTM of
  1.4 M parameters (Hard et al. 2018); one LSTM layer of 256 over 96-wide embeddings is
  1.4 M parameters with a 10,000-word vocabulary (most of it the embedding), 1.4 MB in int8.
- small: quick to train on a laptop CPU.
- medium: the defaults (2×512 over 256-wide embeddings).
- large: an AWD-LSTM-style model for a GPU (Merity et al. 2017): 3 layers of 1,150, 400-wide
  embeddings, variational dropout, embedding dropout, weight drop, AR/TAR, SGD at a constant
  rate with averaging from the first stall (NT-ASGD), variable BPTT windows.
"""
from __future__ import annotations

from dataclasses import fields

from .errors import ConfigError

SIZES: dict[str, dict[str, dict]] = {
    "tiny": {"model": dict(layers=1, hidden=256, emb=96, dropout=0.1), "train": {}},
    "small": {"model": dict(layers=2, hidden=256, emb=128, dropout=0.2), "train": {}},
    "medium": {"model": dict(layers=2, hidden=512, emb=256, dropout=0.3), "train": {}},
    "large": {
        "model": dict(layers=3, hidden=1150, emb=400, dropout=0.4, locked_dropout=True, embedding_dropout=0.1,
                      weight_drop=0.5, ar=2.0, tar=1.0),
        "train": dict(optimizer="sgd", lr=30.0, batch=80, bptt=70, clip=0.25, weight_decay=1.2e-6, schedule="constant",
                      average="asgd", vary_bptt=True, epochs=500, patience=0),
    },
}


def apply_size(size: str, model_config, train_config, given: set[str] = frozenset()):
    """The configs with the preset's values, except the fields named in `given` (set by the user).

    Raises:
        ConfigError: an unknown size.
    """
    if size not in SIZES:
        raise ConfigError(f"--size must be one of {', '.join(SIZES)}, not {size!r} — pick one of those")
    preset = SIZES[size]
    for config, values in ((model_config, preset["model"]), (train_config, preset["train"])):
        known = {f.name for f in fields(config)}
        for name, value in values.items():
            if name in known and name not in given:
                setattr(config, name, value)
    return model_config, train_config
