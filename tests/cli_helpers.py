"""Running the `star` command in a subprocess, and the contract every bad-input error keeps."""

import subprocess
import sys


def star(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "star.cli", *args], capture_output=True, text=True)


def assert_bad_input(result: subprocess.CompletedProcess, *needles: str) -> None:
    """One line `star: error: ...` naming the problem, exit status 2, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("star: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
