"""Named reference architectures: the published LFM2 and Qwen3 shapes, and proxy-scale versions.

The LFM2 numbers are those of the official transformers configs (LiquidAI/LFM2-*); the Qwen3 ones are
the Transformer++ baselines (all GQA, QK-norm, SwiGLU).  The reference proxies keep the layouts at
width 64, LFM2-1.2B's proxy width (`star.scaling`), with a 512-token vocabulary so the suite can
train them in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from star.arch import ArchConfig, AttentionMixer, BlockConfig, ShortConvMixer, SwiGLUFFN, lfm2_ffn_hidden
from star.errors import StarError
from star.scaling import PROXY_HEAD_DIM

LFM2_ATTENTION_BLOCKS = (2, 5, 8, 10, 12, 14)


def lfm2_layout(num_blocks: int = 16) -> list[str]:
    """LFM2's 16-block layout: 10 short convolutions, GQA at blocks 2, 5, 8, 10, 12 and 14."""
    return ["attention" if i in LFM2_ATTENTION_BLOCKS else "short_conv" for i in range(num_blocks)]


def hybrid(name: str, hidden: int, heads: int, kv_heads: int, ffn_hidden: int, vocab: int, layout: list[str],
           kernel: int = 3, head_dim: int | None = None, norm_eps: float = 1e-5,
           max_positions: int = 128_000) -> ArchConfig:
    """A stack of short-conv and GQA blocks, each followed by a SwiGLU: the LFM2 family."""
    head_dim = head_dim or hidden // heads
    mixers = {
        "short_conv": ShortConvMixer(kernel=kernel),
        "attention": AttentionMixer(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, qk_norm=True),
    }
    blocks = tuple(BlockConfig(mixer=mixers[kind], ffn=SwiGLUFFN(hidden=ffn_hidden)) for kind in layout)
    return ArchConfig(hidden_size=hidden, vocab_size=vocab, blocks=blocks, name=name, norm_eps=norm_eps,
                      max_position_embeddings=max_positions).validate()


def _lfm2(name: str, hidden: int, heads: int, intermediate: int) -> ArchConfig:
    return hybrid(name, hidden, heads, 8, lfm2_ffn_hidden(intermediate), 65536, lfm2_layout())


def _qwen3(name: str, hidden: int, intermediate: int) -> ArchConfig:
    return hybrid(name, hidden, 16, 8, intermediate, 151936, ["attention"] * 28, head_dim=128,
                  norm_eps=1e-6, max_positions=40960)


PROXY = {"hidden": 64, "heads": 4, "kv_heads": 2, "ffn_hidden": 256, "vocab": 512}


def _proxy(name: str, layout: list[str]) -> ArchConfig:
    p = PROXY
    return hybrid(name, p["hidden"], p["heads"], p["kv_heads"], p["ffn_hidden"], p["vocab"], layout,
                  max_positions=4096, head_dim=PROXY_HEAD_DIM)


PRESETS: dict[str, tuple[str, Callable[[], ArchConfig]]] = {
    "lfm2-350m": ("LFM2-350M: 16 blocks (10 short conv + 6 GQA), width 1024",
                  lambda: _lfm2("lfm2-350m", 1024, 16, 6656)),
    "lfm2-700m": ("LFM2-700M: 16 blocks (10 short conv + 6 GQA), width 1536",
                  lambda: _lfm2("lfm2-700m", 1536, 24, 10240)),
    "lfm2-1.2b": ("LFM2-1.2B: 16 blocks (10 short conv + 6 GQA), width 2048",
                  lambda: _lfm2("lfm2-1.2b", 2048, 32, 12288)),
    "qwen3-0.6b": ("Qwen3-0.6B shape: Transformer++ (28 GQA + QK-norm), width 1024",
                   lambda: _qwen3("qwen3-0.6b", 1024, 3072)),
    "qwen3-1.7b": ("Qwen3-1.7B shape: Transformer++ (28 GQA + QK-norm), width 2048",
                   lambda: _qwen3("qwen3-1.7b", 2048, 6144)),
    "qwen3-16": ("Qwen3-1.7B shape in LFM2's depth: 16 GQA blocks, width 2048, 8 KV heads, SwiGLU 6144 "
                 "(the lfm2 space's Transformer++ baseline)",
                 lambda: hybrid("qwen3-16", 2048, 32, 8, 6144, 65536, ["attention"] * 16, head_dim=64)),
    "lfm2-proxy": ("LFM2 layout at proxy scale (width 64, vocab 512)",
                   lambda: _proxy("lfm2-proxy", lfm2_layout())),
    "attention-proxy": ("16 GQA blocks at proxy scale: the Transformer++ proxy",
                        lambda: _proxy("attention-proxy", ["attention"] * 16)),
    "conv-proxy": ("16 short-conv blocks at proxy scale: no attention at all",
                   lambda: _proxy("conv-proxy", ["short_conv"] * 16)),
}


def get_preset(name: str) -> ArchConfig:
    if name not in PRESETS:
        raise StarError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name][1]()
