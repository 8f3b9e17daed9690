"""The CLI reference in docs/cli.md is generated from --help and must match it.

Regenerate it with `python tests/test_docs.py` after changing a command or an option.
"""
from pathlib import Path

import click

from cli import cli

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
WIDTH = 100


def render_reference() -> str:
    """Markdown with the --help of `lm` and of each command, as a terminal of WIDTH columns shows it."""
    parts = ["# Command reference\n\n", "Generated from `--help` by `python tests/test_docs.py`; do not edit by hand.\n"]
    commands = [("lm", cli)] + [(f"lm {name}", command) for name, command in sorted(cli.commands.items())]
    for title, command in commands:
        parent = None if command is cli else click.Context(cli, info_name="lm", **cli.context_settings)
        ctx = click.Context(command, parent=parent, info_name=title.split()[-1], terminal_width=WIDTH,
                            max_content_width=WIDTH, **cli.context_settings)
        parts.append(f"\n## `{title}`\n\n```\n{command.get_help(ctx)}\n```\n")
    return "".join(parts)


def test_cli_reference_matches_the_help():
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        "docs/cli.md is stale: run `python tests/test_docs.py` to regenerate it")


if __name__ == "__main__":
    REFERENCE.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {REFERENCE}")
