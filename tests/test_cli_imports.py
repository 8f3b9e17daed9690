"""`lm --help` is quick: the CLI builds its flags from the torch-free config modules and imports
the library (and rich) only inside the command that runs. Each check runs in a fresh
interpreter, since this test session has long since imported torch."""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "rich", "sentencepiece", "safetensors", "fastapi", "datasets")


def modules_loaded_by(code: str) -> list[str]:
    """The HEAVY top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    return [name for name in HEAVY if name in loaded]


def test_importing_the_cli_loads_no_torch_numpy_or_rich():
    assert modules_loaded_by("import cli") == []


def test_help_of_lm_and_of_every_command_loads_no_torch_numpy_or_rich():
    code = """
from click.testing import CliRunner
from cli import cli
runner = CliRunner()
for args in [["--help"], *[[name, "--help"] for name in cli.commands]]:
    result = runner.invoke(cli, args)
    assert result.exit_code == 0 and "Usage: " in result.output, (args, result.output)
"""
    assert modules_loaded_by(code) == []


def test_the_library_imports_neither_click_nor_rich():
    pattern = re.compile(r"^\s*(import|from)\s+(click|rich)\b", flags=re.M)
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "lm").rglob("*.py"))
                 if pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
