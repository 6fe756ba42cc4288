"""The wider LIV family in STAR's spirit: 24 block slots over five token-mixer classes, with weight
and KV-cache sharing.

STAR encodes each LIV of its backbone as a class plus featurizer-sharing and feature-group-sharing
integers; here each slot has five genes:

- mixer: 0 short_conv, 1 attention, 2 long_conv, 3 recurrence, 4 identity;
- option, read per class: short_conv kernel (2, 3, 4, 5); attention (kv_heads, window) =
  (KV_HEADS[o // 3], WINDOWS[o % 3]), KV heads capped to divide the head count; long_conv kernel
  (64, 128, 256); recurrence and identity have none (canonically 0);
- ffn: none, swiglu ×2, ×3, ×4, ×4.5, mlp ×2, ×4 (hidden rounded up to a multiple of 256);
- share_weights: 1 = reuse the mixer weights of the nearest earlier block with an identical mixer
  that owns its weights, when that neither block reads another's KV;
- share_kv (attention): 1 = read the keys/values of the nearest earlier attention block that owns
  its KV and has the same (num_kv_heads, head_dim, window, qk_norm).  KV sharing wins over weight
  sharing when a slot asks for both.

A slot with an identity mixer and no FFN is empty: it is dropped, so depth varies from 1 to 24, and
canonical genomes keep empty slots at the end.  Sharing impossible at its slot is ignored (and
canonically 0).  Attention and recurrence heads are width / 64 with head_dim 64.
"""

from __future__ import annotations

from dataclasses import replace

from star.arch import (
    FFN,
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    IdentityMixer,
    LongConvMixer,
    Mixer,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
    ffn_hidden,
)
from star.errors import StarError
from star.genome import Gene, Genome, SearchSpace, index_of

WIDTHS = (512, 768, 1024, 1536, 2048)
MIXERS = ("short_conv", "attention", "long_conv", "recurrence", "identity")
SHORT_KERNELS = (2, 3, 4, 5)
KV_HEADS = (1, 2, 4, 8)
WINDOWS = (0, 512, 2048)
LONG_KERNELS = (64, 128, 256)
OPTIONS = {"short_conv": len(SHORT_KERNELS), "attention": len(KV_HEADS) * len(WINDOWS),
           "long_conv": len(LONG_KERNELS), "recurrence": 1, "identity": 1}
FFNS: tuple[tuple[str, float] | None, ...] = (
    None, ("swiglu", 2.0), ("swiglu", 3.0), ("swiglu", 4.0), ("swiglu", 4.5), ("mlp", 2.0), ("mlp", 4.0))
HEAD_DIM = 64
NUM_SLOTS = 24
EMPTY_SLOT = (MIXERS.index("identity"), 0, 0, 0, 0)
FIXED = {"vocab_size": 65536, "norm_eps": 1e-5, "rope_theta": 1_000_000.0, "tie_embeddings": True,
         "max_position_embeddings": 128_000}


def make_mixer(kind: int, option: int, width: int) -> Mixer:
    """The mixer of class `kind` with option `option` (wrapped to the class's option count)."""
    name = MIXERS[kind]
    option %= OPTIONS[name]
    heads = width // HEAD_DIM
    if name == "short_conv":
        return ShortConvMixer(kernel=SHORT_KERNELS[option])
    if name == "attention":
        wanted = KV_HEADS[option // len(WINDOWS)]
        kv = max(k for k in KV_HEADS if k <= wanted and heads % k == 0)
        return AttentionMixer(num_heads=heads, num_kv_heads=kv, head_dim=HEAD_DIM, qk_norm=True,
                              window=WINDOWS[option % len(WINDOWS)])
    if name == "long_conv":
        return LongConvMixer(kernel=LONG_KERNELS[option])
    if name == "recurrence":
        return RecurrenceMixer(num_heads=heads, head_dim=HEAD_DIM)
    return IdentityMixer()


def make_ffn(index: int, width: int) -> FFN | None:
    if FFNS[index] is None:
        return None
    kind, ratio = FFNS[index]
    hidden = ffn_hidden(width, ratio)
    return SwiGLUFFN(hidden=hidden) if kind == "swiglu" else MLPFFN(hidden=hidden)


def mixer_option(mixer: Mixer) -> int:
    """The option gene of a mixer (inverse of `make_mixer` for the space's own choices)."""
    if isinstance(mixer, ShortConvMixer):
        return index_of(mixer.kernel, SHORT_KERNELS, "short_conv kernel")
    if isinstance(mixer, AttentionMixer):
        kv = index_of(mixer.num_kv_heads, KV_HEADS, "attention num_kv_heads")
        return kv * len(WINDOWS) + index_of(mixer.window, WINDOWS, "attention window")
    if isinstance(mixer, LongConvMixer):
        return index_of(mixer.kernel, LONG_KERNELS, "long_conv kernel")
    return 0


def kv_source(blocks: list[BlockConfig], mixer: AttentionMixer) -> int | None:
    """Nearest earlier attention block that owns its KV and whose KV has the same shape and window."""
    key = (mixer.num_kv_heads, mixer.head_dim, mixer.window, mixer.qk_norm)
    for j in reversed(range(len(blocks))):
        src = blocks[j].mixer
        if (isinstance(src, AttentionMixer) and blocks[j].owns_kv
                and (src.num_kv_heads, src.head_dim, src.window, src.qk_norm) == key):
            return j
    return None


def weight_source(blocks: list[BlockConfig], mixer: Mixer) -> int | None:
    """Nearest earlier block with an identical mixer that owns its weights."""
    for j in reversed(range(len(blocks))):
        if blocks[j].mixer == mixer and blocks[j].share_weights_with is None:
            return j
    return None


class StarSpace(SearchSpace):
    """STAR-style LIV family: 24 slots of 5 mixer classes, options, FFN kind/size, weight and KV sharing."""

    name = "star"
    global_genes = (Gene("width", len(WIDTHS)),)
    block_genes = (Gene("mixer", len(MIXERS)), Gene("option", max(OPTIONS.values())), Gene("ffn", len(FFNS)),
                   Gene("share_weights", 2), Gene("share_kv", 2))
    num_blocks = NUM_SLOTS

    def build(self, genome: Genome) -> ArchConfig:
        (w,), slots = self.split(genome)
        width = WIDTHS[w]
        blocks: list[BlockConfig] = []
        for kind, option, ffn, share_weights, share_kv in slots:
            mixer = make_mixer(kind, option, width)
            block = BlockConfig(mixer=mixer, ffn=make_ffn(ffn, width))
            if isinstance(mixer, IdentityMixer):
                if block.ffn is not None:
                    blocks.append(block)
                continue
            if share_kv and isinstance(mixer, AttentionMixer):
                block = replace(block, share_kv_with=kv_source(blocks, mixer))
            source = weight_source(blocks, mixer) if share_weights and block.owns_kv else None
            if source is not None and blocks[source].owns_kv:
                block = replace(block, share_weights_with=source)
            blocks.append(block)
        if not blocks:  # all slots empty: the first slot becomes a short convolution
            blocks.append(BlockConfig(mixer=make_mixer(MIXERS.index("short_conv"), slots[0][1], width)))
        return ArchConfig(hidden_size=width, blocks=tuple(blocks), name=self.name, **FIXED)

    def _encode(self, config: ArchConfig) -> Genome:
        width = index_of(config.hidden_size, WIDTHS, "hidden_size")
        if len(config.blocks) > NUM_SLOTS:
            raise StarError(f"config {config.name!r} has {len(config.blocks)} blocks; search space 'star' "
                            f"has at most {NUM_SLOTS}")
        ffns = [make_ffn(i, config.hidden_size) for i in range(len(FFNS))]
        genes: list[int] = [width]
        for i, block in enumerate(config.blocks):
            if isinstance(block.mixer, IdentityMixer) and block.ffn is None:
                raise StarError(f"block {i} is empty (identity mixer, no FFN); search space 'star' drops such blocks")
            kind = index_of(block.mixer.kind, MIXERS, f"block {i} mixer")
            ffn = index_of(block.ffn, ffns, f"block {i} feed-forward at width {config.hidden_size}:")
            genes += [kind, mixer_option(block.mixer), ffn,
                      int(block.share_weights_with is not None), int(block.share_kv_with is not None)]
        genes += EMPTY_SLOT * (NUM_SLOTS - len(config.blocks))
        return tuple(genes)


SPACE = StarSpace()
