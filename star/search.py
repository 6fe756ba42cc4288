"""`star search`: the loop that joins the searcher, the executor and the run store.

    settings ──▶ Evolution.ask ──▶ screening metrics (driver) ──▶ job on a Ray worker (if training)
          ▲                                                              │
          └────────── Evolution.tell ◀── row ──▶ evaluations.parquet ◀──┘ ──▶ Optuna study

Static-only searches (no `quality` objective) never start Ray: every objective is computed in the
driver at screening time, in milliseconds.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from star.errors import StarError
from star.evolution import SELECTIONS, Evolution, EvolutionSettings, Proposal
from star.executor import EvalJob, EvaluatorSpec, FaultPlan, Outcome, RayExecutor
from star.genome import SearchSpace, genome_id
from star.machine import code_version, fingerprint, machine_name
from star.objectives import (
    Constraint,
    Normaliser,
    Objective,
    device_measured_on,
    fit_normaliser,
    parse_objectives,
    screening_metrics,
    violation,
)
from star.queries import front_rows
from star.store import EVALUATIONS, MANIFEST, STUDY, OptunaMirror, RunStore, default_storage
from star.validate import finite, integer, one_line, show

DEFAULT_OBJECTIVES = "quality,decode_ms,cache_bytes"
DEFAULT_SPACE = "lfm2"
DEFAULT_BUDGET = 64

# `star search` flag → where its value lives in the settings (and so in the manifest).
SETTING_OF_FLAG = {"space": "space", "objectives": "objectives", "budget": "budget", "seed": "seed",
                   "seed_preset": "seed_presets", "selection": "selection", "population": "population",
                   "fidelities": "fidelities", "eta": "eta", "device_profile": "device_profile", "prompt": "prompt",
                   "context": "context", "evaluator": "evaluator.kind", "synthetic_cost": "evaluator.cost_s",
                   "corpus": "evaluator.corpus", "precision": "evaluator.precision", "device": "evaluator.device",
                   "eval_timeout": "eval_timeout_s", "probe_steps": "evaluator.probe_steps",
                   "inject_faults": "inject_faults", "storage": "storage", "keep_weights": "keep_weights"}
STATIC_BATCH = 64  # static-only searches persist this many evaluations per write
INT64 = (-(2**63), 2**63 - 1)  # every integer setting fits Parquet's int64 (seeds and counts are stored there)
PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


def _typed(value: Any, hint: Any, where: str) -> Any:
    """`value`, read from a manifest, as a dataclass field of type `hint` holds it (ints are int64,
    floats finite; a list or dict of them checked item by item), or a StarError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (types.UnionType, typing.Union):  # only `X | None` is used
        inner = [a for a in args if a is not type(None)]
        return None if value is None and len(inner) < len(args) else _typed(value, inner[0], where)
    if hint is bool:
        if not isinstance(value, bool):
            raise StarError(f"{where} must be true or false, got {show(value)}")
        return value
    if hint is int:
        return integer(value, where, *INT64)
    if hint is float:
        return finite(value, where)
    if hint is str:
        if not isinstance(value, str):
            raise StarError(f"{where} must be a string, got {show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise StarError(f"{where} must be a list, got {show(value)}")
        return [_typed(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise StarError(f"{where} must be an object, got {show(value)}")
        return {key: _typed(item, args[1], f"{where}.{key}") for key, item in value.items()}
    raise TypeError(f"no manifest reader for a field of type {hint}")  # a new field type: teach _typed


def _fields_from(cls: type, data: Any, where: str) -> dict[str, Any]:
    """The keyword arguments of dataclass `cls` from a manifest object: no unknown key, every key
    without a default present, every value of its field's type.  A key with a default may be absent
    (a run written before the field existed ran with that default)."""
    if not isinstance(data, dict):
        raise StarError(f"{where} must be an object, got {show(data)}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise StarError(f"{where}: unknown key {show(unknown[0])} (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _typed(data[name], hints[name], f"{where}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise StarError(f"{where}: missing key {name!r}")
    return values


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
    fidelities: list[str] = field(default_factory=lambda: ["0", "2"])  # screen, then the default rung
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

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> SearchSettings:
        """The settings of a new run from `star search` flags (by their argparse names; None or
        absent = not given, so the default here applies).  The defaults live in this class and in
        EvaluatorSpec, nowhere else; the values are checked by `check`."""
        from star.objectives import CONSTRAINT_FLAGS
        from star.validate import parse_amount

        given = {flag: value for flag, value in flags.items() if value is not None}
        if given.get("synthetic_cost", 0.0) < 0:
            raise StarError(f"--synthetic-cost must be >= 0, got {given['synthetic_cost']}")
        if given.get("corpus"):
            from star.evaluators.corpus import user_corpus

            user_corpus(given["corpus"])  # fail now, in the driver, not in every worker
        settings = cls(space=DEFAULT_SPACE, objectives=_split(DEFAULT_OBJECTIVES), budget=DEFAULT_BUDGET)
        evaluator = dict(settings.evaluator)
        for flag, value in given.items():
            path = SETTING_OF_FLAG.get(flag)
            if path is None:
                continue
            if path.startswith("evaluator."):
                evaluator[path.removeprefix("evaluator.")] = value
            elif path in ("objectives", "fidelities"):
                setattr(settings, path, _split(value))
            else:
                setattr(settings, path, value)
        settings.evaluator = asdict(EvaluatorSpec(**evaluator))
        settings.constraints = {metric: parse_amount(given[flag], "--" + flag.replace("_", "-"))
                                for flag, metric in CONSTRAINT_FLAGS.items() if flag in given}
        return settings

    def check_same_flags(self, flags: dict[str, Any]) -> None:
        """--resume accepts the run's own flags again (re-running the same command line works), but a
        run's settings cannot change: any flag given with a value other than this run's is an error
        naming it.  (--budget may change on --resume: it is not compared here.)"""
        from star.objectives import CONSTRAINT_FLAGS

        wanted = asdict(SearchSettings.from_flags(flags))
        stored = asdict(self)
        paths = {flag: path for flag, path in SETTING_OF_FLAG.items() if flag != "budget"}
        paths.update({flag: f"constraints.{metric}" for flag, metric in CONSTRAINT_FLAGS.items()})

        def lookup(settings: Any, path: str) -> Any:
            for part in path.split("."):
                settings = settings.get(part) if isinstance(settings, dict) else None
            return settings

        for flag, path in paths.items():
            if flags.get(flag) is not None and lookup(wanted, path) != lookup(stored, path):
                raise StarError(f"--{flag.replace('_', '-')} {lookup(wanted, path)!r} differs from this run's "
                                f"{lookup(stored, path)!r}; a run's settings are fixed (only --budget and execution "
                                "flags may change on --resume)")

    @classmethod
    def from_manifest(cls, data: Any, source: str) -> SearchSettings:
        """The settings a manifest stores, typed: the keys and types are this dataclass's fields (and
        the evaluator's, EvaluatorSpec's), so a damaged or hand-edited manifest is one error line
        naming `source` and the key, never a TypeError later.  What the values mean (a known space,
        objective, profile...) is `check`'s to say."""
        where = f"{source} settings"
        values = _fields_from(cls, data, where)
        if "evaluator" in values:
            values["evaluator"] = asdict(EvaluatorSpec(**_fields_from(EvaluatorSpec, values["evaluator"],
                                                                      f"{where}.evaluator")))
        return cls(**values)

    def check(self) -> None:
        """Every setting valid, for a new run and again on --resume (a manifest may have been edited)."""
        from star.evaluators.fidelity import get_fidelity
        from star.objectives import CONSTRAINT_FLAGS
        from star.search_spaces import get_space

        # the types, and only what a manifest can hold and give back (e.g. a seed that fits int64)
        evaluator = SearchSettings.from_manifest(asdict(self), "search").evaluator
        space = get_space(self.space)
        for name in self.seed_presets:
            _preset_genome(space, name)
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
        if not self.fidelities:
            raise StarError("--fidelities names no fidelity")
        tokens = [get_fidelity(f).tokens for f in self.fidelities]
        if tokens != sorted(tokens) or len(set(tokens)) != len(tokens):
            raise StarError(f"--fidelities must increase, got {','.join(self.fidelities)}")
        if evaluator["kind"] not in ("suite", "synthetic"):
            raise StarError(f"--evaluator must be suite or synthetic, got {evaluator['kind']!r}")
        if evaluator["precision"] not in PRECISIONS:
            raise StarError(f"--precision must be one of {', '.join(PRECISIONS)}, got {evaluator['precision']!r}")
        if evaluator["device"] not in DEVICES:
            raise StarError(f"--device must be one of {', '.join(DEVICES)}, got {evaluator['device']!r}")
        if not 0 <= evaluator["cost_s"] < math.inf:
            raise StarError(f"--synthetic-cost must be >= 0, got {evaluator['cost_s']}")
        probe_steps = evaluator.get("probe_steps")
        if probe_steps is not None and probe_steps < 0:
            raise StarError(f"--probe-steps must be >= 0, got {probe_steps}")
        if not 0 < self.eval_timeout_s < math.inf:
            raise StarError(f"--eval-timeout must be > 0 and finite, got {self.eval_timeout_s}")
        for metric, limit in self.constraints.items():
            if metric not in CONSTRAINT_FLAGS.values():
                known = ", ".join(CONSTRAINT_FLAGS.values())
                raise StarError(f"unknown constraint metric {metric!r} (known: {known})")
            if not 0 < limit < math.inf:
                raise StarError(f"constraint {metric} must be > 0 and finite, got {limit}")
        if not self.study_name:
            raise StarError("the Optuna study name must not be empty")
        if self.prompt < 1 or self.context < 1:
            raise StarError("--prompt and --context must be >= 1")
        if self.inject_faults and not self.trains:
            raise StarError("--inject-faults needs an objective that trains (quality); static objectives never fail")
        FaultPlan.parse(self.inject_faults)
        if self.keep_weights and not (self.trains and evaluator["kind"] == "suite"):
            raise StarError("--keep-weights needs trained proxies: the quality objective with the suite evaluator")

    @property
    def trains(self) -> bool:
        return "quality" in self.objectives

    def worker_gpus(self, given: float | None) -> float:
        """GPUs each worker declares: as given (--gpus-per-worker), else one with --device cuda."""
        return given if given else (1.0 if self.evaluator["device"] == "cuda" else 0.0)

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

    # star's version with a digest of its code: an edited checkout is not the release it started from
    return {"star": code_version(), "python": platform.python_version(), "torch": version("torch"),
            "ray": version("ray"), "optuna": version("optuna"), "pyarrow": version("pyarrow")}


class Search:
    """A search over one run folder; `run()` evaluates until the budget is spent."""

    def __init__(self, store: RunStore, workers: int = 1, threads_per_worker: int | None = None,
                 ray_address: str | None = None, progress: Progress | None = None, *, trust_space: bool = False,
                 trust_storage: bool = False, gpus_per_worker: float | None = None) -> None:
        """`trust_space` and `trust_storage`: the user's word that the run's space may be their code
        and its storage another database (`run_space`, `run_storage`); a new run's own flags are.
        `gpus_per_worker`: GPUs each worker declares (a fraction shares one; with --device cuda and
        none given, one each)."""
        self.store = store
        source = str(store.path / MANIFEST)
        self.settings = SearchSettings.from_manifest(store.manifest["settings"], source)
        self.space: SearchSpace = run_space(self.settings, source, trust_space)
        self.objectives: tuple[Objective, ...] = parse_objectives(",".join(self.settings.objectives))
        self.constraints = [Constraint(m, v) for m, v in self.settings.constraints.items()]
        self.normaliser = Normaliser.from_dict(store.manifest["normaliser"])
        self.workers = workers
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        self.ray_address = ray_address
        self.gpus = self.settings.worker_gpus(gpus_per_worker)
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
        self.mirror = open_study(store, trust_space=trust_space, trust_storage=trust_storage)
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
            if outcome.weights is not None:
                row["weights_file"] = self._weights_file(proposal)
                self.store.write_file(row["weights_file"], outcome.weights)
        return row

    def _weights_file(self, proposal: Proposal) -> str:
        """Relative to the run folder: one file per genome and fidelity."""
        return f"weights/{proposal.genome_id}-{self.settings.fidelities[proposal.rung]}.safetensors"

    def _remember_probe(self, row: dict[str, Any]) -> None:
        """The probe's budget is the same at every rung: a promoted genome reuses its first score."""
        if row["status"] == "ok" and row.get("recall_probe") is not None:
            self._probes.setdefault(str(row["genome_id"]), (float(row["recall_probe"]), float(row["recall_probe_lr"])))

    def _job(self, proposal: Proposal, corpus_digest: str) -> EvalJob:
        return EvalJob(job=proposal.job, config=self.space.decode(proposal.genome), genome_id=proposal.genome_id,
                       fidelity=self.settings.fidelities[proposal.rung], seed=self.settings.seed,
                       threads=self.threads, evaluator=EvaluatorSpec(**self.settings.evaluator),
                       faults=self.fault_plan, keep_weights=self.settings.keep_weights,
                       probe=self._probes.get(proposal.genome_id), code=code_version(), corpus_digest=corpus_digest)

    # ---- the loop --------------------------------------------------------------------------------

    def run(self) -> SearchReport:
        started = time.monotonic()
        next_job = 1 + max((int(r["job"]) for r in self.store.rows), default=-1)
        if self._remaining() <= 0:
            pass  # a finished run: nothing to evaluate, so no Ray to start
        elif self.settings.trains:
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
        # The corpus is read here, once, and shipped: a worker on another machine lacks the user's path.
        corpus = None
        if self.settings.evaluator["kind"] == "suite":
            from star.evaluators.corpus import bundled_corpus, user_corpus

            path = self.settings.evaluator["corpus"]
            corpus = user_corpus(path) if path else bundled_corpus()
        executor = RayExecutor(self.workers, self.threads, self.settings.eval_timeout_s, self.ray_address,
                               gpus=self.gpus, corpus=corpus)
        digest = corpus.digest() if corpus is not None else ""
        proposals: dict[int, Proposal] = {}
        last_sync = time.monotonic()
        try:
            while self._remaining() > 0:
                while executor.free_slots > 0 and executor.busy < self._remaining():
                    proposal = self.evolution.ask(job)
                    proposals[job] = proposal
                    executor.submit(self._job(proposal, digest))
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


def open_run(path: str | Path) -> RunStore:
    """Open a run folder, checked, for any command: pareto, report, export, dashboard and --resume
    all come through here.

    `RunStore.open` checks the files (the manifest's structure, every row's columns); this checks what
    needs the search's own definitions: the settings' keys and types, the objectives known and the
    same as the normaliser's, every rung one the run has.  The settings in `store.manifest` come back
    complete (keys a run predates filled with their defaults), so readers need no `.get`."""
    store = RunStore.open(path)
    source = str(store.path / MANIFEST)
    settings = SearchSettings.from_manifest(store.manifest["settings"], source)
    try:
        objectives = parse_objectives(",".join(settings.objectives))
    except StarError as err:
        raise StarError(f"{source} settings.objectives: {err}") from None
    if [o.name for o in objectives] != settings.objectives:
        raise StarError(f"{source} settings.objectives must be a list of objective names, got {settings.objectives}")
    normaliser = store.manifest["normaliser"]
    if normaliser["names"] != settings.objectives or normaliser["directions"] != [o.direction for o in objectives]:
        raise StarError(f"{source}: normaliser.names and directions {normaliser['names']} "
                        f"{normaliser['directions']} do not match settings.objectives {settings.objectives}")
    for row in store.rows:
        if row["rung"] >= settings.rungs:
            raise StarError(f"{store.path / EVALUATIONS}: row with eval_index {row['eval_index']}, column 'rung': "
                            f"{row['rung']} is not a rung of this run (it has {settings.rungs}: "
                            f"0..{settings.rungs - 1})")
        if row["status"] == "ok" and row["recall_probe"] is not None and row["recall_probe_lr"] is None:
            raise StarError(f"{store.path / EVALUATIONS}: row with eval_index {row['eval_index']}, column "
                            "'recall_probe_lr': is empty (null) where recall_probe has a score")
    store.manifest["settings"] = asdict(settings)
    return store


def _split(value: str | list[str]) -> list[str]:
    """A comma-separated flag value as a list (a list is taken as it is)."""
    return list(value) if isinstance(value, list) else [part.strip() for part in value.split(",") if part.strip()]


def run_space(settings: SearchSettings, source: str, trust_space: bool = False) -> SearchSpace:
    """The search space a run's settings name.

    A run folder may come from anyone, and a space named 'module:ATTR' or 'file.py:ATTR' is loaded
    by importing or executing that code.  So opening a run folder runs none of it: from a manifest
    (`source`) only star's registered spaces load, unless the user trusts the folder (`trust_space`:
    `--trust-space`, or `--space` naming the space again)."""
    from star.search_spaces import get_space, is_code, list_spaces

    if is_code(settings.space) and not trust_space:
        raise StarError(f"{source}: search space {settings.space!r} is code, not one of star's spaces "
                        f"({', '.join(list_spaces())}), and opening a run folder runs none of its code: "
                        "pass --trust-space if you trust this run folder")
    try:
        return get_space(settings.space)
    except StarError as err:
        raise StarError(f"{source}: {err}") from None


def run_storage(settings: SearchSettings, folder: Path, source: str, trust_storage: bool = False) -> str:
    """The Optuna storage URL of the run in `folder`: its own study.db, unless the settings name another.

    Optuna creates and writes whatever SQLite file it is given and connects to any database server,
    so from a manifest (`source`) only the folder's own study.db opens, unless the user names the
    storage too (`trust_storage`: `--storage URL`)."""
    own = default_storage(folder)
    if not settings.storage or trust_storage or _is_sqlite_file(settings.storage, folder / STUDY):
        return settings.storage or own
    raise StarError(f"{source}: Optuna storage {settings.storage!r} is not this run folder's {STUDY}, and "
                    "opening a run folder opens no other database: pass --storage with that URL to open it")


def _is_sqlite_file(url: str, path: Path) -> bool:
    """Whether `url` is a plain SQLite URL of the file at `path` (no options, any spelling of the path)."""
    prefix = "sqlite:///"
    try:
        return url.startswith(prefix) and Path(url.removeprefix(prefix)).resolve() == path.resolve()
    except (OSError, ValueError):  # a path the OS cannot resolve (a NUL, a loop) is not this file
        return False


def check_resume(store: RunStore, budget: int | None = None, *, trust_space: bool = False,
                 trust_storage: bool = False) -> SearchSettings:
    """Everything a resume of `store` (opened with `open_run`) needs, checked before it writes
    anything: the space and storage ones it may open (`run_space`, `run_storage`), every stored
    setting valid again (the manifest may have been edited since, or made by another star; with the
    new `budget` if one is given), every genome one of the search space, the run folder and the
    paths it writes usable, and study.db this run's study.  Without this a resume could rewrite the
    manifest and then fail."""
    source = str(store.path / MANIFEST)
    settings = SearchSettings.from_manifest(store.manifest["settings"], source)
    space = run_space(settings, source, trust_space)  # before settings.check(), which loads it
    run_storage(settings, store.path, source, trust_storage)
    if budget is not None:
        if budget < len(store.rows):
            raise StarError(f"--budget {budget} is below the {len(store.rows)} evaluations already done")
        settings.budget = budget
    try:
        settings.check()
    except StarError as err:
        raise StarError(f"{source}: the run's settings are not valid: {err}") from None
    _check_genomes(store, space)
    _check_configs(store)
    store.check_writable()
    _check_study_file(store, settings)
    return settings


def _check_configs(store: RunStore) -> None:
    """Every row's config_json is an architecture: the report written at the end of a resume reads
    them, and failing there would come after new evaluations were written.  Each distinct config
    is parsed once (a promoted genome repeats its config at every rung)."""
    from star.arch import ArchConfig

    seen: set[str] = set()
    for row in store.rows:
        if row["config_json"] not in seen:
            ArchConfig.from_json(row["config_json"], source=f"{store.path / EVALUATIONS}: row with eval_index "
                                                            f"{row['eval_index']}, column 'config_json'")
            seen.add(row["config_json"])


def _check_genomes(store: RunStore, space: SearchSpace) -> None:
    """Every row's genome has the space's genes, each within its size (the search mutates them and
    the Optuna study holds them as bounded integer parameters)."""
    sizes = space.gene_sizes()
    for row in store.rows:
        genes = [int(g) for g in row["genome"].split(",")]
        if len(genes) != len(sizes) or any(g >= size for g, size in zip(genes, sizes, strict=True)):
            raise StarError(f"{store.path / EVALUATIONS}: row with eval_index {row['eval_index']}, column 'genome': "
                            f"{show(row['genome'])} is not a genome of search space {space.name!r} "
                            f"({len(sizes)} genes, each below its size)")


def _check_study_file(store: RunStore, settings: SearchSettings) -> None:
    """study.db, if there is one, is this run's Optuna study, found out read-only.

    Optuna opens a storage for writing: it adds its tables to whatever SQLite file it is given and a
    study to a database that lacks one, before it notices a problem.  So garbage, another program's
    database, or another run's study is refused here, before Optuna touches it.  Another --storage
    is Optuna's to check."""
    import sqlite3

    db = store.path / STUDY
    if settings.storage or not os.path.lexists(db):
        return  # a run's own study is made (or re-made from evaluations.parquet) on open
    if db.is_symlink() or not db.is_file():
        raise StarError(f"{db} is not a regular file; move it out of the run folder")
    if db.stat().st_size == 0 or any(os.path.lexists(f"{db}{end}") for end in ("-journal", "-wal")):
        return  # empty, or a write cut short that SQLite rolls back when Optuna opens it
    try:
        from optuna.storages._rdb.models import BaseModel

        needed = set(BaseModel.metadata.tables)
    except ImportError:  # Optuna moved its models: check the tables every version has had
        needed = {"studies", "study_directions", "trials", "trial_user_attributes", "version_info"}
    objectives = parse_objectives(",".join(settings.objectives))
    try:
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            foreign = tables - needed - {"alembic_version", "sqlite_sequence"}
            if foreign:
                raise StarError(f"{db} is not an Optuna study database (it has a table {sorted(foreign)[0]!r}); "
                                "move it away to rebuild the study from the run")
            if needed - tables:
                if "studies" in tables and connection.execute("SELECT count(*) FROM studies").fetchone()[0]:
                    raise StarError(f"{db} is an Optuna study database this Optuna cannot open (no table "
                                    f"{sorted(needed - tables)[0]!r}); move it away to rebuild the study from the run")
                return  # Optuna's tables half made (a first start cut short): Optuna completes them
            found = connection.execute("SELECT study_id FROM studies WHERE study_name = ?",
                                       (settings.study_name,)).fetchone()
            if found is None:
                if connection.execute("SELECT count(*) FROM studies").fetchone()[0]:
                    raise StarError(f"{db} holds no study named {settings.study_name!r}: it is not this run's "
                                    "study; move it away to rebuild the study from the run")
                return
            directions = [d for (d,) in connection.execute(
                "SELECT direction FROM study_directions WHERE study_id = ? ORDER BY objective", found)]
            trials = connection.execute("SELECT count(*) FROM trials WHERE study_id = ?", found).fetchone()[0]
            ids = connection.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.study_id = ? AND a.key = 'genome_id'", found).fetchall()
        finally:
            connection.close()
    except sqlite3.Error as err:
        raise StarError(f"{db} is not a readable Optuna study database ({one_line(err)}); move it away to "
                        "rebuild the study from the run") from None
    expected = ["MAXIMIZE" if o.direction == "max" else "MINIMIZE" for o in objectives]
    if directions != expected:
        raise StarError(f"{db}: study {settings.study_name!r} optimises {directions}, this run {expected}: it is not "
                        "this run's study; move it away to rebuild the study from the run")
    if trials > len(store.rows) or any(not _same_id(value, store.rows, number) for number, value in ids):
        raise StarError(f"{db}: study {settings.study_name!r} holds trials that are not this run's evaluations "
                        f"({trials} trials, {len(store.rows)} evaluations); move it away to rebuild the study "
                        "from the run")


def _same_id(value_json: Any, rows: list[dict[str, Any]], number: Any) -> bool:
    """Whether Optuna's trial `number`, with genome id attribute `value_json`, mirrors rows[number]."""
    try:
        return isinstance(number, int) and 0 <= number < len(rows) and \
            json.loads(value_json) == rows[number]["genome_id"]
    except (TypeError, ValueError):
        return False


def open_study(store: RunStore, *, trust_space: bool = False, trust_storage: bool = False) -> OptunaMirror:
    """The run's Optuna study, brought up to date with evaluations.parquet (checked first: a space
    or storage the user has not trusted (`run_space`, `run_storage`), a study file that is not this
    run's, or a genome outside the space, is an error before Optuna writes)."""
    source = str(store.path / MANIFEST)
    settings = SearchSettings.from_manifest(store.manifest["settings"], source)
    space = run_space(settings, source, trust_space)
    storage = run_storage(settings, store.path, source, trust_storage)
    _check_genomes(store, space)
    _check_study_file(store, settings)
    objectives = parse_objectives(",".join(settings.objectives))
    mirror = OptunaMirror(storage, settings.study_name,
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

    settings.check()  # the seed presets too
    space = get_space(settings.space)
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
        "versions": versions(), "machine": machine_name(), "fingerprint": fingerprint(with_torch=False),
        "device_measured_on": device_measured_on(settings.device_profile),
    }
    return RunStore.create(folder, manifest)
