"""The docs tell the truth: the CLI reference in docs/cli.md is generated from --help and must
match it, the README's Python example runs, every `lm` command the README and docs/ show exists
with the options it is given, every link leads to a file and heading that exist, and the
README's test command is the one CI runs.

Regenerate the reference with `python tests/test_docs.py` after changing a command or an option.
"""
import re
import shlex
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
    example = example.replace("max_time=300", "max_steps=30, batch=4, bptt=16, tune_cache=False")  # seconds, not minutes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(make_text(300), encoding="utf-8")
    (tmp_path / "held_out.txt").write_text(make_text(20, seed=1), encoding="utf-8")
    exec(compile(example, "README.md", "exec"), {})


def shown_commands(markdown: str) -> list[str]:
    """The `lm ...` commands a page shows: lines of its code blocks (after a `$ ` prompt, a `&&`
    or torchrun's `$(which lm)`) and inline code spans such as `lm eval --tune-cache`."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M)
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    lines = [line.strip().removeprefix("$ ") for block in blocks for line in block.splitlines()]
    lines = [part.strip().replace("$(which lm) ", "lm ") for line in lines for part in line.split("&&")]
    spans = [span for span in re.findall(r"`([^`\n]+)`", prose)]
    return [line for line in lines + spans if line.startswith("lm ")]


def unknown_parts(line: str) -> list[str]:
    """The command or options of an `lm ...` line that the CLI does not have (empty: all exist)."""
    words = shlex.split(line, comments=True)
    if len(words) > 1 and words[1].startswith("-"):  # the group's own options: lm --help, lm --version
        command, words = cli, words[:1] + ["lm"] + words[1:]
    else:
        command = cli.commands.get(words[1]) if len(words) > 1 else None
    if command is None:
        return [" ".join(words[:2])]
    options = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    options |= set(command.get_help_option_names(click.Context(command)))
    flags = [word.split("=")[0] for word in words[2:] if word.startswith("-") and word != "-"]
    return [flag for flag in flags if flag not in options]


def test_every_shown_command_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = {(page.name, line) for page in pages if page != REFERENCE
             for line in shown_commands(page.read_text(encoding="utf-8"))}
    assert len(shown) > 20  # the tour and the pages show commands: the parser found them
    wrong = [f"{page}: {line} ({', '.join(unknown_parts(line))})" for page, line in sorted(shown) if unknown_parts(line)]
    assert not wrong, "commands the CLI does not have:\n" + "\n".join(wrong)


def test_a_misspelled_command_or_option_is_caught():
    assert unknown_parts("lm train corpus.txt --tokeniser char") == ["--tokeniser"]
    assert unknown_parts("lm sugest 'the clouds'") == ["lm sugest"]
    assert unknown_parts("lm --help") == [] and unknown_parts("lm --helps") == ["--helps"]
    assert unknown_parts("lm eval test.txt -c ckpt --json  # a comment --not-an-option") == []


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = re.search(r"^## Set-up\n.*?^```\n(.*?)^```", readme, flags=re.S | re.M).group(1).splitlines()
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if "pytest" in line
          and not line.lstrip().startswith("#")]
    assert len(setup) == 2 and ci == [setup[1]] == ["python -m pytest"]


def anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    """The page's relative links whose file, or heading after `#`, does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file, _, fragment = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), flags=re.M)
            if fragment not in {anchor(h) for h in headings}:
                broken.append(target)
    return broken


def test_every_link_in_the_docs_leads_somewhere():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = {page.name: broken_links(page) for page in pages if broken_links(page)}
    assert not broken, f"links to missing files or headings: {broken}"
    assert anchor("## `lm train`".lstrip("# ")) == "lm-train"
    assert anchor("Quality per minute (2026-11-30)") == "quality-per-minute-2026-11-30"


if __name__ == "__main__":
    REFERENCE.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {REFERENCE}")
