"""The LFM2 family: 16 blocks, each a short convolution or a GQA block, each followed by a SwiGLU.

Sizes are global (one width, FFN ratio, KV-head count and kernel for the whole model), so every
genome is a transformers `Lfm2Config` (or a `Qwen3Config` when no block is a convolution).

Genome (20 genes): width, ffn_ratio, kv_heads, conv_kernel, then block0.mixer .. block15.mixer with
0 = short_conv, 1 = attention.  A global gene that no block uses (the kernel of an all-attention
model, the KV heads of an all-convolution one) is canonically 0.
"""

from __future__ import annotations

from star.arch import ArchConfig, AttentionMixer, BlockConfig, ShortConvMixer, SwiGLUFFN, ffn_hidden
from star.errors import StarError
from star.genome import Gene, Genome, SearchSpace, index_of

WIDTHS = (1024, 1536, 2048)
FFN_RATIOS = (3.0, 3.5, 4.0, 4.5, 5.0)
KV_HEADS = (2, 4, 8)
KERNELS = (2, 3, 4, 5)
MIXERS = ("short_conv", "attention")
HEAD_DIM = 64
NUM_BLOCKS = 16
FIXED = {"vocab_size": 65536, "norm_eps": 1e-5, "rope_theta": 1_000_000.0, "tie_embeddings": True,
         "max_position_embeddings": 128_000}


class Lfm2Space(SearchSpace):
    """LFM2 family: 16 blocks of short conv or GQA (+SwiGLU); global width, FFN ratio, KV heads, kernel."""

    name = "lfm2"
    global_genes = (Gene("width", len(WIDTHS)), Gene("ffn_ratio", len(FFN_RATIOS)),
                    Gene("kv_heads", len(KV_HEADS)), Gene("conv_kernel", len(KERNELS)))
    block_genes = (Gene("mixer", len(MIXERS)),)
    num_blocks = NUM_BLOCKS

    def build(self, genome: Genome) -> ArchConfig:
        (w, r, kv, k), slots = self.split(genome)
        width = WIDTHS[w]
        # Every KV choice divides every head count (16, 24, 32), so no capping is needed.
        mixers = (ShortConvMixer(kernel=KERNELS[k]),
                  AttentionMixer(num_heads=width // HEAD_DIM, num_kv_heads=KV_HEADS[kv], head_dim=HEAD_DIM,
                                 qk_norm=True, window=0))
        ffn = SwiGLUFFN(hidden=ffn_hidden(width, FFN_RATIOS[r]))
        blocks = tuple(BlockConfig(mixer=mixers[slot[0]], ffn=ffn) for slot in slots)
        return ArchConfig(hidden_size=width, blocks=blocks, name=self.name, **FIXED)

    def _encode(self, config: ArchConfig) -> Genome:
        if len(config.blocks) != NUM_BLOCKS:
            raise StarError(f"config {config.name!r} has {len(config.blocks)} blocks; search space 'lfm2' "
                            f"has exactly {NUM_BLOCKS}")
        width = index_of(config.hidden_size, WIDTHS, "hidden_size")
        kinds = tuple(index_of(b.mixer.kind, MIXERS, f"block {i} mixer") for i, b in enumerate(config.blocks))
        first = config.blocks[0].ffn
        if not isinstance(first, SwiGLUFFN):
            raise StarError(f"block 0 feed-forward is {first!r}; search space 'lfm2' needs a SwiGLU in every block")
        hiddens = [ffn_hidden(config.hidden_size, ratio) for ratio in FFN_RATIOS]
        ratio = index_of(first.hidden, hiddens, f"SwiGLU hidden size at width {config.hidden_size}:")
        attention = [b.mixer for b in config.blocks if isinstance(b.mixer, AttentionMixer)]
        convs = [b.mixer for b in config.blocks if isinstance(b.mixer, ShortConvMixer)]
        kv = index_of(attention[0].num_kv_heads, KV_HEADS, "num_kv_heads") if attention else 0
        kernel = index_of(convs[0].kernel, KERNELS, "short_conv kernel") if convs else 0
        return (width, ratio, kv, kernel, *kinds)


SPACE = Lfm2Space()
