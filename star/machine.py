"""What machine a result was measured on, for the records every run keeps."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model as the OS reports it (Linux's /proc/cpuinfo), else platform's best guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
