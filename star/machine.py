"""What machine a result was measured on, for the records every run keeps.

A latency profile holds only on the kind of CPU it was measured on: torch picks its kernels by the
CPU's instruction sets (AVX2, AVX-512, AVX-512 bf16, AMX), and two CPUs with the same kernels still
differ in how fast they run them.  `fingerprint` records what tells them apart; its kernel fields
(`KERNEL_FIELDS`) decide whether a profile may be applied here.  A CPU's marketing name does not:
"AMD EPYC" is what the OS reports for a Zen 3 and for a Zen 4 virtual machine alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# Instruction sets that change which kernels torch and oneDNN run (x86-64, then Arm).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")
# The fields of a fingerprint that must agree before a measured profile is used without being named:
# the CPU's identity (vendor, family, model: its microarchitecture), its kernel instruction sets,
# the kernels torch actually dispatches to (ATEN_CPU_CAPABILITY can lower them) and the torch build.
KERNEL_FIELDS = ("arch", "vendor", "family", "model", "isa", "kernels", "torch")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from Linux's /proc/cpuinfo (empty elsewhere)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_name() -> str:
    """The CPU model as the OS reports it (Linux's /proc/cpuinfo), else platform's best guess."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown CPU"


def cache_sizes() -> dict[int, int]:
    """Bytes of the CPU caches by level (the largest at each level), as Linux reports them."""
    sizes: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            size = int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]] if text[-1] in "KM" else int(text)
        except (OSError, ValueError, KeyError):
            continue
        sizes[level] = max(size, sizes.get(level, 0))
    return sizes


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fingerprint(with_torch: bool = True) -> dict[str, Any]:
    """What identifies this machine for latency and training-speed figures.

    `with_torch=False` leaves out the torch fields, for callers that must not import torch (a
    synthetic search worker answers in milliseconds only because it never does)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    out: dict[str, Any] = {
        "arch": platform.machine(), "vendor": info.get("vendor_id") or info.get("CPU implementer", ""),
        "family": info.get("cpu family", ""), "model": info.get("model") or info.get("CPU part", ""),
        "model_name": cpu_name(), "isa": [flag for flag in KERNEL_FLAGS if flag in flags], "cpus": usable_cpus(),
        "caches": {f"L{level}": size for level, size in sorted(cache_sizes().items())},
    }
    if with_torch:
        import torch

        out["kernels"] = torch.backends.cpu.get_cpu_capability()
        out["torch"] = torch.__version__
    return out


def fingerprint_key(print_: dict[str, Any]) -> str:
    """A short stable name for the kernel fields: machines with the same key may share a profile."""
    kernel = {field: print_.get(field) for field in KERNEL_FIELDS}
    return hashlib.sha256(json.dumps(kernel, sort_keys=True).encode()).hexdigest()[:12]


def kernel_differences(recorded: dict[str, Any] | None, here: dict[str, Any]) -> list[str]:
    """Each kernel field in which a recorded fingerprint differs from this machine's, readably."""
    if not recorded:
        return ["no CPU fingerprint recorded (a profile from before star recorded one)"]
    out = []
    for field in KERNEL_FIELDS:
        was, now = recorded.get(field), here.get(field)
        if was == now:
            continue
        if field == "isa":
            missing = [f for f in was or [] if f not in now]
            extra = [f for f in now or [] if f not in was]
            out.append("ISA " + "; ".join(([f"{', '.join(missing)} there, not here"] if missing else [])
                                          + ([f"{', '.join(extra)} here, not there"] if extra else [])))
        else:
            out.append(f"{field} {was!r} there, {now!r} here")
    return out


# AMD's families and models, for a name a person recognises (CPUID family 25 covers Zen 3 and Zen 4).
_AMD_CORES = ((23, 0, 255, "Zen/Zen 2"), (25, 0, 15, "Zen 3"), (25, 16, 31, "Zen 4"), (25, 32, 95, "Zen 3"),
              (25, 96, 127, "Zen 4"), (25, 160, 175, "Zen 4c"), (26, 0, 255, "Zen 5"))


def cpu_kind(print_: dict[str, Any]) -> str:
    """One line naming the CPU kind, e.g. 'AMD EPYC (Zen 4, family 25 model 17; AVX-512 bf16; 2 CPUs)'."""
    family, model = str(print_.get("family", "")), str(print_.get("model", ""))
    core = ""
    if print_.get("vendor") == "AuthenticAMD" and family.isdigit() and model.isdigit():
        core = next((name for f, low, high, name in _AMD_CORES if f == int(family) and low <= int(model) <= high), "")
    isa = set(print_.get("isa", []))
    widest = ("AMX" if "amx_tile" in isa else "AVX-512 bf16" if "avx512_bf16" in isa else "AVX-512"
              if "avx512f" in isa else "AVX2" if "avx2" in isa else ", ".join(sorted(isa)) or "no vector ISA known")
    identity = ", ".join(part for part in (core, f"family {family} model {model}" if family else "") if part)
    kernels = f", torch kernels {print_['kernels']}" if print_.get("kernels") else ""
    return (f"{print_.get('model_name', 'unknown CPU')} ({identity + '; ' if identity else ''}{widest}{kernels}; "
            f"{print_.get('cpus', '?')} CPUs)")


@functools.cache
def code_version() -> str:
    """star's version and a digest of its Python source, e.g. '0.1.0+3fa2c1d09b7e'.

    Two installs run the same code only where these agree: a version number alone misses an edited
    checkout, and a cluster whose nodes run different code gives rows that no single install
    reproduces.  The digest covers the three packages (star, star.evaluators, star.search_spaces)."""
    from star import __version__

    digest = hashlib.sha256()
    for package in ("star", "star.evaluators", "star.search_spaces"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(folder).glob("*.py")):
                digest.update(f"{package}/{path.name}\0".encode())
                digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def machine_name() -> str:
    """Architecture and CPU kind: the `machine` recorded with every run and evaluation."""
    return f"{platform.machine()} {cpu_kind(fingerprint(with_torch=False))}"


def cache_dir() -> Path:
    """Where star keeps per-user files (profiles made for this machine): $STAR_CACHE_DIR, else
    $XDG_CACHE_HOME/star, else ~/.cache/star."""
    if os.environ.get("STAR_CACHE_DIR"):
        return Path(os.environ["STAR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "star"


def tune_allocator() -> None:
    """Stop glibc from handing multi-megabyte activations back to the kernel after every op.

    By default glibc serves large allocations with fresh mmap'd pages and trims freed heap memory, so
    each new activation tensor pays page faults and page zeroing; for this model that made a
    4096x512 matmul take 3.6 ms inside a training step against 1.4 ms in isolation.  Raising the mmap
    and trim thresholds keeps freed memory in the heap for reuse (about 12% faster bf16 steps).  The
    cost is that the process keeps its peak heap, which is small for proxy models.  It also makes
    timings repeatable: glibc's thresholds otherwise adapt to the history of frees, so the same call
    paid page faults in one run and not the next (prefill timings varied by up to 2x).  The trainer,
    the profiler and end-to-end latency measurements all run with it.  Best effort: silently does
    nothing off glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value on 64-bit
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    except (OSError, AttributeError):
        pass
