"""Training budgets ("fidelities") of the proxy trainer, kept free of torch so that the search driver
can name and compare them without loading a deep-learning stack."""

from __future__ import annotations

from dataclasses import dataclass

from star.errors import StarError

TOKENS_PER_BATCH = 4096


@dataclass(frozen=True)
class Fidelity:
    level: int
    name: str
    tokens: int  # training tokens (padding included: it is what the compute pays for)
    batch_tokens: int = TOKENS_PER_BATCH  # tokens per optimiser step

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_tokens)


FIDELITIES = (
    Fidelity(0, "screen", 128 * 1024),
    Fidelity(1, "low", 256 * 1024),
    Fidelity(2, "default", 512 * 1024),  # sized so one lfm2-proxy evaluation fits 120 s on 2 cores
    Fidelity(3, "high", 2 * 1024 * 1024),
    # For a GPU: 2,048 steps of 16K tokens.  A step of a proxy on a GPU costs kernel launches, not
    # arithmetic, so four times the rows per step cost almost nothing; associative recall needs
    # thousands of steps before it appears at all (docs/benchmarks.md).
    Fidelity(4, "gpu", 32 * 1024 * 1024, batch_tokens=4 * TOKENS_PER_BATCH),
)
DEFAULT_FIDELITY = 2


def get_fidelity(value: int | str) -> Fidelity:
    """A named level (0-3 or its name), or a custom token budget such as `64K` or `2M`."""
    for f in FIDELITIES:
        if str(value) in (str(f.level), f.name):
            return f
    text = str(value).strip().upper()
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:], 0)
    if scale and text[:-1].isdigit() and int(text[:-1]) * scale >= TOKENS_PER_BATCH:
        return Fidelity(-1, f"custom-{text}", int(text[:-1]) * scale)
    names = ", ".join(f"{f.level} ({f.name})" for f in FIDELITIES)
    raise StarError(f"unknown fidelity {value!r}; choose from {names}, or a token budget like 64K or 2M "
                    f"(at least {TOKENS_PER_BATCH // 1024}K)")
