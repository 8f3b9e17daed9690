"""Small helpers shared by several stages."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, fields
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch


def hash_text(text: str) -> str:
    """sha256 of a text (lone surrogates allowed), as hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ConfigBase:
    """Mixin for the config dataclasses: to and from the plain dicts config.json holds."""

    @classmethod
    def from_dict(cls, data: dict):
        """Keys this version does not know (a newer checkpoint's) are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


SHORT_FLAGS = {"k": "-k"}  # lm suggest -k; every other field is spelled --name


def flag(name: str) -> str:
    """The command-line flag of a config field: max_tokens -> --max-tokens."""
    return SHORT_FLAGS.get(name, "--" + name.replace("_", "-"))


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    import torch  # here, not at the top: the config modules import this file and must not load torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA GPU is available — use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r} — use auto, cpu or cuda") from None


def submodule_getter(package: str):
    """A package's module-level __getattr__ (PEP 562): `lm.PKG.MODULE` after a plain `import lm.PKG`
    imports the module when first used, so a package's __init__ stays free of eager imports."""
    from importlib import import_module

    def __getattr__(name: str):
        try:
            return import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
