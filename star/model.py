"""Build a torch language model from an ArchConfig.

`StarLM` is a plain pre-norm decoder: embedding → blocks (x += mixer(norm(x)); x += ffn(norm(x)))
→ final norm → tied LM head.  Weight names follow transformers' LFM2 layout so that export is a
mechanical rename.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from star import operators
from star.arch import MLPFFN, ArchConfig, BlockConfig, SwiGLUFFN
from star.operators import MLP, Attention, Context, RMSNorm, SwiGLU, init_weights


def build_mixer(config: ArchConfig, block: BlockConfig) -> nn.Module | None:
    """The operator class the block's mixer kind names (star.arch: `operator`), or None for a kind
    with no module (identity): the mixer registry is the arch classes, no chain of kinds here."""
    if block.mixer.operator is None:
        return None
    return getattr(operators, block.mixer.operator).from_block(config, block)


def build_ffn(config: ArchConfig, block: BlockConfig) -> nn.Module | None:
    if isinstance(block.ffn, SwiGLUFFN):
        return SwiGLU(config.hidden_size, block.ffn)
    if isinstance(block.ffn, MLPFFN):
        return MLP(config.hidden_size, block.ffn)
    return None


class Block(nn.Module):
    def __init__(self, config: ArchConfig, index: int, mixer: nn.Module | None) -> None:
        super().__init__()
        self.index = index
        block = config.blocks[index]
        self.mixer = mixer
        self.operator_norm = RMSNorm(config.hidden_size, config.norm_eps) if mixer is not None else None
        self.feed_forward = build_ffn(config, block)
        self.ffn_norm = RMSNorm(config.hidden_size, config.norm_eps) if self.feed_forward is not None else None

    def forward(self, x: Tensor, state: dict | None, ctx: Context) -> Tensor:
        """The caller sets ctx.layer (StarLM does): reading self.index here would make torch.compile
        specialise on it and compile one graph per block instead of one per block kind."""
        if self.mixer is not None:
            x = x + self.mixer(self.operator_norm(x), state, ctx)
        if self.feed_forward is not None:
            x = x + self.feed_forward(self.ffn_norm(x))
        return x

    def step(self, x: Tensor, state: dict | None, ctx: Context) -> Tensor:
        if self.mixer is not None:
            x = x + self.mixer.step(self.operator_norm(x), state, ctx)
        if self.feed_forward is not None:
            x = x + self.feed_forward(self.ffn_norm(x))
        return x


@dataclass
class DecodeState:
    """Per-block caches plus the number of tokens already consumed."""

    position: int
    layers: list[dict | None]


class StarLM(nn.Module):
    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        mixers: list[nn.Module | None] = []
        for block in config.blocks:
            source = block.share_weights_with
            mixers.append(mixers[source] if source is not None else build_mixer(config, block))
        self.layers = nn.ModuleList(Block(config, i, m) for i, m in enumerate(mixers))
        # Attention publishes keys/values in ctx.shared_kv only where a block reads them (a shared
        # module publishes if any of its blocks is read).
        read = {block.share_kv_with for block in config.blocks}
        for layer in self.layers:
            if isinstance(layer.mixer, Attention):
                layer.mixer.publishes_kv = False
        for layer in self.layers:
            if isinstance(layer.mixer, Attention) and layer.index in read:
                layer.mixer.publishes_kv = True
        self.embedding_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        init_weights(self)

    def head(self, x: Tensor) -> Tensor:
        x = self.embedding_norm(x)
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, weight)

    def forward(self, input_ids: Tensor, state: DecodeState | None = None) -> Tensor:
        """Logits for every position; with a `state`, continue from it (and advance it)."""
        ctx = Context(position=state.position if state is not None else 0)
        x = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            ctx.layer = i
            x = layer(x, state.layers[i] if state is not None else None, ctx)
        if state is not None:
            state.position += input_ids.shape[1]
        return self.head(x)

    def init_state(self, batch: int, dtype: torch.dtype | None = None) -> DecodeState:
        device = self.embed_tokens.weight.device
        dtype = dtype or self.embed_tokens.weight.dtype
        return DecodeState(
            position=0,
            layers=[layer.mixer.init_state(batch, device, dtype) if layer.mixer is not None else None
                    for layer in self.layers],
        )

    def step(self, token_ids: Tensor, state: DecodeState) -> Tensor:
        """Logits for one new token per sequence, shape (batch, vocab), using and updating `state`."""
        ctx = Context(position=state.position)
        x = self.embed_tokens(token_ids)
        for i, layer in enumerate(self.layers):
            ctx.layer = i
            x = layer.step(x, state.layers[i], ctx)
        state.position += 1
        return self.head(x)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
