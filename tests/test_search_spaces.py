"""The lfm2 and star search spaces, their registry, and proxy scaling: real configs, real models."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from star import search_spaces
from star.arch import (
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    IdentityMixer,
    LongConvMixer,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
)
from star.errors import StarError
from star.export import hf_family
from star.genome import Genome, SearchSpace, genome_id
from star.model import StarLM
from star.presets import get_preset
from star.scaling import PROXY_FACTOR, to_proxy

# `from star import ...` keeps ruff's isort seeing first-party code (search_spaces/ is not under star/).
get_space, list_spaces = search_spaces.get_space, search_spaces.list_spaces
SPACES = ("lfm2", "star")
NUM_SLOTS = get_space("star").num_blocks
EMPTY_SLOT = (4, 0, 0, 0, 0)  # identity mixer, no FFN
LFM2_PRESETS = ("lfm2-350m", "lfm2-700m", "lfm2-1.2b")
LFM2_LAYOUT = (0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0)
seeds = st.integers(0, 2**32 - 1)


def same_architecture(a: ArchConfig, b: ArchConfig) -> bool:
    return replace(a, name=b.name) == b


def star_genome(*slots: tuple[int, ...], width: int = 2) -> Genome:
    """A star genome from its first slots (5 genes each); the other slots are empty."""
    genes = [width]
    for slot in slots:
        genes += slot
    return tuple(genes) + EMPTY_SLOT * (NUM_SLOTS - len(slots))


# ---- every space: 1,000 random genomes all the way to logits ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_random_genomes_decode_round_trip_and_run_at_proxy_scale(name):
    space = get_space(name)
    rng = random.Random(20260)
    torch.manual_seed(0)
    tokens = torch.randint(0, 512, (1, 16))
    seen_kinds, depths, weight_shares, kv_shares = set(), set(), 0, 0
    with torch.no_grad():
        for _ in range(1000):
            genome = space.sample(rng)
            config = space.decode(genome)
            assert config.validate() is config
            assert config.name == f"{name}-{genome_id(name, genome)}"
            back = space.encode(config)
            assert back == genome and genome_id(name, back) == genome_id(name, genome)
            logits = StarLM(to_proxy(config))(tokens)
            assert logits.shape == (1, 16, 512)
            assert torch.isfinite(logits).all()
            seen_kinds |= set(config.layer_types)
            depths.add(len(config.blocks))
            weight_shares += sum(b.share_weights_with is not None for b in config.blocks)
            kv_shares += sum(b.share_kv_with is not None for b in config.blocks)
    if name == "lfm2":
        assert seen_kinds == {"short_conv", "attention"} and depths == {16}
        assert weight_shares == kv_shares == 0
    else:  # the sampler reaches every corner of the star space
        assert seen_kinds == {"short_conv", "attention", "long_conv", "recurrence", "identity"}
        assert len(depths) > 3 and max(depths) == NUM_SLOTS
        assert weight_shares > 100 and kv_shares > 100


# ---- every space: repair, mutation, crossover ------------------------------------------------------


@pytest.mark.parametrize("name", SPACES)
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_repair_makes_any_int_tuple_a_valid_canonical_genome(name, data):
    space = get_space(name)
    n = len(space.gene_sizes())
    genes = data.draw(st.lists(st.one_of(st.integers(-3, 15), st.integers(-10**9, 10**9)), min_size=n, max_size=n))
    fixed = space.repair(genes)
    space.validate(fixed)
    assert space.repair(fixed) == fixed
    assert space.encode(space.decode(fixed)) == fixed
    wrapped = tuple(g % size for g, size in zip(genes, space.gene_sizes(), strict=True))
    assert same_architecture(space.build(wrapped), space.decode(fixed))


@pytest.mark.parametrize("name", SPACES)
@given(seed=seeds, rate=st.floats(0.0, 1.0))
@settings(max_examples=60, deadline=None)
def test_mutation_gives_a_valid_different_architecture(name, seed, rate):
    space = get_space(name)
    rng = random.Random(seed)
    parent = space.sample(rng)
    child = space.mutate(parent, rng, rate=rate)
    space.validate(child)
    assert not same_architecture(space.decode(child), space.decode(parent))


def _plain(space: SearchSpace, genome: Genome) -> Genome:
    """The genome with every sharing flag cleared, every star slot given an FFN (so none is empty) and
    at most 4 KV heads (which divide every width's head count): repair then leaves the slots of a
    crossover child exactly as crossover put them, whichever parent's width it gets."""
    globals_, slots = space.split(genome)
    if space.name == "star":
        slots = [(kind, option % 9 if kind == 1 else option, max(ffn, 1), 0, 0) for kind, option, ffn, _, _ in slots]
    return space.repair(globals_ + tuple(g for slot in slots for g in slot))


@pytest.mark.parametrize("name", SPACES)
@given(seed=seeds)
@settings(max_examples=60, deadline=None)
def test_crossover_swaps_a_run_of_whole_blocks(name, seed):
    space = get_space(name)
    rng = random.Random(seed)
    a, b = _plain(space, space.sample(rng)), _plain(space, space.sample(rng))
    child_a, child_b = space.crossover(a, b, rng)
    space.validate(child_a)
    space.validate(child_b)
    (_, sa), (_, sb), (_, ca), (_, cb) = (space.split(g) for g in (a, b, child_a, child_b))
    cuts = [(i, j) for i in range(space.num_blocks + 1) for j in range(i + 1, space.num_blocks + 1)
            if ca == sa[:i] + sb[i:j] + sa[j:] and cb == sb[:i] + sa[i:j] + sb[j:]]
    assert cuts
    assert sorted((child_a[0], child_b[0])) == sorted((a[0], b[0]))  # width: one from each parent


@pytest.mark.parametrize("name", SPACES)
@given(seed=seeds)
@settings(max_examples=40, deadline=None)
def test_crossover_of_any_parents_is_valid(name, seed):
    space = get_space(name)
    rng = random.Random(seed)
    for child in space.crossover(space.sample(rng), space.sample(rng), rng):
        space.validate(child)


# ---- presets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("preset", LFM2_PRESETS)
def test_lfm2_presets_encode_exactly(name, preset):
    space, config = get_space(name), get_preset(preset)
    genome = space.encode(config)
    space.validate(genome)
    assert same_architecture(space.decode(genome), config)


def test_lfm2_preset_genomes_read_as_expected():
    lfm2 = get_space("lfm2")
    # width 1024 / 1536 / 2048, SwiGLU ×4.5 / ×4.5 / ×4.0, 8 KV heads, kernel 3, LFM2's layout
    assert lfm2.encode(get_preset("lfm2-350m")) == (0, 3, 2, 1, *LFM2_LAYOUT)
    assert lfm2.encode(get_preset("lfm2-700m")) == (1, 3, 2, 1, *LFM2_LAYOUT)
    assert lfm2.encode(get_preset("lfm2-1.2b")) == (2, 2, 2, 1, *LFM2_LAYOUT)
    star = get_space("star")
    slots = [(1, 9, 4, 0, 0) if kind else (0, 1, 4, 0, 0) for kind in LFM2_LAYOUT]
    assert star.encode(get_preset("lfm2-350m")) == star_genome(*slots, width=2)


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("preset", ["qwen3-0.6b", "qwen3-1.7b"])
def test_qwen3_presets_are_refused(name, preset):
    with pytest.raises(StarError, match=f"'{preset}' has 28 blocks"):
        get_space(name).encode(get_preset(preset))


def test_the_16_block_qwen3_baseline_is_an_all_attention_lfm2_genome():
    config = get_preset("qwen3-16")
    genome = get_space("lfm2").encode(config)
    assert genome == (2, 0, 2, 0, *[1] * 16)  # width 2048, SwiGLU x3 (6144, as Qwen3-1.7B), 8 KV heads
    assert same_architecture(get_space("lfm2").decode(genome), config)


@pytest.mark.parametrize("name", SPACES)
def test_proxy_presets_are_refused_for_their_width(name):
    with pytest.raises(StarError, match="hidden_size 64 is not one of"):
        get_space(name).encode(get_preset("lfm2-proxy"))


# ---- lfm2 ----------------------------------------------------------------------------------------


def test_lfm2_genes_mean_what_they_say():
    config = get_space("lfm2").decode((2, 4, 0, 0, *[1] * 16))
    assert len(config.blocks) == 16 and config.layer_types == ["attention"] * 16
    assert config.hidden_size == 2048 and config.vocab_size == 65536 and config.tie_embeddings
    assert config.blocks[0] == BlockConfig(AttentionMixer(num_heads=32, num_kv_heads=2, head_dim=64, qk_norm=True),
                                           SwiGLUFFN(hidden=10240))
    conv = get_space("lfm2").decode((0, 0, 0, 3, *[0] * 16))
    assert conv.blocks[5] == BlockConfig(ShortConvMixer(kernel=5), SwiGLUFFN(hidden=3072))


def test_every_lfm2_genome_exports_to_transformers():
    space = get_space("lfm2")
    rng = random.Random(5)
    families = {hf_family(space.decode(space.sample(rng))) for _ in range(200)}
    families.add(hf_family(space.decode((0, 0, 0, 0, *[1] * 16))))
    assert families == {"lfm2", "qwen3"}


def test_lfm2_validate_names_the_position():
    genome = [0] * 20
    genome[7] = 9
    with pytest.raises(StarError, match=re.escape("genome position 7 (block3.mixer) is 9, must be in 0..1")):
        get_space("lfm2").decode(genome)


def test_lfm2_unused_global_genes_are_canonically_zero():
    space = get_space("lfm2")
    all_attention = (0, 0, 1, 2, *[1] * 16)  # conv_kernel=2 but no block is a convolution
    with pytest.raises(StarError, match=re.escape("genome position 3 (conv_kernel) is 2, but the canonical")):
        space.validate(all_attention)
    assert space.repair(all_attention) == (0, 0, 1, 0, *[1] * 16)
    all_conv = (0, 0, 2, 2, *[0] * 16)
    assert space.repair(all_conv) == (0, 0, 0, 2, *[0] * 16)


def test_lfm2_refuses_uneven_or_shared_configs():
    space, config = get_space("lfm2"), get_preset("lfm2-350m")
    blocks = list(config.blocks)
    blocks[5] = replace(blocks[5], ffn=SwiGLUFFN(hidden=3072))
    with pytest.raises(StarError, match="not expressible in search space 'lfm2': block 5"):
        space.encode(replace(config, blocks=tuple(blocks)))
    blocks = list(config.blocks)
    blocks[3] = replace(blocks[3], share_weights_with=0)
    with pytest.raises(StarError, match="block 3"):
        space.encode(replace(config, blocks=tuple(blocks)))


# ---- star ----------------------------------------------------------------------------------------


def test_star_empty_slots_move_to_the_end():
    space = get_space("star")
    conv, attention = (0, 1, 1, 0, 0), (1, 9, 4, 0, 0)
    genome = star_genome(EMPTY_SLOT, conv, EMPTY_SLOT, attention)
    with pytest.raises(StarError, match=re.escape("genome position 1 (block0.mixer) is 4")):
        space.validate(genome)
    fixed = space.repair(genome)
    assert fixed == star_genome(conv, attention)
    config = space.decode(fixed)
    assert config.layer_types == ["short_conv", "attention"]
    assert same_architecture(space.build(genome), config)


def test_star_identity_block_with_an_ffn_is_kept():
    config = get_space("star").decode(star_genome((4, 0, 6, 0, 0), (0, 0, 0, 0, 0), width=0))
    assert config.blocks == (BlockConfig(IdentityMixer(), MLPFFN(hidden=2048)), BlockConfig(ShortConvMixer(kernel=2)))


def test_star_all_empty_genome_becomes_one_short_convolution():
    space = get_space("star")
    genome = star_genome((4, 6, 0, 1, 1))
    fixed = space.repair(genome)
    assert fixed == star_genome((0, 2, 0, 0, 0))
    assert space.decode(fixed).blocks == (BlockConfig(ShortConvMixer(kernel=4)),)


def test_star_options_are_read_per_class():
    space = get_space("star")
    genome = star_genome((0, 7, 0, 0, 0), (1, 11, 0, 0, 0), (2, 5, 0, 0, 0), (3, 7, 1, 0, 0), (4, 3, 5, 0, 0), width=1)
    fixed = space.repair(genome)
    # width 768 has 12 heads: 8 KV heads do not divide them, so option 11 (8, 2048) becomes 8 (4, 2048)
    assert fixed == star_genome((0, 3, 0, 0, 0), (1, 8, 0, 0, 0), (2, 2, 0, 0, 0), (3, 0, 1, 0, 0), (4, 0, 5, 0, 0),
                                width=1)
    mixers = [b.mixer for b in space.decode(fixed).blocks]
    assert mixers == [ShortConvMixer(kernel=5), AttentionMixer(num_heads=12, num_kv_heads=4, head_dim=64, window=2048),
                      LongConvMixer(kernel=256), RecurrenceMixer(num_heads=12, head_dim=64), IdentityMixer()]


def test_star_weight_sharing_points_at_the_nearest_owner():
    space = get_space("star")
    genome = star_genome(
        (0, 1, 1, 1, 0),  # 0: nothing earlier → flag dropped
        (0, 1, 2, 1, 0),  # 1: shares 0
        (0, 1, 3, 1, 0),  # 2: block 1 shares, so 0 is the nearest owner
        (0, 2, 1, 1, 0),  # 3: a different kernel → nothing identical → dropped
        (4, 0, 1, 1, 0),  # 4: identity never shares → dropped
        (2, 0, 1, 1, 1),  # 5: KV flag on a long conv → dropped; nothing identical → dropped
    )
    fixed = space.repair(genome)
    assert fixed == star_genome((0, 1, 1, 0, 0), (0, 1, 2, 1, 0), (0, 1, 3, 1, 0), (0, 2, 1, 0, 0), (4, 0, 1, 0, 0),
                                (2, 0, 1, 0, 0))
    sharing = [b.share_weights_with for b in space.decode(fixed).blocks]
    assert sharing == [None, 0, 0, None, None, None]


def test_star_kv_sharing_rules():
    space = get_space("star")
    full8, window8, kv2 = 9, 10, 3  # options: (8 KV heads, full), (8, window 512), (2, full)
    genome = star_genome(
        (1, full8, 1, 0, 0),    # 0: owns KV
        (1, full8, 1, 0, 1),    # 1: reads 0's KV
        (1, window8, 1, 1, 1),  # 2: other window → no KV source, no identical mixer → both dropped
        (1, full8, 1, 1, 1),    # 3: both flags → KV wins (reads 0), weight flag dropped
        (1, full8, 1, 1, 0),    # 4: nearest identical owner (3) reads KV → weight flag dropped
        (1, full8, 1, 1, 0),    # 5: nearest identical owner 4 owns its KV → shares 4's weights
        (1, kv2, 1, 0, 1),      # 6: no earlier attention with 2 KV heads → dropped
        (1, full8, 1, 0, 1),    # 7: nearest KV owner with the same shape is 5 (a weight sharer)
        (1, window8, 1, 1, 1),  # 8: reads 2's KV; 2 would also be its weight source, but KV wins
    )
    fixed = space.repair(genome)
    assert fixed == star_genome((1, full8, 1, 0, 0), (1, full8, 1, 0, 1), (1, window8, 1, 0, 0), (1, full8, 1, 0, 1),
                                (1, full8, 1, 0, 0), (1, full8, 1, 1, 0), (1, kv2, 1, 0, 0), (1, full8, 1, 0, 1),
                                (1, window8, 1, 0, 1))
    config = space.decode(fixed)
    assert [b.share_kv_with for b in config.blocks] == [None, 0, None, 0, None, None, None, 5, 2]
    assert [b.share_weights_with for b in config.blocks] == [None, None, None, None, None, 4, None, None, None]
    logits = StarLM(to_proxy(config))(torch.randint(0, 512, (2, 9)))
    assert logits.shape == (2, 9, 512) and torch.isfinite(logits).all()


def test_star_refuses_what_it_cannot_express():
    space, config = get_space("star"), get_preset("lfm2-350m")
    with pytest.raises(StarError, match="block 1 is empty"):
        space.encode(replace(config, blocks=(config.blocks[0], BlockConfig(IdentityMixer()))))
    blocks = list(config.blocks)
    blocks[4] = replace(blocks[4], share_weights_with=0)  # block 3 is the nearest identical owner
    with pytest.raises(StarError, match="not expressible in search space 'star': block 4"):
        space.encode(replace(config, blocks=tuple(blocks)))
    with pytest.raises(StarError, match="vocab_size is 1000"):
        space.encode(replace(config, vocab_size=1000))
    with pytest.raises(StarError, match="long_conv kernel 100 is not one of"):
        space.encode(replace(config, blocks=(BlockConfig(LongConvMixer(kernel=100)),)))


# ---- registry ------------------------------------------------------------------------------------


def test_registry_finds_both_spaces():
    assert {"lfm2", "star"} <= set(list_spaces())
    for name in SPACES:
        assert get_space(name).name == name
    assert get_space("star.search_spaces.lfm2:SPACE") is get_space("lfm2")


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(StarError, match=r"^unknown search space 'nope' \(known: .*lfm2.*star.*\)$"):
        get_space("nope")


USER_SPACE = '''
from star.arch import ArchConfig, BlockConfig, ShortConvMixer, SwiGLUFFN
from star.genome import Gene, SearchSpace, index_of


class Tiny(SearchSpace):
    """Tiny: 4 blocks, each with or without a SwiGLU."""

    name = "tiny"
    global_genes = (Gene("kernel", 3),)
    block_genes = (Gene("ffn", 2),)
    num_blocks = 4

    def build(self, genome):
        (k,), slots = self.split(genome)
        blocks = tuple(BlockConfig(ShortConvMixer(k + 2), SwiGLUFFN(64) if f else None) for (f,) in slots)
        return ArchConfig(hidden_size=32, vocab_size=512, blocks=blocks)

    def _encode(self, config):
        kernel = index_of(config.blocks[0].mixer.kernel, (2, 3, 4), "kernel")
        return (kernel, *(int(b.ffn is not None) for b in config.blocks))


SPACE = Tiny()
'''


def test_a_user_space_loads_from_a_file(tmp_path):
    path = tmp_path / "tmp.py"
    path.write_text(USER_SPACE)
    space = get_space(f"{path}:SPACE")
    assert space.name == "tiny" and space.gene_names()[1:3] == ("block0.ffn", "block1.ffn")
    genome = space.sample(random.Random(1))
    config = space.decode(genome)
    assert space.encode(config) == genome
    assert StarLM(config)(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 512)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("{tmp}/missing.py:SPACE", "does not exist"),
        ("{tmp}/tmp.py:NOPE", "NOPE is NoneType, not a SearchSpace instance"),
        ("{tmp}/broken.py:SPACE", "cannot load search space"),
        ("no_such_module_xyz:SPACE", "cannot load search space"),
        (":SPACE", "must look like"),
    ],
)
def test_bad_user_space_specs_say_why(tmp_path, spec, needle):
    (tmp_path / "tmp.py").write_text(USER_SPACE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(StarError, match=re.escape(needle)):
        get_space(spec.format(tmp=tmp_path))


# ---- proxy scaling -------------------------------------------------------------------------------


def test_lfm2_350m_proxy():
    proxy = to_proxy(get_preset("lfm2-350m"))
    assert (proxy.hidden_size, proxy.vocab_size, proxy.max_position_embeddings) == (32, 512, 4096)
    assert proxy.name == "lfm2-350m-proxy"
    assert proxy.blocks[2] == BlockConfig(AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=16, qk_norm=True),
                                          SwiGLUFFN(hidden=144))
    assert proxy.blocks[0] == BlockConfig(ShortConvMixer(kernel=3), SwiGLUFFN(hidden=144))
    assert proxy.layer_types == get_preset("lfm2-350m").layer_types


def test_proxies_keep_the_genomes_scale():
    """One fixed factor: LFM2's 350M, 700M and 1.2B get proxies of widths 32, 48 and 64 whose sizes
    grow as the real models' do; the star space's narrowest width still builds."""
    family = [get_preset(name) for name in ("lfm2-350m", "lfm2-700m", "lfm2-1.2b")]
    proxies = [to_proxy(config) for config in family]
    assert [p.hidden_size for p in proxies] == [c.hidden_size // PROXY_FACTOR for c in family] == [32, 48, 64]
    assert proxies[0].params() < proxies[1].params() < proxies[2].params()
    assert all(p.layer_types == c.layer_types and len(p.blocks) == 16 for p, c in zip(proxies, family, strict=True))
    space = get_space("star")
    narrow = space.decode(space.repair(star_genome((1, 0, 1, 0, 0), width=0)))  # width 512
    assert to_proxy(narrow).hidden_size == 16
    with torch.no_grad():
        assert torch.isfinite(StarLM(to_proxy(narrow))(torch.randint(0, 512, (1, 8)))).all()


@pytest.mark.parametrize(
    ("preset", "heads", "kv_heads", "ffn"),
    [("lfm2-700m", 3, 1, 224), ("lfm2-1.2b", 4, 1, 256), ("qwen3-0.6b", 4, 2, 96), ("qwen3-1.7b", 4, 2, 192)],
)
def test_proxy_keeps_the_attention_share_of_the_width(preset, heads, kv_heads, ffn):
    attention = [b for b in to_proxy(get_preset(preset)).blocks if b.mixer.kind == "attention"]
    assert {(b.mixer.num_heads, b.mixer.num_kv_heads, b.mixer.head_dim, b.ffn.hidden) for b in attention} == {
        (heads, kv_heads, 16, ffn)}


def test_proxy_rounds_half_heads_up_and_keeps_kv_dividing():
    config = ArchConfig(hidden_size=1024, vocab_size=100, blocks=(
        BlockConfig(AttentionMixer(num_heads=10, num_kv_heads=5, head_dim=64)),  # 2.5 heads at width 128
        BlockConfig(RecurrenceMixer(num_heads=2, head_dim=32)),                   # 0.25 heads → at least 1
    ))
    proxy = to_proxy(config, hidden=128, head_dim=32)
    assert proxy.blocks[0].mixer == AttentionMixer(num_heads=3, num_kv_heads=1, head_dim=32)
    assert proxy.blocks[1].mixer == RecurrenceMixer(num_heads=1, head_dim=32)


def test_proxy_of_a_star_genome_keeps_kernels_windows_and_sharing():
    space = get_space("star")
    config = space.decode(space.repair(star_genome(
        (1, 7, 6, 0, 0),  # attention, 4 KV heads, window 512, MLP ×4
        (1, 7, 4, 0, 1),  # reads block 0's KV, SwiGLU ×4.5
        (3, 0, 0, 0, 0),  # recurrence
        (2, 2, 2, 0, 0),  # long conv 256, SwiGLU ×3
        (2, 2, 0, 1, 0),  # shares block 3's weights
        width=1,          # 768: 12 heads
    )))
    proxy = to_proxy(config, hidden=128, head_dim=32)
    blocks = proxy.blocks
    assert blocks[0] == BlockConfig(AttentionMixer(num_heads=4, num_kv_heads=1, head_dim=32, window=512), MLPFFN(512))
    assert blocks[1].ffn == SwiGLUFFN(608)  # 3584 · 128/768 = 597.3 → 608
    assert blocks[1].share_kv_with == 0 and blocks[4].share_weights_with == 3
    assert blocks[2].mixer == RecurrenceMixer(num_heads=4, head_dim=32)
    assert blocks[3].mixer == blocks[4].mixer == LongConvMixer(kernel=256)
    assert blocks[3].ffn == SwiGLUFFN(384)
    with torch.no_grad():
        logits = StarLM(proxy)(torch.randint(0, 512, (2, 12)))
    assert logits.shape == (2, 12, 512) and torch.isfinite(logits).all()


def test_proxy_size_arguments():
    proxy = to_proxy(get_preset("lfm2-350m"), hidden=256, vocab=1000, head_dim=64)
    assert (proxy.hidden_size, proxy.vocab_size) == (256, 1000)
    assert proxy.blocks[2].mixer == AttentionMixer(num_heads=4, num_kv_heads=2, head_dim=64)
    assert proxy.blocks[2].ffn == SwiGLUFFN(1152)
