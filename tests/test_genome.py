"""The SearchSpace machinery (layout, validation, sampling, mutation, crossover) on a toy space whose
every in-range genome is canonical, so each operator's effect can be checked gene by gene."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from star.arch import ArchConfig, AttentionMixer, BlockConfig, ShortConvMixer, SwiGLUFFN
from star.errors import StarError
from star.genome import Gene, Genome, SearchSpace, genome_id, index_of

WIDTHS = (64, 128)
KINDS = ("short_conv", "attention")


class ToySpace(SearchSpace):
    """Toy: 3 blocks of short conv or attention, each with or without a SwiGLU."""

    name = "toy"
    global_genes = (Gene("width", 2),)
    block_genes = (Gene("mixer", 2), Gene("ffn", 2))
    num_blocks = 3

    def build(self, genome: Genome) -> ArchConfig:
        (w,), slots = self.split(genome)
        width = WIDTHS[w]
        mixers = (ShortConvMixer(kernel=3), AttentionMixer(num_heads=width // 32, num_kv_heads=1, head_dim=32))
        blocks = tuple(BlockConfig(mixers[m], SwiGLUFFN(2 * width) if f else None) for m, f in slots)
        return ArchConfig(hidden_size=width, vocab_size=256, blocks=blocks)

    def _encode(self, config: ArchConfig) -> Genome:
        genes = [index_of(config.hidden_size, WIDTHS, "hidden_size")]
        for block in config.blocks:
            genes += [index_of(block.mixer.kind, KINDS, "mixer"), int(block.ffn is not None)]
        return tuple(genes)


TOY = ToySpace()
toy_genomes = st.tuples(*(st.integers(0, size - 1) for size in TOY.gene_sizes()))
seeds = st.integers(0, 2**32 - 1)


# ---- genome ids -----------------------------------------------------------------------------------


def test_genome_id_is_a_fixed_hash():
    lfm2_350m = (0, 3, 2, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0)
    assert genome_id("lfm2", lfm2_350m) == "d4e7ff43e780"
    assert genome_id("lfm2", list(lfm2_350m)) == "d4e7ff43e780"


def test_genome_id_depends_on_space_and_every_gene():
    genome = (0, 1, 0, 1, 1, 0, 0)
    ids = {genome_id("toy", genome), genome_id("other", genome)}
    ids |= {genome_id("toy", (*genome[:p], genome[p] + 1, *genome[p + 1:])) for p in range(len(genome))}
    assert len(ids) == 2 + len(genome)
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


# ---- layout and validation ------------------------------------------------------------------------


def test_layout_is_globals_then_block_genes():
    assert TOY.gene_sizes() == (2, 2, 2, 2, 2, 2, 2)
    assert TOY.gene_names() == ("width", "block0.mixer", "block0.ffn", "block1.mixer", "block1.ffn",
                                "block2.mixer", "block2.ffn")
    assert TOY.split((1, 0, 1, 1, 0, 0, 1)) == ((1,), [(0, 1), (1, 0), (0, 1)])


@pytest.mark.parametrize(
    ("genome", "message"),
    [
        ((0, 0, 0), "genome has 3 genes, search space 'toy' expects 7"),
        ((0, 0, 0, 5, 0, 0, 0), "genome position 3 (block1.mixer) is 5, must be in 0..1"),
        ((0, 0, 0, 0, 0, 0, -1), "genome position 6 (block2.ffn) is -1, must be in 0..1"),
        ((0, "1", 0, 0, 0, 0, 0), "genome position 1 (block0.mixer) is '1', must be an integer"),
        ((0, 0, True, 0, 0, 0, 0), "genome position 2 (block0.ffn) is True, must be an integer"),
        ((0, 0, 1.0, 0, 0, 0, 0), "genome position 2 (block0.ffn) is 1.0, must be an integer"),
        ("0000000", "a genome must be a tuple of integers, got str"),
    ],
)
def test_validate_names_the_problem(genome, message):
    with pytest.raises(StarError, match="^" + re.escape(message) + "$"):
        TOY.validate(genome)
    with pytest.raises(StarError):
        TOY.decode(genome)


@given(toy_genomes)
def test_toy_genomes_decode_and_encode_back(genome):
    config = TOY.decode(genome)
    assert config.name == f"toy-{genome_id('toy', genome)}"
    assert TOY.encode(config) == genome
    assert TOY.repair(genome) == genome


def test_encode_refuses_a_config_with_the_wrong_block_count():
    config = TOY.decode((0,) * 7)
    shorter = ArchConfig(hidden_size=64, vocab_size=256, blocks=config.blocks[:2], name="short")
    with pytest.raises(StarError, match="'short' is not expressible in search space 'toy'"):
        TOY.encode(shorter)


def test_encode_refuses_what_build_cannot_reproduce():
    config = TOY.decode((0,) * 7)
    other_vocab = ArchConfig(hidden_size=64, vocab_size=999, blocks=config.blocks, name="v")
    with pytest.raises(StarError, match="vocab_size is 999, the space gives 256"):
        TOY.encode(other_vocab)


@given(st.lists(st.integers(-1000, 1000), min_size=7, max_size=7))
def test_repair_wraps_genes_modulo_their_sizes(genes):
    assert TOY.repair(genes) == tuple(g % 2 for g in genes)


# ---- sampling, mutation, crossover ----------------------------------------------------------------


def test_sample_depends_only_on_the_seed():
    first = [TOY.sample(random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert len({TOY.sample(random.Random(s)) for s in range(50)}) > 10


@given(toy_genomes, seeds, st.floats(0.0, 1.0))
def test_mutate_changes_at_least_one_gene(genome, seed, rate):
    child = TOY.mutate(genome, random.Random(seed), rate=rate)
    TOY.validate(child)
    assert child != genome


@given(toy_genomes, seeds)
def test_mutate_at_rate_zero_changes_exactly_one_gene(genome, seed):
    child = TOY.mutate(genome, random.Random(seed), rate=0.0)
    assert sum(a != b for a, b in zip(genome, child, strict=True)) == 1


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_mutate_rejects_a_rate_outside_0_1(rate):
    with pytest.raises(StarError, match="mutation rate"):
        TOY.mutate((0,) * 7, random.Random(0), rate=rate)


def _blocks(genome: Genome) -> list[Genome]:
    return TOY.split(genome)[1]


@given(toy_genomes, toy_genomes, seeds)
def test_crossover_swaps_one_run_of_whole_blocks(a, b, seed):
    child_a, child_b = TOY.crossover(a, b, random.Random(seed))
    TOY.validate(child_a)
    TOY.validate(child_b)
    assert {(x, y) for x, y in zip(child_a[:1], child_b[:1], strict=True)} <= {(a[0], b[0]), (b[0], a[0])}
    cuts = [
        (start, stop)
        for start in range(TOY.num_blocks + 1)
        for stop in range(start + 1, TOY.num_blocks + 1)
        if _blocks(child_a) == _blocks(a)[:start] + _blocks(b)[start:stop] + _blocks(a)[stop:]
        and _blocks(child_b) == _blocks(b)[:start] + _blocks(a)[start:stop] + _blocks(b)[stop:]
    ]
    assert cuts, (a, b, child_a, child_b)


def test_crossover_uses_every_cut_and_both_global_sources():
    a, b = (0, 0, 0, 0, 0, 0, 0), (1, 1, 1, 1, 1, 1, 1)
    rng = random.Random(0)
    children = {TOY.crossover(a, b, rng)[0] for _ in range(300)}
    runs = {child[1:] for child in children}
    # two cuts among the 4 block boundaries give 6 runs of blocks taken from b
    assert runs == {(0, 0) * i + (1, 1) * (j - i) + (0, 0) * (3 - j) for i in range(4) for j in range(i + 1, 4)}
    assert {child[0] for child in children} == {0, 1}
