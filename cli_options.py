"""What the `lm` commands share on the command line: the group that turns a library error (or
an optional package not installed) into one `Error: ...` line, flags built from the torch-free
config dataclasses, the options every command that loads a model takes, and argument helpers.
Imports neither torch nor rich: `lm --help` reads it.
"""
from __future__ import annotations

import dataclasses
import re
import sys

import click

from lm.backend.choose import BACKENDS
from lm.errors import LMError


class LMGroup(click.Group):
    """Turns library errors into one `Error: ...` line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LMError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in OPTIONAL:
                raise
            click.echo(f"Error: {OPTIONAL[e.name.split('.')[0]]}", err=True)
            sys.exit(1)


# What each optional package is for, when a command needs one that is not installed.
OPTIONAL = {
    "torch": "this needs PyTorch, which is not installed — pip install 'lm[train]' (lm suggest, generate, repl "
             "and serve run without it on ONNX Runtime: pip install 'lm[runtime]')",
    "onnxruntime": "this needs ONNX Runtime, which is not installed — pip install 'lm[runtime]', or pass --backend torch",
    "onnx": "this needs the onnx package, which is not installed — pip install 'lm[runtime]'",
}


def field_option(cls, name: str, help: str, flag: str | None = None, **kwargs):
    """A --flag whose default is the dataclass field's own (defaults are never typed twice)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = field.default
    kwargs.setdefault("show_default", default is not None)
    if "type" not in kwargs and default is not None and not isinstance(default, str):
        kwargs["type"] = type(default)
    flag = flag or f"--{name.replace('_', '-')}"
    return click.option(flag, name, default=default, help=help, **kwargs)


checkpoint_option = click.option("--checkpoint", "-c", type=click.Path(),
                                 help="Checkpoint folder (default: the newest under checkpoints/).")
int8_option = click.option(
    "--int8/--fp32", "int8", default=True, show_default=True,
    help="On the CPU, run the model with int8 weights: several times faster per token; "
         "--fp32 for the exact trained weights (a GPU always runs those).",
)
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (a CUDA GPU when there is one, else the CPU), cpu or cuda.")
backend_option = click.option(
    "--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
    help="What steps the model: onnx (ONNX Runtime on the CPU: fastest, no torch imported; the graph is built "
         "on first use and kept in the checkpoint), torch, or auto (onnx on the CPU when onnxruntime is installed).",
)


def parse_duration(ctx, param, value):
    """Seconds, or a number with s / m / h: 300, 90s, 5m, 1.5h."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration — use seconds or 90s, 5m, 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def per_optimizer(defaults: dict[str, float]) -> str:
    """A default that depends on the optimizer, for a help text: "0.006 adamw, 20 sgd, …"."""
    return ", ".join(f"{value:g} {name}" for name, value in defaults.items())


def read_text_argument(value: str, name: str) -> str:
    """A TEXT or PROMPT argument; '-' reads all of stdin (a text too long for the command line)."""
    if value != "-":
        return value
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise click.BadParameter(f"stdin is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} — "
                                 "convert it first (e.g. iconv -t utf-8)", param_hint=name) from None
