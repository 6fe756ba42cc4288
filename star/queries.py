"""What a run's evaluations say, read from its store: the rungs, the Pareto set, each genome's best
evaluation, the evaluation a rank or a genome id picks.

These are queries on a run store, not part of the search loop: the loop, the report and the command line
all read a run this way, and a front end reads a finished run without importing the loop that made it.
"""

from __future__ import annotations

from typing import Any

from star.errors import StarError
from star.evolution import Candidate, final_front
from star.objectives import Normaliser
from star.store import RunStore


def top_rung(rows: list[dict[str, Any]]) -> int:
    """The highest rung with a successful evaluation (0 for a run without any)."""
    return max((int(r["rung"]) for r in rows if r["status"] == "ok"), default=0)


def rung_rows(rows: list[dict[str, Any]], rung: int) -> list[dict[str, Any]]:
    """The successful evaluations at one rung (one per genome), in the order they finished."""
    return [r for r in rows if r["status"] == "ok" and int(r["rung"]) == rung]


def front_rows(store: RunStore, rung: int | None = None) -> list[dict[str, Any]]:
    """The run's Pareto set at one rung (by default the highest any genome reached): the feasible,
    non-dominated evaluations among those made at that fidelity.  Scores from different rungs are
    never compared: a lower rung's quality comes from less training, not from a worse genome, so a
    genome that was never promoted is not on the top rung's front (nor under it).  Best first by the
    first objective."""
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    rows = rung_rows(store.rows, top_rung(store.rows) if rung is None else rung)
    candidates = [Candidate(r["genome_id"], (), r["rung"], normaliser.point(r), float(r["violation"])) for r in rows]
    keep = {c.genome_id for c in final_front(candidates)}
    front = [r for r in rows if r["genome_id"] in keep]
    first = normaliser.names[0]
    return sorted(front, key=lambda r: normaliser.point(r)[0] if first in r else 0.0)


def best_per_genome(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each genome's successful evaluation at its highest fidelity, in first-seen order."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok" and row["rung"] >= best.get(row["genome_id"], {"rung": -1})["rung"]:
            best[row["genome_id"]] = row
    return list(best.values())


def pick_row(store: RunStore, run: str, rank: int | None = None, genome_id: str | None = None) -> dict[str, Any]:
    """The evaluation `rank` (1 = first of the Pareto set, `front_rows`) or `genome_id` (its successful
    evaluation at the highest rung) picks in the run `run` names; a clear error when none does."""
    if rank is not None:
        front = front_rows(store)
        if not 1 <= rank <= len(front):
            raise StarError(f"--rank {rank} is out of range: the Pareto set of {run} has "
                            f"{len(front)} members (1..{len(front)})")
        return front[rank - 1]
    rows = [r for r in store.rows if r["genome_id"] == genome_id and r["status"] == "ok"]
    if not rows:
        raise StarError(f"no successful evaluation of genome id {genome_id!r} in {run}")
    return max(rows, key=lambda r: r["rung"])
