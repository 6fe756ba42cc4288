"""Architecture configs and their exact, analytic accounting.

An `ArchConfig` is the readable, JSON-serialisable description of one model: global sizes plus one
`BlockConfig` per block (a token mixer, an optional channel mixer, and sharing choices).  Nothing here
imports torch, so the searcher can account for thousands of candidates without building any of them.

Accounting conventions (see docs/accounting.md):
- params: every trainable scalar, counted once even when shared between blocks.
- cache bytes: what a decoder keeps between tokens (KV cache, convolution windows, recurrent states),
  at a given context length, in `dtype_bytes` per value, except recurrent states, which the module
  always keeps in fp32 (4 bytes per value).
- FLOPs: 2 per multiply-accumulate of matrix products and convolutions, 1 per elementwise gate
  multiply; norms, softmax, activations and rotary embeddings are left out (they are a rounding
  error next to the products at every size we search).  `flops(tokens, context)` is the cost of
  `tokens` new tokens when `context` tokens are already cached: prefill is `flops(T, 0)`,
  one decode step at context C is `flops(1, C)`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from star.errors import StarError
from star.validate import parse_json
from star.validate import show as _show

# Upper limits on sizes, far above any model this project targets (LFM2-1.2B: width 2048, vocab 65,536,
# 16 blocks, 32 heads of 64) but low enough that accounting stays exact in float64 and a typo such as
# an extra zero is refused before anything is allocated.
MAX_WIDTH = 65_536
MAX_VOCAB = 2**21
MAX_BLOCKS = 1_024
MAX_HEADS = 1_024
MAX_HEAD_DIM = 4_096
MAX_FFN = 2**20
MAX_POSITIONS = 2**24

# --------------------------------------------------------------------------------------------------
# Token mixers: one class per kind, and that class is the kind's whole registry entry.  Besides its
# settings and exact accounting it names, as class attributes, its layout letter, the operator class
# that runs it (in star.operators), the transformers layer type it exports as (None: not exportable)
# and, in `profiled`, the settings a latency profile times at a width.  Adding a kind means one class
# here, listed in MIXERS, one operator class, and their tests.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShortConvMixer:
    """LFM2's double-gated short convolution: in_proj → (B, C, x); y = out_proj(C ⊙ conv(B ⊙ x))."""

    kind: ClassVar[str] = "short_conv"
    letter: ClassVar[str] = "C"
    operator: ClassVar[str | None] = "ShortConv"
    hf_layer: ClassVar[str | None] = "conv"
    kernel: int = 3

    @classmethod
    def profiled(cls, width: int) -> list[ShortConvMixer]:
        """The settings a latency profile times at `width` (LFM2's kernel)."""
        return [cls(kernel=3)]

    def validate(self, hidden: int) -> None:
        _check(1 <= self.kernel <= 64, f"short_conv kernel must be in 1..64, got {self.kernel}")

    def params(self, hidden: int, owns_kv: bool = True) -> int:
        return 4 * hidden * hidden + hidden * self.kernel

    def cache_values(self, hidden: int, context: int) -> int:
        return (self.kernel - 1) * hidden

    def flops(self, hidden: int, tokens: int, context: int) -> int:
        per_token = 2 * hidden * 3 * hidden + hidden + 2 * hidden * self.kernel + hidden + 2 * hidden * hidden
        return tokens * per_token


@dataclass(frozen=True)
class LongConvMixer:
    """Gated long convolution (H3/Hyena-like): a causal depthwise filter of `kernel` taps with a
    learned per-channel exponential decay, between the same two multiplicative gates as short_conv."""

    kind: ClassVar[str] = "long_conv"
    letter: ClassVar[str] = "L"
    operator: ClassVar[str | None] = "LongConv"
    hf_layer: ClassVar[str | None] = None
    kernel: int = 128

    @classmethod
    def profiled(cls, width: int) -> list[LongConvMixer]:
        """The settings a latency profile times at `width`: the STAR space's kernels of 64, 128 and 256
        taps.  The filter's taps, not the projections, set its time where the runtime runs it outside
        a fast kernel (ExecuTorch: 35 ms for 128 taps over 512 tokens at width 128), and a profile
        that timed 128 taps only predicted proxies with several 256-tap filters 20-22% fast."""
        return [cls(kernel=kernel) for kernel in (64, 128, 256)]

    def validate(self, hidden: int) -> None:
        _check(2 <= self.kernel <= 8192, f"long_conv kernel must be in 2..8192, got {self.kernel}")

    def params(self, hidden: int, owns_kv: bool = True) -> int:
        return 4 * hidden * hidden + hidden * self.kernel + hidden

    def cache_values(self, hidden: int, context: int) -> int:
        return (self.kernel - 1) * hidden

    def flops(self, hidden: int, tokens: int, context: int) -> int:
        per_token = 2 * hidden * 3 * hidden + hidden + 2 * hidden * self.kernel + hidden + 2 * hidden * hidden
        return tokens * per_token


@dataclass(frozen=True)
class AttentionMixer:
    """Grouped-query attention with RoPE, optional QK-norm and optional sliding window (0 = full)."""

    kind: ClassVar[str] = "attention"
    letter: ClassVar[str] = "A"
    operator: ClassVar[str | None] = "Attention"
    hf_layer: ClassVar[str | None] = "full_attention"
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int = 64
    qk_norm: bool = True
    window: int = 0

    @classmethod
    def profiled(cls, width: int) -> list[AttentionMixer]:
        """The settings a latency profile times at `width`: heads of 64 with 2 and 8 KV heads; from
        width 1024 Qwen3's heads of 128 (twice the width in queries); up to width 256 the calibration
        proxies' heads of 32 with 1 and 2 KV heads."""
        heads = max(1, width // 64)
        out = [cls(num_heads=heads, num_kv_heads=kv, head_dim=64) for kv in sorted({min(2, heads), min(8, heads)})]
        if width >= 1024:
            out.append(cls(num_heads=heads, num_kv_heads=8, head_dim=128))
        if width <= 256:
            out += [cls(num_heads=width // 32, num_kv_heads=kv, head_dim=32) for kv in (1, 2)]
        return out

    def validate(self, hidden: int) -> None:
        _check(1 <= self.num_heads <= MAX_HEADS, f"attention num_heads must be in 1..{MAX_HEADS}, got {self.num_heads}")
        _check(2 <= self.head_dim <= MAX_HEAD_DIM and self.head_dim % 2 == 0,
               f"attention head_dim must be even and in 2..{MAX_HEAD_DIM} (RoPE), got {self.head_dim}")
        _check(self.num_kv_heads >= 1 and self.num_heads % self.num_kv_heads == 0,
               f"attention num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        _check(0 <= self.window <= MAX_POSITIONS,
               f"attention window must be in 0..{MAX_POSITIONS} (0 = full), got {self.window}")

    def params(self, hidden: int, owns_kv: bool = True) -> int:
        q_and_out = 2 * hidden * self.num_heads * self.head_dim
        kv = 2 * hidden * self.num_kv_heads * self.head_dim if owns_kv else 0
        norms = (2 if owns_kv else 1) * self.head_dim if self.qk_norm else 0
        return q_and_out + kv + norms

    def attended(self, position: int) -> int:
        """Keys seen by the query at 0-based `position`."""
        return position + 1 if self.window == 0 else min(position + 1, self.window)

    def cache_values(self, hidden: int, context: int) -> int:
        kept = context if self.window == 0 else min(context, self.window)
        return 2 * self.num_kv_heads * self.head_dim * kept

    def flops(self, hidden: int, tokens: int, context: int, owns_kv: bool = True) -> int:
        proj_out = self.num_heads + (2 * self.num_kv_heads if owns_kv else 0)
        projections = tokens * (2 * hidden * proj_out * self.head_dim + 2 * self.num_heads * self.head_dim * hidden)
        keys = _sum_attended(context, tokens, self.window)
        return projections + 4 * self.num_heads * self.head_dim * keys


@dataclass(frozen=True)
class RecurrenceMixer:
    """Gated linear attention: a per-head scalar decay gate and a constant-size (head_dim²) state."""

    kind: ClassVar[str] = "recurrence"
    letter: ClassVar[str] = "R"
    operator: ClassVar[str | None] = "Recurrence"
    hf_layer: ClassVar[str | None] = None
    num_heads: int = 4
    head_dim: int = 32

    @classmethod
    def profiled(cls, width: int) -> list[RecurrenceMixer]:
        """The settings a latency profile times at `width`: heads of 64; up to width 256 also the
        calibration proxies' heads of 32.  With one setting per width every row of a unit's fit had
        the same FLOPs and bytes, so the fit could not tell how time follows them: an ExecuTorch
        quick profile timed 2 heads of 64 at width 128 and predicted the proxies' 4 heads of 32 at
        0.128 ms a step, while a proxy with nine of them decoded 0.76 ms faster than predicted
        (2026-12-07, docs/latency.md)."""
        out = [cls(num_heads=max(1, width // 64), head_dim=64)]
        if width <= 256:
            out.append(cls(num_heads=max(1, width // 32), head_dim=32))
        return out

    def validate(self, hidden: int) -> None:
        _check(1 <= self.num_heads <= MAX_HEADS and 1 <= self.head_dim <= MAX_HEAD_DIM,
               f"recurrence needs num_heads in 1..{MAX_HEADS} and head_dim in 1..{MAX_HEAD_DIM}, "
               f"got {self.num_heads}, {self.head_dim}")

    def params(self, hidden: int, owns_kv: bool = True) -> int:
        inner = self.num_heads * self.head_dim
        return 4 * hidden * inner + hidden * self.num_heads + self.num_heads + self.head_dim

    def cache_values(self, hidden: int, context: int) -> int:
        return self.num_heads * self.head_dim * self.head_dim

    def flops(self, hidden: int, tokens: int, context: int) -> int:
        inner = self.num_heads * self.head_dim
        projections = 2 * hidden * (3 * inner + self.num_heads) + 2 * inner * hidden
        state = 3 * self.num_heads * self.head_dim * self.head_dim  # decay gate (1) + outer-product accumulate (2)
        readout = 2 * self.num_heads * self.head_dim * self.head_dim
        return tokens * (projections + state + readout)


@dataclass(frozen=True)
class IdentityMixer:
    """No token mixing: the block is only its channel mixer (or nothing), which lets depth vary."""

    kind: ClassVar[str] = "identity"
    letter: ClassVar[str] = "-"
    operator: ClassVar[str | None] = None  # the block runs only its channel mixer
    hf_layer: ClassVar[str | None] = None

    @classmethod
    def profiled(cls, width: int) -> list[IdentityMixer]:
        """Nothing to time: the block's only cost is its channel mixer's."""
        return []

    def validate(self, hidden: int) -> None:
        pass

    def params(self, hidden: int, owns_kv: bool = True) -> int:
        return 0

    def cache_values(self, hidden: int, context: int) -> int:
        return 0

    def flops(self, hidden: int, tokens: int, context: int) -> int:
        return 0


Mixer = ShortConvMixer | LongConvMixer | AttentionMixer | RecurrenceMixer | IdentityMixer
MIXERS: dict[str, type] = {
    m.kind: m for m in (ShortConvMixer, AttentionMixer, LongConvMixer, RecurrenceMixer, IdentityMixer)
}

# One letter per mixer kind, for a layout written as text ("CCAC..."): the command line and the report
# both write layouts, and with one map they always agree.
LAYOUT_LETTERS: dict[str, str] = {kind: mixer.letter for kind, mixer in MIXERS.items()}


def layout_letter(kind: str) -> str:
    """The letter of a mixer kind in a layout; '?' for a kind this version does not know, as a run
    folder written by another version may hold."""
    return LAYOUT_LETTERS.get(kind, "?")

# --------------------------------------------------------------------------------------------------
# Channel mixers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwiGLUFFN:
    """w2(silu(w1 x) ⊙ w3 x); `hidden` is the effective width (after LFM2's rounding, if any)."""

    kind: ClassVar[str] = "swiglu"
    hidden: int = 512

    def validate(self, width: int) -> None:
        _check(1 <= self.hidden <= MAX_FFN, f"swiglu hidden must be in 1..{MAX_FFN}, got {self.hidden}")

    def params(self, width: int) -> int:
        return 3 * width * self.hidden

    def flops(self, width: int, tokens: int) -> int:
        return tokens * (6 * width * self.hidden + self.hidden)


@dataclass(frozen=True)
class MLPFFN:
    """w2(gelu(w1 x)): the plain Transformer feed-forward."""

    kind: ClassVar[str] = "mlp"
    hidden: int = 512

    def validate(self, width: int) -> None:
        _check(1 <= self.hidden <= MAX_FFN, f"mlp hidden must be in 1..{MAX_FFN}, got {self.hidden}")

    def params(self, width: int) -> int:
        return 2 * width * self.hidden

    def flops(self, width: int, tokens: int) -> int:
        return tokens * 4 * width * self.hidden


FFN = SwiGLUFFN | MLPFFN
FFNS: dict[str, type] = {f.kind: f for f in (SwiGLUFFN, MLPFFN)}


def ffn_hidden(width: int, ratio: float, multiple_of: int = 256) -> int:
    """A feed-forward width of `ratio`·`width`, rounded up to a multiple of `multiple_of` (as LFM2 rounds)."""
    return multiple_of * math.ceil(ratio * width / multiple_of)


def lfm2_ffn_hidden(intermediate_size: int, multiplier: float = 1.0, multiple_of: int = 256) -> int:
    """LFM2's rule for the effective SwiGLU width: int(2/3·ff), times the multiplier, rounded up to a
    multiple of `multiple_of` (6656 → 4608, 10240 → 6912, 12288 → 8192)."""
    hidden = int(multiplier * int(2 * intermediate_size / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


# --------------------------------------------------------------------------------------------------
# Blocks and whole architectures
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockConfig:
    """One block: x += mixer(norm(x)); x += ffn(norm(x)).

    share_weights_with: index of an earlier block whose token-mixer weights this block reuses
        (STAR's featurizer/weight sharing; the mixers must be identical).
    share_kv_with: index of an earlier attention block whose keys and values this attention block
        reads instead of computing its own (cross-layer KV-cache sharing: fewer params, no cache).
    """

    mixer: Mixer
    ffn: FFN | None = None
    share_weights_with: int | None = None
    share_kv_with: int | None = None

    @property
    def owns_kv(self) -> bool:
        return self.share_kv_with is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mixer": {"kind": self.mixer.kind, **asdict(self.mixer)},
            "ffn": None if self.ffn is None else {"kind": self.ffn.kind, **asdict(self.ffn)},
            "share_weights_with": self.share_weights_with,
            "share_kv_with": self.share_kv_with,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BlockConfig:
        _check(isinstance(data, dict), f"{where}: expected an object, got {type(data).__name__}")
        allowed = {"mixer", "ffn", "share_weights_with", "share_kv_with"}
        _no_unknown_keys(data, allowed, where)
        _check("mixer" in data, f"{where}: missing key 'mixer'")
        mixer = _typed_from_dict(data["mixer"], MIXERS, f"{where}.mixer")
        ffn_data = data.get("ffn")
        ffn = None if ffn_data is None else _typed_from_dict(ffn_data, FFNS, f"{where}.ffn")
        share_w = _optional_int(data.get("share_weights_with"), f"{where}.share_weights_with")
        share_kv = _optional_int(data.get("share_kv_with"), f"{where}.share_kv_with")
        return cls(mixer=mixer, ffn=ffn, share_weights_with=share_w, share_kv_with=share_kv)


@dataclass(frozen=True)
class ArchConfig:
    """A whole decoder-only language model. The JSON form is the native export format."""

    hidden_size: int
    vocab_size: int
    blocks: tuple[BlockConfig, ...]
    name: str = "custom"
    norm_eps: float = 1e-5
    rope_theta: float = 1_000_000.0
    tie_embeddings: bool = True
    max_position_embeddings: int = 128_000

    # ---- validation ----------------------------------------------------------------------------

    def validate(self) -> ArchConfig:
        """Raise StarError naming the first problem; return self so calls can chain."""
        _check(isinstance(self.hidden_size, int) and 1 <= self.hidden_size <= MAX_WIDTH,
               f"hidden_size must be an integer in 1..{MAX_WIDTH}, got {_show(self.hidden_size)}")
        _check(isinstance(self.vocab_size, int) and 2 <= self.vocab_size <= MAX_VOCAB,
               f"vocab_size must be an integer in 2..{MAX_VOCAB}, got {_show(self.vocab_size)}")
        _check(len(self.blocks) >= 1, "an architecture needs at least one block")
        _check(len(self.blocks) <= MAX_BLOCKS,
               f"an architecture has at most {MAX_BLOCKS} blocks, got {len(self.blocks)}")
        _check(isinstance(self.max_position_embeddings, int) and 1 <= self.max_position_embeddings <= MAX_POSITIONS,
               f"max_position_embeddings must be in 1..{MAX_POSITIONS}, got {_show(self.max_position_embeddings)}")
        _check(math.isfinite(self.norm_eps) and 0 < self.norm_eps < 1,
               f"norm_eps must be in (0, 1), got {self.norm_eps}")
        _check(math.isfinite(self.rope_theta) and 0 < self.rope_theta <= 1e12,
               f"rope_theta must be in (0, 1e12], got {self.rope_theta}")
        _check(isinstance(self.name, str) and len(self.name) <= 200, "name must be a string of at most 200 characters")
        for i, block in enumerate(self.blocks):
            where = f"block {i}"
            _check(isinstance(block.mixer, tuple(MIXERS.values())), f"{where}: unknown mixer {block.mixer!r}")
            try:
                block.mixer.validate(self.hidden_size)
                if block.ffn is not None:
                    block.ffn.validate(self.hidden_size)
            except StarError as err:
                raise StarError(f"{where}: {err}") from None
            if block.share_weights_with is not None:
                j = block.share_weights_with
                _check(0 <= j < i, f"{where}: share_weights_with={j} must name an earlier block")
                source = self.blocks[j]
                _check(source.mixer == block.mixer,
                       f"{where}: shares weights with block {j} but their mixers differ")
                _check(source.share_weights_with is None,
                       f"{where}: block {j} itself shares weights; point at block {source.share_weights_with}")
                _check(block.share_kv_with is None and source.share_kv_with is None,
                       f"{where}: weight sharing cannot be combined with KV sharing")
            if block.share_kv_with is not None:
                j = block.share_kv_with
                _check(isinstance(block.mixer, AttentionMixer), f"{where}: only attention blocks can share KV")
                _check(0 <= j < i, f"{where}: share_kv_with={j} must name an earlier block")
                source = self.blocks[j]
                _check(isinstance(source.mixer, AttentionMixer), f"{where}: KV source block {j} is not attention")
                _check(source.share_kv_with is None,
                       f"{where}: KV source block {j} itself reads another block's KV")
                src, me = source.mixer, block.mixer
                _check((src.num_kv_heads, src.head_dim, src.window, src.qk_norm)
                       == (me.num_kv_heads, me.head_dim, me.window, me.qk_norm),
                       f"{where}: KV shape/window differs from source block {j}")
        return self

    # ---- accounting ----------------------------------------------------------------------------

    @property
    def layer_types(self) -> list[str]:
        return [b.mixer.kind for b in self.blocks]

    def embedding_params(self) -> int:
        tables = 1 if self.tie_embeddings else 2
        return tables * self.vocab_size * self.hidden_size

    def block_params(self, index: int) -> int:
        block, d = self.blocks[index], self.hidden_size
        total = 0
        if block.mixer.kind != "identity":
            total += d  # pre-mixer RMSNorm
            if block.share_weights_with is None:
                total += block.mixer.params(d, owns_kv=block.owns_kv)
        if block.ffn is not None:
            total += d + block.ffn.params(d)
        return total

    def params(self) -> int:
        return self.embedding_params() + self.hidden_size + sum(self.block_params(i) for i in range(len(self.blocks)))

    def non_embedding_params(self) -> int:
        return self.params() - self.embedding_params()

    def cache_bytes(self, context: int, dtype_bytes: int = 2) -> int:
        """Decode-state bytes after `context` tokens; recurrent states are always kept in fp32 (4 bytes)."""
        total = 0
        for block in self.blocks:
            if block.owns_kv:
                value_bytes = 4 if isinstance(block.mixer, RecurrenceMixer) else dtype_bytes
                total += block.mixer.cache_values(self.hidden_size, context) * value_bytes
        return total

    def flops(self, tokens: int, context: int = 0) -> int:
        d = self.hidden_size
        total = 2 * d * self.vocab_size * tokens  # LM head (the embedding lookup is free)
        for block in self.blocks:
            if isinstance(block.mixer, AttentionMixer):
                total += block.mixer.flops(d, tokens, context, owns_kv=block.owns_kv)
            else:
                total += block.mixer.flops(d, tokens, context)
            if block.ffn is not None:
                total += block.ffn.flops(d, tokens)
        return total

    # ---- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "star-arch",
            "version": 1,
            "name": self.name,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "tie_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "blocks": [b.to_dict() for b in self.blocks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        _check(isinstance(data, dict), f"config must be a JSON object, got {type(data).__name__}")
        allowed = {"format", "version", "name", "hidden_size", "vocab_size", "norm_eps", "rope_theta",
                   "tie_embeddings", "max_position_embeddings", "blocks"}
        _no_unknown_keys(data, allowed, "config")
        _check(data.get("format", "star-arch") == "star-arch",
               f"config format is {data.get('format')!r}, expected 'star-arch'")
        for key in ("hidden_size", "vocab_size", "blocks"):
            _check(key in data, f"config: missing key {key!r}")
        blocks = data["blocks"]
        _check(isinstance(blocks, list), "config: 'blocks' must be a list")
        config = cls(
            hidden_size=_int(data["hidden_size"], "config.hidden_size"),
            vocab_size=_int(data["vocab_size"], "config.vocab_size"),
            blocks=tuple(BlockConfig.from_dict(b, f"blocks[{i}]") for i, b in enumerate(blocks)),
            name=_name(data.get("name", "custom")),
            norm_eps=_float(data.get("norm_eps", 1e-5), "config.norm_eps"),
            rope_theta=_float(data.get("rope_theta", 1_000_000.0), "config.rope_theta"),
            tie_embeddings=_bool(data.get("tie_embeddings", True), "config.tie_embeddings"),
            max_position_embeddings=_int(data.get("max_position_embeddings", 128_000),
                                         "config.max_position_embeddings"),
        )
        return config.validate()

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> ArchConfig:
        try:
            return cls.from_dict(parse_json(text, source))
        except StarError as err:
            message = str(err)
            raise StarError(message if message.startswith(source) else f"{source}: {message}") from None


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise StarError(message)


def _sum_attended(context: int, tokens: int, window: int) -> int:
    """Σ over new tokens j of the keys each attends to: positions context .. context+tokens-1."""
    first, last = context + 1, context + tokens  # keys attended if the window were unbounded
    if window == 0 or last <= window:
        return (first + last) * tokens // 2
    if first >= window:
        return window * tokens
    below = (first + window - 1) * (window - first) // 2  # positions whose count is still < window
    return below + window * (last - window + 1)


def _no_unknown_keys(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise StarError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _typed_from_dict(data: Any, registry: dict[str, type], where: str) -> Any:
    _check(isinstance(data, dict), f"{where}: expected an object with a 'kind'")
    kind = data.get("kind")
    _check(isinstance(kind, str) and kind in registry,
           f"{where}: unknown kind {_show(kind)} (known: {', '.join(registry)})")
    cls = registry[kind]
    names = {f.name: f for f in fields(cls)}
    _no_unknown_keys(data, set(names) | {"kind"}, where)
    values = {}
    for key, value in data.items():
        if key == "kind":
            continue
        if names[key].type in ("bool", bool):
            values[key] = _bool(value, f"{where}.{key}")
        else:
            values[key] = _int(value, f"{where}.{key}")
    return cls(**values)


def _int(value: Any, where: str) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool), f"{where} must be an integer, got {_show(value)}")
    return value


def _name(value: Any) -> str:
    _check(isinstance(value, str) and len(value) <= 200, f"config.name must be a string of at most 200 characters, "
                                                         f"got {_show(value)}")
    return value


def _optional_int(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _float(value: Any, where: str) -> float:
    _check(isinstance(value, int | float) and not isinstance(value, bool),
           f"{where} must be a number, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:
        raise StarError(f"{where} is too large: {_show(value)}") from None


def _bool(value: Any, where: str) -> bool:
    _check(isinstance(value, bool), f"{where} must be true or false, got {_show(value)}")
    return value
