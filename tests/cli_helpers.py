"""Running the `star` command in a subprocess, and the contract every bad-input error keeps."""

import os
import subprocess
import sys


def star(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`star ARGS` in a new process; `env` adds to (or overrides) this process's environment."""
    return subprocess.run([sys.executable, "-m", "star.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)


def assert_bad_input(result: subprocess.CompletedProcess, *needles: str) -> None:
    """One line `star: error: ...` naming the problem, exit status 2, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("star: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
