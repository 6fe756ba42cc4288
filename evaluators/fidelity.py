"""Training budgets ("fidelities") of the proxy trainer, kept free of torch so that the search driver
can name and compare them without loading a deep-learning stack.

A fidelity says how many tokens the proxy trains on, in batches of how many, and on what: the CPU
levels train on real text alone (MAD's protocol: one skill per run; measured, the 50-task mixture at
these budgets learns nothing but text statistics, and those worse than text alone), the GPU level on
the whole 50-task mixture.  Every level also runs the recall probe (evaluators/probe.py), whose
budget is the same at every level, so a genome's probe is measured once and reused when it is
promoted.  docs/suite.md has the measurements behind the ladder.
"""

from __future__ import annotations

from dataclasses import dataclass

from star.errors import StarError

TOKENS_PER_BATCH = 4096  # the mixture's batch (GPU level: four of these); also the scoring batch
TEXT_BATCH_TOKENS = 1024  # four 256-byte rows: at proxy width, small batches learn more per token
TEXT_TASKS = ("text-prose", "text-code")
# Measured on real text at proxy widths 48 and 64 (docs/benchmarks.md): at 2e-3 two seeds agree within
# 0.02 bits per byte, at 3e-3 they differed by up to 0.09, and 6e-3 learned less.
TEXT_LR = 2e-3
MIXTURE_LR = 3e-3


@dataclass(frozen=True)
class Fidelity:
    level: int
    name: str
    tokens: int  # training tokens (padding included: it is what the compute pays for)
    batch_tokens: int = TEXT_BATCH_TOKENS  # tokens per optimiser step
    train_on: tuple[str, ...] | None = TEXT_TASKS  # tasks trained (and scored); None = all 50
    lr: float = TEXT_LR  # peak learning rate

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_tokens)

    @property
    def trains(self) -> str:
        return "mixture" if self.train_on is None else "+".join(self.train_on)


FIDELITIES = (
    Fidelity(0, "screen", 96 * 1024),
    Fidelity(1, "low", 192 * 1024),
    # Sized so that one evaluation of the lfm2 space's costliest genome fits 180 s on a 2-core Zen 3
    # (estimated; docs/benchmarks.md), beside the recall probe.
    Fidelity(2, "default", 256 * 1024),
    Fidelity(3, "high", 1536 * 1024),
    # For a GPU: the whole 50-task mixture, 2,048 steps of 16K tokens.  A step of a proxy on a GPU
    # costs kernel launches, not arithmetic, so four times the rows per step cost almost nothing.
    Fidelity(4, "gpu", 32 * 1024 * 1024, batch_tokens=4 * TOKENS_PER_BATCH, train_on=None, lr=MIXTURE_LR),
)
DEFAULT_FIDELITY = 2


def get_fidelity(value: int | str) -> Fidelity:
    """A named level (0-4 or its name), or a custom budget of real text such as `64K` or `2M`."""
    for f in FIDELITIES:
        if str(value) in (str(f.level), f.name):
            return f
    text = str(value).strip().upper()
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:], 0)
    digits = text[:-1]
    if scale and digits.isdigit() and len(digits) <= 6 and int(digits) * scale >= TEXT_BATCH_TOKENS:
        return Fidelity(-1, f"custom-{text}", int(digits) * scale)
    names = ", ".join(f"{f.level} ({f.name})" for f in FIDELITIES)
    raise StarError(f"unknown fidelity {value!r}; choose from {names}, or a token budget like 64K or 2M "
                    f"(at least {TEXT_BATCH_TOKENS // 1024}K)")
