"""A real multi-node Ray cluster on this machine: `ray start` processes, one per node, each with its
own CPUs, as a user starts them on separate machines.

The cluster keeps its files in a temporary folder of its own (`--temp-dir`), so that nothing else on
the machine (the test session's local Ray, a user's own cluster) sees or joins it, and so that its
processes can be found, killed and cleaned up by that folder's name without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray declares a node dead after this many missed health checks of this period (default 5 x 3 s).
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
                      "RAY_health_check_initial_delay_ms": "1000"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head node and worker nodes started with `ray start`; `address` is what `--ray-address` takes."""

    def __init__(self, head_cpus: int = 1, env: dict[str, str] | None = None) -> None:
        # Short: Ray's socket paths under it must fit in 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Token authentication off, for the nodes and for every driver (`driver_env`): a process whose
        # mode differs from the cluster's is refused or cannot fetch objects (docs/cluster.md).  The
        # test session's own local Ray turns token mode on in this process's environment.
        self.driver_env = {"RAY_AUTH_MODE": "disabled"}
        self.env = {**os.environ, **self.driver_env, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[int] = []  # node manager port of each worker node
        self._ray("start", "--head", f"--port={self.port}", f"--num-cpus={head_cpus}", "--num-gpus=0",
                  f"--temp-dir={self.temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
                  extra_env=FAST_HEALTH_CHECKS)

    def _ray(self, *args: str, extra_env: dict[str, str] | None = None) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        # Started in the cluster's own folder: its workers' working folder is not the driver's, as on
        # another machine, so a relative path the driver was given does not resolve there.
        result = subprocess.run([ray, *args], env={**self.env, **(extra_env or {})}, capture_output=True, text=True,
                                timeout=120, cwd=self.temp_dir)
        if result.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def add_node(self, cpus: int = 1, env: dict[str, str] | None = None) -> int:
        """Start a worker node with `cpus` CPUs (and `env` for its processes); its node manager port."""
        port = free_port()
        self._ray("start", f"--address={self.address}", f"--num-cpus={cpus}", "--num-gpus=0",
                  f"--node-manager-port={port}", extra_env=env)
        self.nodes.append(port)
        return port

    def kill_node(self, port: int) -> int:
        """SIGKILL a worker node's raylet and everything it started (its workers): a machine lost."""
        return _kill(_processes(f"--node_manager_port={port}"))

    def stop(self) -> None:
        """Kill every process of this cluster (found by its temp folder) and remove its files."""
        for _ in range(5):
            if not _kill(_processes(self.temp_dir)):
                break
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _processes(needle: str) -> set[int]:
    """Processes whose command line holds `needle`, with all their descendants (from Linux's /proc)."""
    parents: dict[int, int] = {}
    matched = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if needle in cmdline and int(entry.name) != os.getpid():
            matched.add(int(entry.name))
    found, grew = set(matched), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


def _kill(pids: set[int]) -> int:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
