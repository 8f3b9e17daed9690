"""The docs tell the truth: the CLI reference in docs/cli.md is generated from --help and must
match it, and the README's Python example runs.

Regenerate the reference with `python tests/test_docs.py` after changing a command or an option.
"""
import re
from pathlib import Path

import click

from cli import cli

from conftest import make_text

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "cli.md"
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


def test_the_readme_library_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    assert "max_time=300" in example
    example = example.replace("max_time=300", "max_steps=30, batch=4, bptt=16")  # seconds, not minutes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(make_text(300), encoding="utf-8")
    (tmp_path / "held_out.txt").write_text(make_text(20, seed=1), encoding="utf-8")
    exec(compile(example, "README.md", "exec"), {})


if __name__ == "__main__":
    REFERENCE.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {REFERENCE}")
