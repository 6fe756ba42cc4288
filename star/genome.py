"""STAR-style integer genomes and the `SearchSpace` interface.

A genome is a fixed-length tuple of small integers: first the space's global genes (width, ...), then
the same few genes for every block slot (mixer class, option, sharing flags, ...).  Evolution only
ever sees integers; a space turns them into an `ArchConfig` and back.

Canonical form.  Many integer tuples mean the same architecture (an option gene that the chosen
mixer ignores, a sharing flag with nothing to share with, ...).  So that one architecture has exactly
one genome (and one `genome_id`, which the search uses to deduplicate), the canonical genome of an
architecture is defined as what `encode` produces, and

    repair(g) = encode(build(g mod gene sizes))

where `build` is the space's lenient reading of any in-range genome.  `validate` accepts only
canonical genomes, `decode` is `build` after `validate`, and `encode(decode(g)) == g` holds for every
valid genome by construction.  A new space therefore writes just `build` and `_encode`; layout,
validation, repair, sampling, mutation and crossover live here.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from star.arch import ArchConfig
from star.errors import StarError

Genome = tuple[int, ...]


def genome_id(space_name: str, genome: Sequence[int]) -> str:
    """A short name for a genome that is the same on every machine and in every process (unlike
    `hash`, which is salted per process): sha256 of 'space:g0,g1,...', first 12 hex digits."""
    text = f"{space_name}:{','.join(str(int(g)) for g in genome)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Gene:
    """One genome position: a readable name and how many values it takes (0 .. size-1)."""

    name: str
    size: int


class SearchSpace(ABC):
    """A discrete architecture space: global genes, then `num_blocks` copies of the block genes.

    Subclasses set the four class attributes, write `build` (any in-range genome → ArchConfig,
    leniently ignoring choices that cannot apply) and `_encode` (ArchConfig → genome, raising
    StarError when a value is not one of the space's choices).
    """

    name: str = ""
    global_genes: tuple[Gene, ...] = ()
    block_genes: tuple[Gene, ...] = ()
    num_blocks: int = 0

    # ---- what subclasses write -------------------------------------------------------------------

    @abstractmethod
    def build(self, genome: Genome) -> ArchConfig:
        """The architecture an in-range genome stands for, even a non-canonical one."""

    @abstractmethod
    def _encode(self, config: ArchConfig) -> Genome:
        """The genome for `config`; StarError when one of its values has no gene value."""

    # ---- layout ----------------------------------------------------------------------------------

    def gene_sizes(self) -> tuple[int, ...]:
        return tuple(g.size for g in self.global_genes) + tuple(g.size for g in self.block_genes) * self.num_blocks

    def gene_names(self) -> tuple[str, ...]:
        per_block = tuple(f"block{i}.{g.name}" for i in range(self.num_blocks) for g in self.block_genes)
        return tuple(g.name for g in self.global_genes) + per_block

    def split(self, genome: Genome) -> tuple[Genome, list[Genome]]:
        """(global genes, one tuple of genes per block slot)."""
        n, width = len(self.global_genes), len(self.block_genes)
        slots = [tuple(genome[n + i * width: n + (i + 1) * width]) for i in range(self.num_blocks)]
        return tuple(genome[:n]), slots

    # ---- checking and canonical form -------------------------------------------------------------

    def validate(self, genome: Sequence[int]) -> None:
        """Raise StarError unless `genome` is a canonical genome of this space, naming the position."""
        genome = self._in_range(genome)
        canonical = self.repair(genome)
        if canonical != genome:
            names = self.gene_names()
            p = next(p for p, (a, b) in enumerate(zip(genome, canonical, strict=True)) if a != b)
            raise StarError(f"genome position {p} ({names[p]}) is {genome[p]}, but the canonical genome of the same "
                            f"architecture has {canonical[p]} there; repair() gives the canonical form")

    def repair(self, genome: Sequence[int]) -> Genome:
        """Any same-length tuple of ints (after mutation, crossover, or typed by hand) → the canonical
        genome of the architecture it reads as: genes wrap modulo their sizes, impossible sharing is
        dropped, empty or ignored choices take their canonical values."""
        genome = self._checked_ints(genome)
        wrapped = tuple(g % size for g, size in zip(genome, self.gene_sizes(), strict=True))
        return self.encode(self.build(wrapped))

    def decode(self, genome: Sequence[int]) -> ArchConfig:
        """The validated full-size ArchConfig of a valid genome, named '<space>-<genome_id>'."""
        self.validate(genome)
        genome = tuple(genome)
        config = replace(self.build(genome), name=f"{self.name}-{genome_id(self.name, genome)}")
        return config.validate()

    def encode(self, config: ArchConfig) -> Genome:
        """The canonical genome of `config`; StarError when the space cannot express it exactly."""
        genome = self._encode(config)
        if len(genome) != len(self.gene_sizes()):
            raise StarError(f"config {config.name!r} is not expressible in search space {self.name!r}: "
                            f"it needs {len(genome)} genes, the space has {len(self.gene_sizes())}")
        rebuilt = self.build(genome)
        difference = _first_difference(config, replace(rebuilt, name=config.name))
        if difference:
            raise StarError(f"config {config.name!r} is not expressible in search space {self.name!r}: {difference}")
        return genome

    # ---- evolution -------------------------------------------------------------------------------

    def sample(self, rng: random.Random) -> Genome:
        """A uniformly random integer per gene, repaired."""
        return self.repair(tuple(rng.randrange(size) for size in self.gene_sizes()))

    def mutate(self, genome: Sequence[int], rng: random.Random, rate: float = 0.1) -> Genome:
        """Point mutations: each gene takes a different random value with probability `rate` (at least
        one gene does).  Retried until the repaired child is a different architecture."""
        if not 0.0 <= rate <= 1.0:
            raise StarError(f"mutation rate must be in 0..1, got {rate}")
        parent = self.repair(genome)
        sizes = self.gene_sizes()
        mutable = [p for p, size in enumerate(sizes) if size > 1]
        for _ in range(100):
            genes = list(parent)
            points = [p for p in mutable if rng.random() < rate] or [rng.choice(mutable)]
            for p in points:
                genes[p] = (genes[p] + rng.randrange(1, sizes[p])) % sizes[p]
            child = self.repair(genes)
            if child != parent:
                return child
        for p in mutable:  # practically unreachable: every random try was undone by repair
            for value in range(sizes[p]):
                child = self.repair((*parent[:p], value, *parent[p + 1:]))
                if child != parent:
                    return child
        raise StarError(f"search space {self.name!r} has a single architecture; nothing to mutate")

    def crossover(self, a: Sequence[int], b: Sequence[int], rng: random.Random) -> tuple[Genome, Genome]:
        """Block-wise two-point crossover: the children swap the block slots between two block
        boundaries; each global gene comes from either parent (the other child gets the other)."""
        a, b = self.repair(a), self.repair(b)
        n, width = len(self.global_genes), len(self.block_genes)
        start, stop = sorted(rng.sample(range(self.num_blocks + 1), 2)) if self.num_blocks else (0, 0)
        lo, hi = n + start * width, n + stop * width
        from_b = [rng.random() < 0.5 for _ in range(n)]
        globals_a = tuple(y if swap else x for x, y, swap in zip(a[:n], b[:n], from_b, strict=True))
        globals_b = tuple(x if swap else y for x, y, swap in zip(a[:n], b[:n], from_b, strict=True))
        child_a = globals_a + a[n:lo] + b[lo:hi] + a[hi:]
        child_b = globals_b + b[n:lo] + a[lo:hi] + b[hi:]
        return self.repair(child_a), self.repair(child_b)

    # ---- helpers ---------------------------------------------------------------------------------

    def _checked_ints(self, genome: Sequence[int]) -> Genome:
        if not isinstance(genome, tuple | list):
            raise StarError(f"a genome must be a tuple of integers, got {type(genome).__name__}")
        sizes, names = self.gene_sizes(), self.gene_names()
        if len(genome) != len(sizes):
            raise StarError(f"genome has {len(genome)} genes, search space {self.name!r} expects {len(sizes)}")
        for p, value in enumerate(genome):
            if not isinstance(value, int) or isinstance(value, bool):
                raise StarError(f"genome position {p} ({names[p]}) is {value!r}, must be an integer")
        return tuple(genome)

    def _in_range(self, genome: Sequence[int]) -> Genome:
        genome = self._checked_ints(genome)
        names = self.gene_names()
        for p, (value, size) in enumerate(zip(genome, self.gene_sizes(), strict=True)):
            if not 0 <= value < size:
                raise StarError(f"genome position {p} ({names[p]}) is {value}, must be in 0..{size - 1}")
        return genome


def index_of(value: object, choices: Sequence[object], what: str) -> int:
    """The gene value for `value`, or StarError listing the choices (for `_encode`)."""
    if value not in choices:
        raise StarError(f"{what} {value!r} is not one of {', '.join(map(str, choices))}")
    return list(choices).index(value)


def _first_difference(wanted: ArchConfig, got: ArchConfig) -> str:
    """'' when equal, else one line naming the first field or block the genome cannot reproduce."""
    for f in fields(ArchConfig):
        if f.name != "blocks" and getattr(wanted, f.name) != getattr(got, f.name):
            return f"{f.name} is {getattr(wanted, f.name)!r}, the space gives {getattr(got, f.name)!r}"
    if len(wanted.blocks) != len(got.blocks):
        return f"it has {len(wanted.blocks)} blocks, the genome gives {len(got.blocks)}"
    for i, (x, y) in enumerate(zip(wanted.blocks, got.blocks, strict=True)):
        if x != y:
            return f"block {i} is {x}, the nearest the space gives is {y}"
    return ""
