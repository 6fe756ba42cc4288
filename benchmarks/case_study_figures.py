"""The figures of docs/case-study.md, from a run folder (default: the committed results/lfm2-cpu).

Prints the run's settings and cost, the Pareto set (at the top rung), where each seeded preset lands
at its own rung (on that rung's front, or which genomes of that rung dominate it: scores from
different rungs are never compared), and what the front prefers: how many attention blocks, where
they sit, and the global genes, against every evaluated genome and against LFM2's choice.

    python benchmarks/case_study_figures.py [RUN]
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter

from star.objectives import Normaliser, format_value
from star.pareto import dominates
from star.presets import LFM2_ATTENTION_BLOCKS, get_preset
from star.queries import best_per_genome, front_rows
from star.search_spaces import get_space
from star.store import RunStore


def layout(row: dict) -> str:
    return "".join("A" if kind == "attention" else "C" for kind in row["layer_types"].split(","))


def genes(row: dict) -> str:
    """The global genes of an lfm2-space row in words: width, SwiGLU ratio, KV heads, kernel."""
    from star.arch import ArchConfig

    config = ArchConfig.from_json(row["config_json"])
    attention = [b.mixer for b in config.blocks if b.mixer.kind == "attention"]
    convs = [b.mixer for b in config.blocks if b.mixer.kind == "short_conv"]
    ffn = config.blocks[0].ffn.hidden / config.hidden_size
    return (f"w{config.hidden_size} x{ffn:.2f} kv{attention[0].num_kv_heads if attention else '-'} "
            f"k{convs[0].kernel if convs else '-'} {len(attention)}A")


def gene_differences(a: dict, b: dict) -> str:
    """What genome `b` changes against genome `a`: each global gene, and the blocks whose mixer flips."""
    words_a, words_b = genes(a).split(), genes(b).split()
    changed = [f"{x}->{y}" for x, y in zip(words_a[:4], words_b[:4], strict=True) if x != y]
    flips = [f"{i}:{x}->{y}" for i, (x, y) in enumerate(zip(layout(a), layout(b), strict=True)) if x != y]
    if flips:
        changed.append(f"{len(flips)} blocks flip ({' '.join(flips)})")
    return ", ".join(changed) or "none"


def attention_positions(rows: list[dict]) -> Counter:
    return Counter(i for r in rows for i, kind in enumerate(r["layer_types"].split(",")) if kind == "attention")


def main() -> None:
    run = sys.argv[1] if len(sys.argv) > 1 else "results/lfm2-cpu"
    store = RunStore.open(run)
    manifest, settings = store.manifest, store.manifest["settings"]
    objectives = settings["objectives"]
    normaliser = Normaliser.from_dict(manifest["normaliser"])
    rows = best_per_genome(store.rows)
    front = front_rows(store)
    print(f"run {run}: {manifest['command']}")
    print(f"  {len(store.rows)} evaluations of {len(rows)} genomes, fidelities {settings['fidelities']}, "
          f"objectives {objectives}, device {settings['device_profile']}, context {settings['context']}")
    walls = [r["wall_s"] for r in store.rows if r["wall_s"]]
    by_fidelity = Counter(r["fidelity"] for r in store.rows)
    print(f"  evaluations per fidelity {dict(by_fidelity)}; worker time {sum(walls) / 3600:.2f} h; "
          f"first {store.rows[0]['finished_at']} last {store.rows[-1]['finished_at']}")
    print(f"  machine {manifest['machine']}; versions {manifest['versions']}")

    print(f"\nPareto set at rung {front[0]['rung'] if front else '-'} ({len(front)} of {len(rows)} genomes):")
    header = "  rank genome_id     layout            " + "".join(f"{o:>14}" for o in objectives) + "  fidelity  origin"
    print(header)
    for i, r in enumerate(front, 1):
        values = "".join(f"{format_value(o, r[o]):>14}" for o in objectives)
        print(f"  {i:>4} {r['genome_id']}  {layout(r)}  {values}  {r['fidelity']:>8}  {r['origin']}")

    space = get_space(settings["space"])
    print("\nseeded presets, each against the genomes evaluated at its own top rung:")
    for preset in settings["seed_presets"]:
        genome = ",".join(map(str, space.encode(get_preset(preset))))
        row = next(r for r in rows if r["genome"] == genome)
        values = ", ".join(f"{o} {format_value(o, row[o])}" for o in objectives)
        rung_front = {r["genome_id"]: r for r in front_rows(store, rung=row["rung"])}
        where = f"rung {row['rung']} ({row['fidelity']})"
        if row["genome_id"] in rung_front:
            print(f"  {preset} ({row['genome_id']}, {layout(row)}): on the front at {where}; {values}")
            continue
        point = normaliser.point(row)
        dominators = [g for g, r in rung_front.items() if dominates(normaliser.point(r), point)]
        print(f"  {preset} ({row['genome_id']}, {layout(row)}): dominated at {where} by {len(dominators)}; {values}")
        for g in dominators:
            d = rung_front[g]
            print(f"    by {g} {layout(d)}: " + ", ".join(f"{o} {format_value(o, d[o])}" for o in objectives)
                  + f" (genome {d['genome']})")

    print("\nwhat the front prefers (attention blocks per genome):")
    for name, group in (("front", front), ("all evaluated", rows)):
        counts = [layout(r).count("A") for r in group]
        print(f"  {name:<14} median {statistics.median(counts):4.1f}, range {min(counts)}-{max(counts)}, "
              f"histogram {dict(sorted(Counter(counts).items()))}")
    print(f"  LFM2: 6 attention blocks at {list(LFM2_ATTENTION_BLOCKS)}")
    positions = attention_positions(front)
    print(f"  front: attention share at each block position (of {len(front)}): "
          + " ".join(f"{i}:{positions[i]}" for i in range(16)))
    first_half = sum(positions[i] for i in range(8))
    print(f"  front: attention blocks in the first half {first_half}, in the second half "
          f"{sum(positions.values()) - first_half}")
    widths = Counter(int(r["genome"].split(",")[0]) for r in front)
    print(f"  front: width genes {dict(widths)} (0 = 1024, 1 = 1536, 2 = 2048)")
    quality = [r["quality"] for r in rows if r["fidelity"] == max(settings["fidelities"], key=int)]
    if quality:
        print(f"  quality at the top fidelity: {len(quality)} genomes, min {min(quality):.4f}, "
              f"median {statistics.median(quality):.4f}, max {max(quality):.4f}")


if __name__ == "__main__":
    main()
