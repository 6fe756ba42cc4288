"""Reading untrusted input into plain values with limits, before anything acts on it.

Configs, manifests and run rows come from files a user may have edited, damaged or been sent, so
every reader goes through here: JSON with a size, depth and digit limit and no NaN or Infinity,
numbers that must be finite and in range.  Each failure is a `StarError` whose message is one line
naming the input and the problem, which the command line prints as `star: error: ...`.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from star.errors import StarError

MAX_JSON_BYTES = 16 * 2**20  # a config or manifest is a few KB; a run's manifest well under 1 MB
MAX_JSON_DEPTH = 64  # configs nest 4 deep, manifests 4
MAX_INT_DIGITS = 30  # beyond any count, size or seed this project takes (2**64 has 20 digits)


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(message).split())


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages), or its type's
    name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} overflows a float")
    return number


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(text: str | bytes, source: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON text from `source` (named in errors) within the limits above."""
    if len(text) > max_bytes:
        raise StarError(f"{source} is {len(text):,} bytes, over the {max_bytes:,} a JSON input may have")
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int,
                          parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise StarError(f"{source} is not valid JSON: {err.msg} at line {err.lineno}") from None
    except RecursionError:
        raise StarError(f"{source} is nested too deeply (limit {MAX_JSON_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StarError(f"{source} is not valid JSON: {one_line(err)}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise StarError(f"{source} is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    return data


def check_regular_file(path: str | Path, what: str, max_bytes: int) -> None:
    """Refuse anything but a regular file of at most `max_bytes`: a FIFO, device or folder could
    block or never end."""
    p = Path(path)
    try:
        info = p.stat()
    except OSError as err:
        raise StarError(f"{what} {p}: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StarError(f"{what} {p} is not a regular file")
    if info.st_size > max_bytes:
        raise StarError(f"{what} {p} is {info.st_size:,} bytes, over the limit of {max_bytes:,}")


def read_regular_file(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see `check_regular_file`)."""
    check_regular_file(path, what, max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise StarError(f"{what} {path}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise StarError(f"{what} {path} grew past the limit of {max_bytes:,} bytes while being read")
    return data


def check_output_file(path: str | Path, what: str) -> None:
    """Refuse, before any work, an output file that cannot be written: its folder missing or not a
    folder, or the name taken by a folder.  (Minutes of measuring or training must not end in an
    error about the file name.)"""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise StarError(f"{what} {p} is a folder; give a file name")
    if not parent.is_dir():
        raise StarError(f"{what} {p}: {parent} {'is not a folder' if parent.exists() else 'does not exist'}")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise StarError(f"{what} {p}: not writable")


def read_json(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse the JSON file at `path`; `what` names it in errors (e.g. "config", "manifest")."""
    data = read_regular_file(path, what, max_bytes)
    return parse_json(data, f"{what} {path}", max_bytes)


def finite(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A real number (not bool), finite and within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StarError(f"{where} must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise StarError(f"{where} is too large, got {show(value)}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise StarError(f"{where} must be a finite number in [{low:g}, {high:g}], got {show(value)}")
    return number


def integer(value: Any, where: str, low: int, high: int) -> int:
    """An int (not bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StarError(f"{where} must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise StarError(f"{where} must be in {low}..{high}, got {show(value)}")
    return value


def show(value: Any, limit: int = 60) -> str:
    """A short, one-line rendering of a bad value (an integer too long to print is described)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = one_line(repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_amount(text: str, what: str) -> float:
    """'400M' → 4e8, '2GiB' → 2·2^30, '20' → 20.0 (K/M/G/T are powers of 1000; KiB/MiB/GiB of 1024);
    finite and > 0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _SUFFIX:
        raise StarError(f"{what} {show(text)} is not a number such as 20, 400M or 2GiB")
    value = float(match.group(1)) * _SUFFIX[match.group(2)]
    if not math.isfinite(value) or not value > 0:
        raise StarError(f"{what} must be a finite number > 0, got {show(text)}")
    return value


def available_memory() -> int | None:
    """Bytes of memory the kernel says a new allocation can get (MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_limit() -> int | None:
    """The most memory one model may ask for: $STAR_MEMORY_LIMIT if set (e.g. 16GiB), else 80% of
    what is available now; None where neither is known."""
    import os

    given = os.environ.get("STAR_MEMORY_LIMIT")
    if given:
        return int(parse_amount(given, "STAR_MEMORY_LIMIT"))
    available = available_memory()
    return None if available is None else int(0.8 * available)


def check_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, work whose memory estimate (from exact accounting) is over the
    limit: the alternative is minutes of swapping or the kernel killing the process."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        raise StarError(f"{what} needs about {nbytes / 2**30:,.1f} GiB, over the limit of {limit / 2**30:,.1f} GiB "
                        "(set STAR_MEMORY_LIMIT, e.g. STAR_MEMORY_LIMIT=64GiB, to allow more)")
