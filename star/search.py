"""`star search`: the loop that joins the searcher, the executor and the run store.

    settings ──▶ Evolution.ask ──▶ screening metrics (driver) ──▶ job on a Ray worker (if training)
          ▲                                                              │
          └────────── Evolution.tell ◀── row ──▶ evaluations.parquet ◀──┘ ──▶ Optuna study

Static-only searches (no `quality` objective) never start Ray: every objective is computed in the
driver at screening time, in milliseconds.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from star.errors import StarError
from star.evolution import SELECTIONS, Evolution, EvolutionSettings, Proposal, final_front
from star.executor import EvalJob, EvaluatorSpec, FaultPlan, Outcome, RayExecutor
from star.genome import SearchSpace, genome_id
from star.machine import machine_name
from star.objectives import (
    Constraint,
    Normaliser,
    Objective,
    fit_normaliser,
    parse_objectives,
    screening_metrics,
    violation,
)
from star.store import OptunaMirror, RunStore, default_storage

DEFAULT_OBJECTIVES = "quality,decode_ms,cache_bytes"
STATIC_BATCH = 64  # static-only searches persist this many evaluations per write


@dataclass
class SearchSettings:
    """Everything that defines a search; stored in the manifest so that `--resume` needs nothing else."""

    space: str
    objectives: list[str]
    budget: int
    seed: int = 0
    constraints: dict[str, float] = field(default_factory=dict)
    population: int = 32
    selection: str = "nsga2"
    fidelities: list[str] = field(default_factory=lambda: ["2"])
    eta: int = 3
    evaluator: dict[str, Any] = field(default_factory=lambda: asdict(EvaluatorSpec()))
    seed_presets: list[str] = field(default_factory=list)
    device_profile: str = "ryzen-hx370"
    prompt: int = 1024
    context: int = 4096
    eval_timeout_s: float = 1800.0
    inject_faults: str = ""
    storage: str = ""  # Optuna storage URL; "" = RUN/study.db
    keep_weights: bool = False  # keep every trained proxy in RUN/weights/ (for star export --weights)
    study_name: str = "star-search"

    def check(self) -> None:
        from star.evaluators.fidelity import get_fidelity
        from star.search_spaces import get_space

        get_space(self.space)
        parse_objectives(",".join(self.objectives))
        from star.objectives import predictor_for

        predictor_for(self.device_profile)  # a roofline model by name, or a measured profile
        if self.budget < 1:
            raise StarError(f"--budget must be >= 1, got {self.budget}")
        if self.population < 2:
            raise StarError(f"--population must be >= 2, got {self.population}")
        if self.selection not in SELECTIONS:
            raise StarError(f"--selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.eta < 2:
            raise StarError(f"--eta must be >= 2, got {self.eta}")
        tokens = [get_fidelity(f).tokens for f in self.fidelities]
        if tokens != sorted(tokens) or len(set(tokens)) != len(tokens):
            raise StarError(f"--fidelities must increase, got {','.join(self.fidelities)}")
        if self.evaluator["kind"] not in ("suite", "synthetic"):
            raise StarError(f"--evaluator must be suite or synthetic, got {self.evaluator['kind']!r}")
        probe_steps = self.evaluator.get("probe_steps")
        if probe_steps is not None and probe_steps < 0:
            raise StarError(f"--probe-steps must be >= 0, got {probe_steps}")
        if self.eval_timeout_s <= 0:
            raise StarError(f"--eval-timeout must be > 0, got {self.eval_timeout_s}")
        if self.prompt < 1 or self.context < 1:
            raise StarError("--prompt and --context must be >= 1")
        if self.inject_faults and not self.trains:
            raise StarError("--inject-faults needs an objective that trains (quality); static objectives never fail")
        FaultPlan.parse(self.inject_faults)
        if self.keep_weights and not (self.trains and self.evaluator["kind"] == "suite"):
            raise StarError("--keep-weights needs trained proxies: the quality objective with the suite evaluator")

    @property
    def trains(self) -> bool:
        return "quality" in self.objectives

    @property
    def rungs(self) -> int:
        """Fidelity rungs: one per --fidelities when proxies train, else one (static objectives)."""
        return len(self.fidelities) if self.trains else 1


@dataclass
class SearchReport:
    folder: Path
    evaluations: int
    failures: int
    hypervolume: float
    front: list[dict[str, Any]]
    wall_s: float


Progress = Callable[[dict[str, Any]], None]


def versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return ""

    return {"star": version("star-nas"), "python": platform.python_version(), "torch": version("torch"),
            "ray": version("ray"), "optuna": version("optuna"), "pyarrow": version("pyarrow")}


class Search:
    """A search over one run folder; `run()` evaluates until the budget is spent."""

    def __init__(self, store: RunStore, workers: int = 1, threads_per_worker: int | None = None,
                 ray_address: str | None = None, progress: Progress | None = None) -> None:
        from star.search_spaces import get_space

        self.store = store
        self.settings = SearchSettings(**store.manifest["settings"])
        self.space: SearchSpace = get_space(self.settings.space)
        self.objectives: tuple[Objective, ...] = parse_objectives(",".join(self.settings.objectives))
        self.constraints = [Constraint(m, v) for m, v in self.settings.constraints.items()]
        self.normaliser = Normaliser.from_dict(store.manifest["normaliser"])
        self.workers = workers
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        self.ray_address = ray_address
        self.progress = progress
        self.fault_plan = FaultPlan.parse(self.settings.inject_faults)
        self._metrics_cache: dict[str, dict[str, float]] = {}
        seeds = [(name, _preset_genome(self.space, name)) for name in self.settings.seed_presets]
        evo = EvolutionSettings(seed=self.settings.seed, population=self.settings.population,
                                selection=self.settings.selection,
                                rungs=self.settings.rungs,
                                eta=self.settings.eta, seeds=seeds)
        self.evolution = Evolution(self.space, evo, self.normaliser, screen=self._excess)
        self._probes: dict[str, tuple[float, float]] = {}  # genome id → its recall probe (score, learning rate)
        for row in store.rows:  # replay: the state after these evaluations, exactly as when they finished
            self.evolution.tell(row)
            self._remember_probe(row)
        self.mirror = open_study(store)
        self.mirror_storage = self.mirror.storage_url
        self._versions = versions()
        self._machine = machine_name()

    # ---- screening (driver side) -----------------------------------------------------------------

    def _metrics(self, genome: tuple[int, ...]) -> dict[str, float]:
        gid = genome_id(self.space.name, genome)
        if gid not in self._metrics_cache:
            config = self.space.decode(genome)
            self._metrics_cache[gid] = screening_metrics(config, self.settings.device_profile, self.settings.prompt,
                                                         self.settings.context)
        return self._metrics_cache[gid]

    def _excess(self, genome: tuple[int, ...]) -> float:
        return violation(self.constraints, self._metrics(genome))[0]

    # ---- rows ------------------------------------------------------------------------------------

    def _row(self, proposal: Proposal, outcome: Outcome | None) -> dict[str, Any]:
        from star.evaluators.fidelity import get_fidelity

        config = self.space.decode(proposal.genome)
        metrics = dict(self._metrics(proposal.genome))
        excess, broken = violation(self.constraints, metrics)
        fidelity = self.settings.fidelities[proposal.rung] if self.settings.trains else ""
        row: dict[str, Any] = {
            "eval_index": len(self.store.rows), "job": proposal.job, "genome_id": proposal.genome_id,
            "genome": ",".join(map(str, proposal.genome)), "space": self.space.name, "origin": proposal.origin,
            "parents": ",".join(proposal.parents), "layer_types": ",".join(config.layer_types),
            "config_json": config.to_json(), "rung": proposal.rung, "fidelity": fidelity,
            "fidelity_tokens": get_fidelity(fidelity).tokens if fidelity else 0,
            "status": "ok", "reason": "", "attempts": 1, "feasible": excess == 0, "violation": excess,
            "violations": broken, "seed": self.settings.seed, "wall_s": 0.0, "worker": "driver",
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "star_version": self._versions["star"], "python_version": self._versions["python"],
            "torch_version": self._versions["torch"], "ray_version": self._versions["ray"],
            "machine": self._machine, **metrics,
        }
        if outcome is not None:
            row.update(status=outcome.status, reason=outcome.reason, attempts=outcome.attempts,
                       wall_s=outcome.wall_s, worker=outcome.worker, **outcome.metrics, **outcome.environment)
            if self.settings.keep_weights and outcome.status == "ok":
                row["weights_file"] = self._weights_file(proposal)
        return row

    def _weights_file(self, proposal: Proposal) -> str:
        """Relative to the run folder: one file per genome and fidelity."""
        return f"weights/{proposal.genome_id}-{self.settings.fidelities[proposal.rung]}.safetensors"

    def _remember_probe(self, row: dict[str, Any]) -> None:
        """The probe's budget is the same at every rung: a promoted genome reuses its first score."""
        if row["status"] == "ok" and row.get("recall_probe") is not None:
            self._probes.setdefault(str(row["genome_id"]), (float(row["recall_probe"]), float(row["recall_probe_lr"])))

    def _job(self, proposal: Proposal) -> EvalJob:
        weights = str((self.store.path / self._weights_file(proposal)).resolve()) if self.settings.keep_weights \
            else None
        return EvalJob(job=proposal.job, space=self.settings.space, genome=proposal.genome,
                       genome_id=proposal.genome_id, fidelity=self.settings.fidelities[proposal.rung],
                       seed=self.settings.seed, threads=self.threads,
                       evaluator=EvaluatorSpec(**self.settings.evaluator), faults=self.fault_plan,
                       weights_path=weights, probe=self._probes.get(proposal.genome_id))

    # ---- the loop --------------------------------------------------------------------------------

    def run(self) -> SearchReport:
        started = time.monotonic()
        next_job = 1 + max((int(r["job"]) for r in self.store.rows), default=-1)
        if self.settings.trains:
            self._run_on_ray(next_job)
        else:
            self._run_static(next_job)
        self.mirror.sync(self.store.rows)
        return SearchReport(self.store.path, len(self.store.rows), self.failures, self.evolution.hypervolume(),
                            front_rows(self.store), time.monotonic() - started)

    @property
    def failures(self) -> int:
        return sum(r["status"] != "ok" for r in self.store.rows)

    def _remaining(self) -> int:
        return self.settings.budget - len(self.store.rows)

    def _run_static(self, job: int) -> None:
        while self._remaining() > 0:
            batch = []
            for _ in range(min(STATIC_BATCH, self._remaining())):
                proposal = self.evolution.ask(job)
                job += 1
                row = self._row(proposal, None)
                row["eval_index"] = len(self.store.rows) + len(batch)
                self.evolution.tell(row)
                batch.append(row)
            self.store.append(batch)
            self._report()

    def _run_on_ray(self, job: int) -> None:
        executor = RayExecutor(self.workers, self.threads, self.settings.eval_timeout_s, self.ray_address,
                               gpus=1.0 if self.settings.evaluator.get("device") == "cuda" else 0.0)
        proposals: dict[int, Proposal] = {}
        last_sync = time.monotonic()
        try:
            while self._remaining() > 0:
                while executor.free_slots > 0 and executor.busy < self._remaining():
                    proposal = self.evolution.ask(job)
                    proposals[job] = proposal
                    executor.submit(self._job(proposal))
                    job += 1
                outcome = executor.next_outcome()
                row = self._row(proposals.pop(outcome.job.job), outcome)
                self.store.append([row])
                self.evolution.tell(row)
                self._remember_probe(row)
                if time.monotonic() - last_sync > 2.0:
                    self.mirror.sync(self.store.rows)
                    last_sync = time.monotonic()
                self._report()
        finally:
            executor.close()

    def _report(self) -> None:
        if self.progress:
            self.progress({"done": len(self.store.rows), "budget": self.settings.budget, "failures": self.failures,
                           "hypervolume": self.evolution.hypervolume(),
                           "screened_out": self.evolution.screened_out})


def open_study(store: RunStore) -> OptunaMirror:
    """The run's Optuna study, brought up to date with evaluations.parquet."""
    from star.search_spaces import get_space

    settings = SearchSettings(**store.manifest["settings"])
    space = get_space(settings.space)
    objectives = parse_objectives(",".join(settings.objectives))
    mirror = OptunaMirror(settings.storage or default_storage(store.path), settings.study_name,
                          [o.name for o in objectives], [o.direction for o in objectives], space.gene_names(),
                          space.gene_sizes(), top_rung=settings.rungs - 1)
    mirror.sync(store.rows)
    return mirror


def _preset_genome(space: SearchSpace, name: str) -> tuple[int, ...]:
    from star.presets import get_preset

    config = get_preset(name)
    try:
        return space.encode(config)
    except StarError as err:
        raise StarError(f"--seed-preset {name}: {err}") from None


def create_run(folder: str | Path, settings: SearchSettings) -> RunStore:
    """Check the settings, fit the objective bounds and create the run folder (nothing is evaluated)."""
    from star.search_spaces import get_space

    settings.check()
    space = get_space(settings.space)
    for name in settings.seed_presets:
        _preset_genome(space, name)
    objectives = parse_objectives(",".join(settings.objectives))
    normaliser = fit_normaliser(objectives, space, settings.device_profile, settings.prompt, settings.context)
    score_columns: list[str] = []
    if settings.trains and settings.evaluator["kind"] == "suite":
        from star.evaluators.tasks import CATEGORIES, task_list

        score_columns = [f"category.{c}" for c in CATEGORIES] + [f"task.{t['name']}" for t in task_list()]
    manifest = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["star", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("star") else "",
        "settings": asdict(settings), "normaliser": normaliser.to_dict(), "score_columns": score_columns,
        "versions": versions(), "machine": machine_name(),
    }
    return RunStore.create(folder, manifest)


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
    from star.evolution import Candidate

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
