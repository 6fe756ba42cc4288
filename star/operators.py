"""The LIV operator library in pure PyTorch.

Every token mixer has the same interface:
- `forward(x, state=None, ctx=None)` over a sequence x of shape (batch, time, hidden).  With a
  `state` (from `init_state`) the call continues from it and updates it in place, so a prompt can be
  prefilled in one call and then decoded token by token.
- `step(x_t, state, ctx)` for one token x_t of shape (batch, hidden): the cached decoding path.
- `init_state(batch, device, dtype)` for the decode cache / recurrent state.
Exact parameter counts, cache sizes and FLOPs live on the configs in `star.arch`, and tests check
them against these modules.

Names of submodules follow transformers' LFM2 classes (in_proj/conv/out_proj, q_proj/k_proj/v_proj/
out_proj/q_layernorm/k_layernorm, w1/w2/w3) so export is a rename-free copy for that family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from star.arch import (
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    LongConvMixer,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
)

State = dict[str, Tensor]


@dataclass
class Context:
    """What a mixer may need beyond its own input: where the tokens sit in the sequence, which block
    is calling (a module shared by several blocks serves each), and keys/values published by
    attention blocks for blocks that share their KV cache."""

    position: int = 0
    layer: int = 0
    shared_kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 for stability under bf16 autocast, as transformers' LFM2/Qwen3 do.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


# --------------------------------------------------------------------------------------------------
# Token mixers
# --------------------------------------------------------------------------------------------------


class ShortConv(nn.Module):
    """Double-gated short convolution (LFM2): a first-order system whose impulse response ends after
    `kernel` steps, so its decode state is just the last kernel-1 gated inputs."""

    @classmethod
    def from_block(cls, config: ArchConfig, block: BlockConfig) -> ShortConv:
        """The operator for a block whose mixer names this class (star.arch: `operator`)."""
        return cls(config.hidden_size, block.mixer)

    def __init__(self, hidden: int, config: ShortConvMixer) -> None:
        super().__init__()
        self.hidden, self.kernel = hidden, config.kernel
        self.in_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        self.conv = nn.Conv1d(hidden, hidden, self.kernel, groups=hidden, bias=False)
        self.out_proj = nn.Linear(hidden, hidden, bias=False)

    def filter(self) -> Tensor:
        """The depthwise filter, shape (hidden, 1, kernel)."""
        return self.conv.weight

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"window": torch.zeros(batch, self.hidden, self.kernel - 1, device=device, dtype=dtype)}

    def forward(self, x: Tensor, state: State | None = None, ctx: Context | None = None) -> Tensor:
        b_gate, c_gate, h = self.in_proj(x).chunk(3, dim=-1)
        if state is None and torch.compiler.is_compiling():
            return self.out_proj(c_gate * self._shifted_taps(b_gate * h))
        u = (b_gate * h).transpose(1, 2)  # (batch, hidden, time)
        if state is not None:
            past = state["window"].to(u.dtype)
        else:
            past = u.new_zeros(u.shape[0], self.hidden, self.kernel - 1)
        padded = torch.cat([past, u], dim=-1)
        y = F.conv1d(padded, self.filter().to(u.dtype), groups=self.hidden)
        if state is not None:  # keep the cache in the dtype it was created with
            state["window"] = padded[..., padded.shape[-1] - (self.kernel - 1):].to(state["window"].dtype)
        return self.out_proj(c_gate * y.transpose(1, 2))

    def _shifted_taps(self, u: Tensor) -> Tensor:
        """The causal depthwise convolution of u (batch, time, hidden) from a zero start, as `kernel`
        shifted multiply-adds.  Used when compiling: inductor fuses these with the gates into one
        loop, whereas conv1d is an opaque library call that needs two transposes around it.  Eager
        keeps conv1d (one kernel there, and the FLOP counter sees it)."""
        taps = self.filter()[:, 0, :].to(u.dtype)  # (hidden, kernel); tap kernel-1 is lag 0
        time = u.shape[1]
        padded = F.pad(u, (0, 0, self.kernel - 1, 0))
        y = u * taps[:, self.kernel - 1]
        for lag in range(1, min(self.kernel, time + 1)):
            y = y + padded[:, self.kernel - 1 - lag:self.kernel - 1 - lag + time] * taps[:, self.kernel - 1 - lag]
        return y

    def step(self, x: Tensor, state: State, ctx: Context | None = None) -> Tensor:
        b_gate, c_gate, h = self.in_proj(x).chunk(3, dim=-1)
        window = torch.cat([state["window"].to(h.dtype), (b_gate * h).unsqueeze(-1)], dim=-1)
        y = (window * self.filter()[:, 0, :].to(h.dtype)).sum(-1)
        state["window"] = window[..., 1:].to(state["window"].dtype)
        return self.out_proj(c_gate * y)


class LongConv(ShortConv):
    """Gated long convolution: the same gates around a `kernel`-tap filter whose taps decay
    exponentially per channel (a learned rate), so long filters start out smooth and local."""

    def __init__(self, hidden: int, config: LongConvMixer) -> None:
        super().__init__(hidden, ShortConvMixer(kernel=config.kernel))
        self.decay = nn.Parameter(torch.zeros(hidden))
        self.register_buffer("lags", torch.arange(config.kernel - 1, -1, -1, dtype=torch.float32), persistent=False)

    def filter(self) -> Tensor:
        # conv1d correlates, so tap index kernel-1 multiplies the newest input (lag 0).
        rate = F.softplus(self.decay).unsqueeze(-1) * 0.1
        return self.conv.weight * torch.exp(-rate * self.lags).unsqueeze(1)


def _causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal (GQA) attention as two batched matmuls around an fp32 softmax, for short sequences.

    Used when compiling: there the scale, mask and softmax fuse into one loop, and training the
    proxy is about 12% faster than with SDPA's CPU flash kernel, whose backward runs far below matmul
    speed at these shapes (eager, the unfused softmax makes it slower, so eager keeps SDPA).  Query
    heads that share a KV head are stacked along the time axis, so keys and values are never repeated.
    Memory is quadratic in time, hence the length cap."""
    batch, heads, time, head_dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    scores = (q * head_dim**-0.5).reshape(batch, kv_heads, group * time, head_dim) @ k.transpose(-1, -2)
    causal = torch.ones(time, time, dtype=torch.bool, device=q.device).tril()
    scores = scores.view(batch, kv_heads, group, time, time).float().masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype).view(batch, kv_heads, group * time, time)
    return (probs @ v).view(batch, heads, time, head_dim)


class Attention(nn.Module):
    """Grouped-query attention with rotary positions, optional QK-norm and optional sliding window.

    A block that shares another block's KV cache builds no k/v projections and reads the keys and
    values its source published in `ctx.shared_kv` during the same call."""

    matmul_attention_max = 512  # longest causal sequence attended with explicit matmuls (see above)

    @classmethod
    def from_block(cls, config: ArchConfig, block: BlockConfig) -> Attention:
        """The operator for a block whose mixer names this class (star.arch: `operator`)."""
        return cls(config.hidden_size, block.mixer, config.rope_theta, config.norm_eps, kv_source=block.share_kv_with)

    def __init__(self, hidden: int, config: AttentionMixer, rope_theta: float, eps: float,
                 kv_source: int | None = None) -> None:
        super().__init__()
        self.config, self.kv_source = config, kv_source
        # Whether forward stores its keys/values in ctx.shared_kv for blocks that share them.  StarLM
        # turns it off where no block reads them, so that a compiled block does not depend on ctx.layer.
        self.publishes_kv = True
        h, kv, hd = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(hidden, h * hd, bias=False)
        if kv_source is None:
            self.k_proj = nn.Linear(hidden, kv * hd, bias=False)
            self.v_proj = nn.Linear(hidden, kv * hd, bias=False)
        self.out_proj = nn.Linear(h * hd, hidden, bias=False)
        if config.qk_norm:
            self.q_layernorm = RMSNorm(hd, eps)
            if kv_source is None:
                self.k_layernorm = RMSNorm(hd, eps)
        inv_freq = 1.0 / (rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._rotary_cache: tuple[tuple, Tensor, Tensor] | None = None

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State | None:
        if self.kv_source is not None:
            return None
        shape = (batch, self.config.num_kv_heads, 0, self.config.head_dim)
        empty = torch.zeros(shape, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}

    def _rotary_table(self, start: int, length: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos and sin of the rotary angles at positions start..start+length-1.  The last table is
        kept: training calls this twice per block per step with the same positions, and at proxy
        width these few small ops cost about as much as the projections they rotate.  Not kept
        under inference mode (its tensors could not be saved for a later backward) or compiling."""
        key = (start, length, dtype, device)
        cached = self._rotary_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        cos, sin = self.rotary_angles(torch.arange(start, start + length, device=device), dtype)
        if not torch.is_inference_mode_enabled() and not torch.compiler.is_compiling():
            self._rotary_cache = (key, cos, sin)
        return cos, sin

    def rotary_angles(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin of the rotary angles at `positions` (a tensor, so that an exported decode
        step can take its position as an input)."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Queries, keys and values of x (batch, time, hidden), each (batch, heads, time, head_dim),
        queries and keys normalised (QK-norm) and rotated; no keys or values where the block reads
        another block's."""
        cfg = self.config
        batch, time, _ = x.shape

        def rotate(t: Tensor) -> Tensor:
            first, second = t.chunk(2, dim=-1)
            return t * cos + torch.cat([-second, first], dim=-1) * sin

        q = self.q_proj(x).view(batch, time, cfg.num_heads, cfg.head_dim)
        if cfg.qk_norm:
            q = self.q_layernorm(q)
        q = rotate(q.transpose(1, 2))
        if self.kv_source is not None:
            return q, None, None
        k = self.k_proj(x).view(batch, time, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            k = self.k_layernorm(k)
        v = self.v_proj(x).view(batch, time, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        return q, rotate(k.transpose(1, 2)), v

    def forward(self, x: Tensor, state: State | None = None, ctx: Context | None = None) -> Tensor:
        ctx = ctx or Context()
        cfg = self.config
        batch, time, _ = x.shape
        q, k, v = self.project(x, *self._rotary_table(ctx.position, time, x.dtype, x.device))
        if k is not None and v is not None:
            if state is not None:
                k = torch.cat([state["k"].to(k.dtype), k], dim=2)
                v = torch.cat([state["v"].to(v.dtype), v], dim=2)
                keep = k.shape[2] if cfg.window == 0 else min(k.shape[2], cfg.window)
                cache_dtype = state["k"].dtype  # keep the cache in the dtype it was created with
                state["k"] = k[:, :, k.shape[2] - keep:].to(cache_dtype)
                state["v"] = v[:, :, v.shape[2] - keep:].to(cache_dtype)
            if self.publishes_kv:
                ctx.shared_kv[ctx.layer] = (k, v)
        else:
            k, v = ctx.shared_kv[self.kv_source]
        gqa = cfg.num_kv_heads != cfg.num_heads
        if (k.shape[2] == time and cfg.window == 0 and time <= self.matmul_attention_max
                and torch.compiler.is_compiling()):
            out = _causal_attention(q, k, v)
        elif k.shape[2] == time and cfg.window == 0:
            # Keys are exactly the queries' own positions: plain causal attention.  is_causal lets the
            # fused kernel skip the masked upper half instead of multiplying it and masking after.
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            mask = self._mask(time, k.shape[2], ctx.position, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.out_proj(out.transpose(1, 2).reshape(batch, time, cfg.num_heads * cfg.head_dim))

    def _mask(self, queries: int, keys: int, position: int, device: torch.device) -> Tensor:
        query_pos = torch.arange(position, position + queries, device=device)
        key_pos = torch.arange(position + queries - keys, position + queries, device=device)
        allowed = key_pos[None, :] <= query_pos[:, None]
        if self.config.window:
            allowed &= key_pos[None, :] > query_pos[:, None] - self.config.window
        return allowed

    def step(self, x: Tensor, state: State | None, ctx: Context | None = None) -> Tensor:
        return self.forward(x.unsqueeze(1), state, ctx).squeeze(1)


class Recurrence(nn.Module):
    """Gated linear attention: S_t = g_t·S_{t-1} + k_tᵀv_t, y_t = q_t·S_t, with a per-head scalar
    decay g_t ∈ (0, 1) computed from the input.  Training runs chunk-parallel (quadratic only inside
    a chunk); decoding keeps the (head_dim × head_dim) state per head, whatever the context."""

    chunk = 64

    @classmethod
    def from_block(cls, config: ArchConfig, block: BlockConfig) -> Recurrence:
        """The operator for a block whose mixer names this class (star.arch: `operator`)."""
        return cls(config.hidden_size, block.mixer, config.norm_eps)

    def __init__(self, hidden: int, config: RecurrenceMixer, eps: float) -> None:
        super().__init__()
        self.config = config
        inner = config.num_heads * config.head_dim
        self.q_proj = nn.Linear(hidden, inner, bias=False)
        self.k_proj = nn.Linear(hidden, inner, bias=False)
        self.v_proj = nn.Linear(hidden, inner, bias=False)
        self.gate_proj = nn.Linear(hidden, config.num_heads, bias=True)
        self.out_norm = RMSNorm(config.head_dim, eps)
        self.out_proj = nn.Linear(inner, hidden, bias=False)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        hd = self.config.head_dim
        return {"S": torch.zeros(batch, self.config.num_heads, hd, hd, device=device, dtype=torch.float32)}

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        batch, time, _ = x.shape
        h, hd = self.config.num_heads, self.config.head_dim
        q = self.q_proj(x).view(batch, time, h, hd).transpose(1, 2).float() * hd**-0.5
        k = self.k_proj(x).view(batch, time, h, hd).transpose(1, 2).float()
        v = self.v_proj(x).view(batch, time, h, hd).transpose(1, 2).float()
        log_decay = F.logsigmoid(self.gate_proj(x).float()).transpose(1, 2)  # (batch, heads, time)
        return q, k, v, log_decay

    def _output(self, y: Tensor, dtype: torch.dtype) -> Tensor:
        batch, _, time, _ = y.shape
        y = self.out_norm(y.to(dtype)).transpose(1, 2).reshape(batch, time, -1)
        return self.out_proj(y)

    def forward(self, x: Tensor, state: State | None = None, ctx: Context | None = None) -> Tensor:
        q, k, v, log_decay = self._project(x)
        batch, heads, time, hd = q.shape
        s = state["S"] if state is not None else q.new_zeros(batch, heads, hd, hd)
        outputs = []
        for start in range(0, time, self.chunk):
            qc, kc, vc = (t[:, :, start:start + self.chunk] for t in (q, k, v))
            a = torch.cumsum(log_decay[:, :, start:start + self.chunk], dim=-1)  # log decay since chunk start
            n = a.shape[-1]
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            # Mask before exp: exp of the masked (positive) differences would overflow.
            decay = torch.exp((a[..., :, None] - a[..., None, :]).masked_fill(~causal, float("-inf")))
            intra = ((qc @ kc.transpose(-1, -2)) * decay) @ vc
            inter = (qc * torch.exp(a)[..., None]) @ s
            outputs.append(intra + inter)
            to_end = torch.exp(a[..., -1:] - a)[..., None]  # decay from each token to chunk end
            s = torch.exp(a[..., -1])[..., None, None] * s + (kc * to_end).transpose(-1, -2) @ vc
        if state is not None:
            state["S"] = s
        return self._output(torch.cat(outputs, dim=2), x.dtype)

    def step(self, x: Tensor, state: State, ctx: Context | None = None) -> Tensor:
        q, k, v, log_decay = self._project(x.unsqueeze(1))
        s = torch.exp(log_decay)[..., None] * state["S"] + k.transpose(-1, -2) @ v
        state["S"] = s
        return self._output(q @ s, x.dtype).squeeze(1)


# --------------------------------------------------------------------------------------------------
# Channel mixers
# --------------------------------------------------------------------------------------------------


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, config: SwiGLUFFN) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, config.hidden, bias=False)
        self.w3 = nn.Linear(hidden, config.hidden, bias=False)
        self.w2 = nn.Linear(config.hidden, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MLP(nn.Module):
    def __init__(self, hidden: int, config: MLPFFN) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, config.hidden, bias=False)
        self.w2 = nn.Linear(config.hidden, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.gelu(self.w1(x), approximate="tanh"))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """One deterministic initialisation for every operator (normal(0, std) matrices, unit norms)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Embedding):
            nn.init.normal_(sub.weight, std=std)
            if getattr(sub, "bias", None) is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Conv1d):
            nn.init.normal_(sub.weight, std=1.0 / math.sqrt(sub.kernel_size[0]))
        elif isinstance(sub, RMSNorm):
            nn.init.ones_(sub.weight)
    for sub in module.modules():
        if isinstance(sub, Recurrence):
            nn.init.constant_(sub.gate_proj.bias, 3.0)  # start with slow decay (g ≈ 0.95): long memory
        if isinstance(sub, LongConv):
            nn.init.zeros_(sub.decay)
