"""Running evaluations: one job = train and score one genome at one fidelity, on a Ray worker.

The searcher owns the population; this module only runs what it is handed.  `RayExecutor` keeps up to
`workers` jobs in flight and returns whichever finishes first (steady state: nobody waits for a
straggler).  A job that raises, returns a non-finite number, runs past its timeout, runs out of memory
or loses its worker is retried once, then returned as failed with a one-line reason; the search goes
on.

`FaultPlan` rigs chosen genomes to fail on purpose (raise, NaN, hang, worker crash), chosen by a hash
of the genome id so a retry fails the same way.  It exists to test this machinery
(`star search --inject-faults raise=0.1,...`), like chaos testing of a cluster.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from star.errors import StarError

FAULT_KINDS = ("raise", "nan", "hang", "crash")


@dataclass(frozen=True)
class FaultPlan:
    """Fraction of genomes rigged for each kind of failure (disjoint slices of the hash range)."""

    rates: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FaultPlan:
        if not text:
            return cls()
        rates = []
        for part in text.split(","):
            kind, _, value = part.partition("=")
            kind = kind.strip()
            if kind not in FAULT_KINDS:
                raise StarError(f"--inject-faults: unknown fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
            try:
                rate = float(value)
            except ValueError:
                raise StarError(f"--inject-faults: {part!r} must look like {kind}=0.1") from None
            if not 0 <= rate <= 1:
                raise StarError(f"--inject-faults: rate of {kind} must be in 0..1, got {rate}")
            rates.append((kind, rate))
        if sum(r for _, r in rates) > 1:
            raise StarError("--inject-faults: the rates add up to more than 1")
        return cls(tuple(rates))

    def fault_for(self, genome_id: str) -> str | None:
        u = int(hashlib.sha256(f"fault:{genome_id}".encode()).hexdigest()[:8], 16) / 16**8
        edge = 0.0
        for kind, rate in self.rates:
            edge += rate
            if u < edge:
                return kind
        return None

    def to_text(self) -> str:
        return ",".join(f"{k}={r:g}" for k, r in self.rates)


@dataclass(frozen=True)
class EvaluatorSpec:
    """How a worker turns a genome into a quality score."""

    kind: str = "suite"  # "suite" (train the proxy on the 50-task suite) or "synthetic" (a formula)
    corpus: str | None = None
    precision: str = "auto"
    device: str = "auto"
    cost_s: float = 0.0  # synthetic only: seconds to sleep, emulating training
    probe_steps: int | None = None  # suite only: steps of the recall probe (None: its default; 0: no probe)


@dataclass(frozen=True)
class EvalJob:
    job: int
    space: str
    genome: tuple[int, ...]
    genome_id: str
    fidelity: str  # a suite fidelity level ("0".."3") or a token count ("64K")
    seed: int
    threads: int
    evaluator: EvaluatorSpec
    faults: FaultPlan = field(default_factory=FaultPlan)
    weights_path: str | None = None  # where to keep the trained proxy (suite evaluator only)
    probe: tuple[float, float] | None = None  # (score, learning rate) of this genome's recall probe, if measured


@dataclass
class Outcome:
    job: EvalJob
    status: str  # "ok" or "failed"
    reason: str
    metrics: dict[str, Any]
    wall_s: float
    worker: str
    attempts: int
    environment: dict[str, Any] = field(default_factory=dict)  # the worker's machine, versions, precision, corpus


class NonFiniteResult(RuntimeError):
    """An evaluation produced NaN or infinity (diverged training, or a rigged genome)."""


def run_job(job: EvalJob) -> dict[str, Any]:
    """Evaluate one job in this process (a Ray worker, or the driver in tests)."""
    started = time.perf_counter()
    fault = job.faults.fault_for(job.genome_id)
    if fault == "raise":
        raise RuntimeError(f"injected fault: genome {job.genome_id} raises")
    if fault == "hang":
        time.sleep(10**6)
    if fault == "crash":
        os._exit(17)
    from star.search_spaces import get_space

    config = get_space(job.space).decode(job.genome)
    metrics, environment = _evaluate(config, job)
    if fault == "nan":
        metrics["quality"] = float("nan")
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteResult(f"non-finite result: {', '.join(f'{k}={metrics[k]}' for k in bad)}")
    return {"metrics": metrics, "environment": environment, "wall_s": time.perf_counter() - started,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _evaluate(config: Any, job: EvalJob) -> tuple[dict[str, Any], dict[str, Any]]:
    """The evaluation's metrics, and where and how it ran: on a cluster the worker's CPU, torch
    build and precision ("auto" is bf16 only where the CPU has it) can differ from the driver's, and
    bf16 rounding differs between CPU models, so a result is reproducible only on what is recorded here."""
    from star.machine import machine_name

    spec = job.evaluator
    environment: dict[str, Any] = {"machine": machine_name(), "threads": job.threads}
    if spec.kind == "synthetic":  # torch-free: a fresh worker answers in milliseconds, not after `import torch`
        from star.evaluators.fidelity import get_fidelity
        from star.evaluators.synthetic import evaluate_synthetic

        return evaluate_synthetic(config, get_fidelity(job.fidelity).tokens, job.seed, spec.cost_s), environment
    from star.evaluators.probe import ProbeResult, ProbeSettings
    from star.evaluators.suite import evaluate, load_corpus
    from star.scaling import to_proxy

    # The probe's budget is the same at every fidelity: a promoted genome reuses its earlier score.
    probe: ProbeResult | bool = spec.probe_steps != 0 if job.probe is None else ProbeResult(*job.probe, [], 0.0)
    result = evaluate(to_proxy(config), job.fidelity, seed=job.seed, corpus=load_corpus(spec.corpus),
                      threads=job.threads, device=spec.device, precision=spec.precision,
                      save_weights=job.weights_path, probe=probe,
                      probe_settings=None if spec.probe_steps is None else ProbeSettings(steps=spec.probe_steps))
    metrics: dict[str, Any] = {"quality": float(result.aggregate),
                               "train_tokens_per_s": float(result.training["tokens_per_s"]),
                               "final_loss": float(result.training["final_loss"]),
                               "probe_s": float(result.timing["probe_s"])}
    if result.probe is not None:
        metrics.update(recall_probe=float(result.probe.score), recall_probe_lr=float(result.probe.learning_rate))
    metrics.update({f"category.{name}": float(score) for name, score in result.categories.items()})
    metrics.update({f"task.{t.name}": float(t.score) for t in result.tasks})
    environment.update(torch_version=result.environment["torch"], python_version=result.environment["python"],
                       precision=result.environment["precision"], corpus=result.environment["corpus"])
    return metrics, environment


def describe_error(err: BaseException) -> str:
    """One line naming what went wrong, for the `reason` column."""
    import ray.exceptions as rex

    if isinstance(err, rex.OutOfMemoryError):
        return "out of memory (Ray's memory monitor killed the worker)"
    if isinstance(err, rex.WorkerCrashedError | rex.NodeDiedError | rex.ActorDiedError):
        return "worker died (killed or crashed)"
    if isinstance(err, rex.TaskCancelledError):
        return "cancelled"
    if isinstance(err, rex.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        if isinstance(cause, MemoryError):
            return "out of memory (MemoryError)"
        if isinstance(cause, NonFiniteResult):
            return str(cause).splitlines()[0]
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0] if text else ''}"[:300]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


@dataclass
class _Running:
    job: EvalJob
    started: float
    attempt: int
    first_failure: str = ""


RAY_CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str) -> None:
    """Refuse, within seconds, a HOST:PORT where nothing answers: Ray itself retries an unreachable
    address for a long time and prints pages of warnings meanwhile.  'auto' and 'ray://' addresses
    are left to Ray, which finds or reaches them its own way."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise StarError(f"--ray-address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), 'auto' or ray://...")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise StarError(f"cannot reach Ray at {address}: {reason} (is `ray start --head` running there?)") from None


class RayExecutor:
    """Up to `workers` jobs in flight on Ray, each declaring `threads` CPUs (and `gpus` GPUs)."""

    def __init__(self, workers: int, threads: int, timeout_s: float, address: str | None = None,
                 gpus: float = 0.0) -> None:
        import ray

        if workers < 1 or threads < 1:
            raise StarError(f"--workers and --threads-per-worker must be >= 1, got {workers} and {threads}")
        self.workers, self.threads, self.timeout_s = workers, threads, timeout_s
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        logging.getLogger("ray").setLevel(logging.ERROR)  # keep Ray's start-up notices off the user's terminal
        if address:
            _check_reachable(address)
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(num_cpus=max(os.cpu_count() or 1, workers * threads), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise StarError(f"cannot start or join Ray{f' at {address}' if address else ''}: "
                                f"{str(err).splitlines()[0]}") from None
        self._ray = ray
        self._remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(run_job)
        self._running: dict[Any, _Running] = {}

    @property
    def free_slots(self) -> int:
        return self.workers - len(self._running)

    @property
    def busy(self) -> int:
        return len(self._running)

    def submit(self, job: EvalJob, attempt: int = 1, first_failure: str = "") -> None:
        self._running[self._remote.remote(job)] = _Running(job, time.monotonic(), attempt, first_failure)

    def next_outcome(self) -> Outcome:
        """Block until one job finishes for good (success, or its second failure)."""
        while True:
            ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=0.25)
            if ready:
                ref = ready[0]
                run = self._running.pop(ref)
                try:
                    value = self._ray.get(ref)
                except Exception as err:  # any failure of the task is data about the genome
                    outcome = self._failed(run, describe_error(err))
                    if outcome:
                        return outcome
                    continue
                note = f"ok on retry; first attempt: {run.first_failure}" if run.first_failure else ""
                return Outcome(run.job, "ok", note, value["metrics"], time.monotonic() - run.started, value["worker"],
                               run.attempt, value["environment"])
            now = time.monotonic()
            for ref, run in list(self._running.items()):
                if now - run.started > self.timeout_s:
                    self._running.pop(ref)
                    self._ray.cancel(ref, force=True)
                    outcome = self._failed(run, f"timeout: no result after {self.timeout_s:g} s")
                    if outcome:
                        return outcome

    def _failed(self, run: _Running, reason: str) -> Outcome | None:
        if run.attempt < 2:
            self.submit(run.job, run.attempt + 1, reason)
            return None
        return Outcome(run.job, "failed", reason, {}, time.monotonic() - run.started, "", run.attempt)

    def close(self) -> None:
        for ref in list(self._running):
            self._ray.cancel(ref, force=True)
        self._running.clear()
