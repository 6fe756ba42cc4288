"""The proxy trainer: AdamW on a StarLM with a warm-up + cosine schedule, bf16 autocast where the
hardware multiplies bf16 faster, and the thread count the worker was given.

It knows nothing about tasks: it takes batches of (inputs, targets) token tensors, where a target of
`IGNORE` contributes no loss, so the suite decides what is supervised.  Training is deterministic for
a given seed, thread count and precision (same batches in, same weights out).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from star.arch import ArchConfig
from star.errors import StarError
from star.machine import tune_allocator
from star.model import Block, StarLM
from star.operators import Context

IGNORE = -100
# Held while a trainer seeds torch's global generator and draws its weights, so that trainers built
# in different threads at once (the recall probe beside the text run) each get their seed's weights.
_INIT_LOCK = threading.Lock()
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings shared by every fidelity; only `steps` changes between fidelities."""

    steps: int
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    precision: str = "auto"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise StarError("--device cuda: no CUDA device is available")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' picks bf16 where bf16 matmuls are native (CUDA with bf16, CPUs with AVX-512 BF16 or
    AMX, about 4x faster than fp32 on our development CPU), else fp32 (emulated bf16 is slower)."""
    if precision not in PRECISIONS:
        raise StarError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile is worth trying: inductor on CPU builds C++ kernels, so it needs a
    compiler; without one the first step would fail to compile and fall back anyway."""
    if device.type == "cuda":
        return True
    return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))


def _run_block(block: Block, x: Tensor, ctx: Context) -> Tensor:
    return block(x, None, ctx)


def row_mean_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy averaged per row, then over the rows that have any target.

    In a task mixture a row of text supervises 250 bytes and a tool call six tokens; a plain mean
    over tokens would let the long rows drown the short ones.  Averaging per row first gives every
    example the same say.  With every target supervised it equals the plain token mean."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    supervised = targets != IGNORE
    per_row = ce.view(targets.shape).sum(1) / supervised.sum(1).clamp(min=1)
    return per_row.sum() / supervised.any(1).sum().clamp(min=1)


def _head_loss(model: StarLM, x: Tensor, targets: Tensor) -> Tensor:
    return row_mean_loss(model.head(x), targets)


class ProxyTrainer:
    """Owns one proxy model and its optimiser.  `step` trains on one batch; `logits` scores one.

    `compile=True` (off by default: a cold compile costs tens of seconds per sequence length, more
    than it saves in a 512K-token evaluation) runs forward + loss through torch.compile,
    which fuses the elementwise work (norms, gates, SiLU, RoPE, the loss) that otherwise costs about
    as much as the matmuls at proxy width.  Shapes are compiled statically, once per sequence length.
    If compiling fails (no C++ compiler, unsupported platform) the trainer warns once and stays eager."""

    def __init__(self, config: ArchConfig, settings: TrainSettings, seed: int, device: str = "auto",
                 compile: bool = False) -> None:
        if settings.steps < 1:
            raise StarError(f"a training run needs at least one step, got {settings.steps}")
        self.settings = settings
        self.device = resolve_device(device)
        self.precision = resolve_precision(settings.precision, self.device)
        if self.device.type == "cpu":
            tune_allocator()
        with _INIT_LOCK:  # seeding and drawing the initial weights use torch's global generator
            torch.manual_seed(seed)
            self.model = StarLM(config).to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2 or "embed" in n]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.lr, betas=settings.betas, foreach=True,
        )
        self.steps_done = 0
        self.compiled = bool(compile) and can_compile(self.device)
        self._block: Callable[[Block, Tensor, Context], Tensor] = _run_block
        self._head_loss: Callable[[StarLM, Tensor, Tensor], Tensor] = _head_loss
        if self.compiled:
            # Regional compilation: every block of one kind shares one graph (and the head + loss
            # another), so a cold compile costs a few graphs, not one per block of a 16-block stack.
            self._block = torch.compile(_run_block, dynamic=False)
            self._head_loss = torch.compile(_head_loss, dynamic=False)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def lr_at(self, step: int) -> float:
        s = self.settings
        warmup = max(1, round(s.warmup_fraction * s.steps))
        if step < warmup:
            return s.lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, s.steps - warmup))
        floor = s.lr * s.min_lr_fraction
        return floor + (s.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """StarLM.forward without a decode state, block by block through `self._block`."""
        with self._autocast():
            x = self.model.embed_tokens(inputs)
            ctx = Context()
            for i, layer in enumerate(self.model.layers):
                ctx.layer = i
                x = self._block(layer, x, ctx)
            return self._head_loss(self.model, x, targets)

    def _forward_backward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if not self.compiled:
            loss = self._loss(inputs, targets)
            loss.backward()
            return loss
        try:
            loss = self._loss(inputs, targets)
            loss.backward()
            return loss
        except Exception as error:  # any compiler failure means: train eagerly instead
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).strip()[:200]}); "
                          "training eagerly (slower)", RuntimeWarning, stacklevel=3)
            self.compiled = False
            self._block, self._head_loss = _run_block, _head_loss
            self.optimizer.zero_grad(set_to_none=True)
            return self._forward_backward(inputs, targets)

    def step(self, inputs: Tensor, targets: Tensor) -> float:
        """One optimiser step on a batch; returns the loss (`row_mean_loss`)."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.steps_done)
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        loss = self._forward_backward(inputs, targets)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        return loss.item()

    @torch.no_grad()
    def logits(self, inputs: Tensor) -> Tensor:
        """fp32 logits for a batch, computed in the training precision."""
        self.model.eval()
        with self._autocast():
            return self.model(inputs.to(self.device)).float()
