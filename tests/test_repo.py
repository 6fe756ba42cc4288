"""The promises the README makes about the repository itself."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quickstart_has_exactly_two_commands():
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quickstart_commands()[1] in ci


def test_help_imports_neither_torch_nor_ray():
    code = "import sys; from star.cli import build_parser; build_parser().format_help(); " \
           "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "star.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("describe", "export", "presets"):
        assert command in out.stdout


def test_pyarrow_requirement_excludes_the_versions_with_cve_2023_47248():
    """pyarrow up to 14.0.0 deserialises (unpickles) data found in Parquet and IPC files, and star
    reads Parquet files it did not write: run folders and profiles from other people."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pyarrow,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "pyarrow"]
    assert not pyarrow.specifier.contains("14.0.0") and pyarrow.specifier.contains("14.0.1")
