"""Running evaluations: one job = train and score one genome at one fidelity, on a Ray worker.

The searcher owns the population; this module only runs what it is handed.  `RayExecutor` keeps up to
`workers` jobs in flight and returns whichever finishes first (steady state: nobody waits for a
straggler).  A job that raises, returns a non-finite number, runs past its timeout, runs out of memory
or loses its worker is retried once, then returned as failed with a one-line reason; the search goes
on.  A job whose node died (a lost machine, not the genome's fault) is retried on the nodes left,
without using up that retry.

On a cluster (`join_cluster`) a worker may be another machine: it has neither the user's files nor
the run folder.  So a job carries everything it needs: the decoded architecture, the corpus (put in
Ray's object store once, checked by its digest on the worker) and the driver's code version, which
the worker must match; trained weights come back in the result and the driver writes them.  Every
node is checked before the first evaluation, so a cluster that cannot run the search is one line,
not a search full of failures.

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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from star.arch import ArchConfig
from star.errors import StarError
from star.machine import code_version
from star.validate import first_line

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
    """One evaluation, with everything a worker on another machine needs (it has no run folder)."""

    job: int
    config: ArchConfig  # the genome decoded by the driver: a worker needs no search space, nor its code
    genome_id: str
    fidelity: str  # a suite fidelity level ("0".."3") or a token count ("64K")
    seed: int
    threads: int
    evaluator: EvaluatorSpec
    faults: FaultPlan = field(default_factory=FaultPlan)
    keep_weights: bool = False  # return the trained proxy's safetensors bytes (suite evaluator only)
    probe: tuple[float, float] | None = None  # (score, learning rate) of this genome's recall probe, if measured
    code: str = ""  # the driver's `code_version()`: a worker running other code refuses the job
    corpus_digest: str = ""  # the digest of the corpus the driver shipped: the worker checks what arrived


@dataclass
class Outcome:
    job: EvalJob
    status: str  # "ok" or "failed"
    reason: str
    metrics: dict[str, Any]
    wall_s: float
    worker: str
    attempts: int
    environment: dict[str, Any] = field(default_factory=dict)  # the worker's machine, node, versions, corpus
    weights: bytes | None = None  # the trained proxy (safetensors), when the job kept it


class NonFiniteResult(RuntimeError):
    """An evaluation produced NaN or infinity (diverged training, or a rigged genome)."""


class ClusterMismatch(RuntimeError):
    """A worker cannot run the driver's search: other code, or a corpus that arrived altered.  Not
    the genome's fault, and every job on that node would fail the same way: the search stops."""


def node_identity() -> dict[str, str]:
    """The Ray node this process runs on (empty outside a Ray worker): rows say which node ran them."""
    import ray

    if not ray.is_initialized():
        return {"node": "", "node_ip": ""}
    return {"node": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def run_job(job: EvalJob, corpus: Any = None) -> dict[str, Any]:
    """Evaluate one job in this process (a Ray worker, or the driver in tests).  `corpus` is the
    driver's corpus (from the object store); None loads it here from `job.evaluator.corpus`."""
    started = time.perf_counter()
    here = code_version()
    if job.code and here != job.code:
        raise ClusterMismatch(f"this node runs star {here}, the driver {job.code}")
    fault = job.faults.fault_for(job.genome_id)
    if fault == "raise":
        raise RuntimeError(f"injected fault: genome {job.genome_id} raises")
    if fault == "hang":
        time.sleep(10**6)
    if fault == "crash":
        os._exit(17)
    metrics, environment, weights = _evaluate(job, corpus)
    if fault == "nan":
        metrics["quality"] = float("nan")
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteResult(f"non-finite result: {', '.join(f'{k}={metrics[k]}' for k in bad)}")
    return {"metrics": metrics, "environment": {**environment, **node_identity()}, "weights": weights,
            "wall_s": time.perf_counter() - started, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _device(requested: str) -> str:
    """Where a worker trains.  "auto" means a GPU only where Ray gave this task one: a task that
    declared no GPU must not take a GPU that Ray counts as free for others."""
    import ray

    if requested == "auto" and ray.is_initialized() and not ray.get_gpu_ids():
        return "cpu"
    return requested


def _evaluate(job: EvalJob, corpus: Any) -> tuple[dict[str, Any], dict[str, Any], bytes | None]:
    """The evaluation's metrics, where and how it ran, and the trained weights if asked for.

    On a cluster the worker's CPU, torch build and precision ("auto" is bf16 only where the CPU has
    it) can differ from the driver's, and bf16 rounding differs between CPU models, so a result is
    reproducible only on what is recorded here."""
    from star.machine import machine_name

    spec = job.evaluator
    environment: dict[str, Any] = {"machine": machine_name(), "threads": job.threads}
    if spec.kind == "synthetic":  # torch-free: a fresh worker answers in milliseconds, not after `import torch`
        from star.evaluators.fidelity import get_fidelity
        from star.evaluators.synthetic import evaluate_synthetic

        metrics = evaluate_synthetic(job.config, get_fidelity(job.fidelity).tokens, job.seed, spec.cost_s)
        return metrics, environment, None
    from star.evaluators.probe import ProbeResult, ProbeSettings
    from star.evaluators.suite import evaluate, load_corpus
    from star.scaling import to_proxy

    if corpus is None:
        corpus = load_corpus(spec.corpus)
    if job.corpus_digest and corpus.digest() != job.corpus_digest:
        raise ClusterMismatch(f"the corpus arrived as {corpus.digest()}, the driver sent {job.corpus_digest}")
    # The probe's budget is the same at every fidelity: a promoted genome reuses its earlier score.
    probe: ProbeResult | bool = spec.probe_steps != 0 if job.probe is None else ProbeResult(*job.probe, [], 0.0)
    with tempfile.TemporaryDirectory(prefix="star-weights-") as scratch:
        weights_path = str(Path(scratch) / "proxy.safetensors") if job.keep_weights else None
        result = evaluate(to_proxy(job.config), job.fidelity, seed=job.seed, corpus=corpus,
                          threads=job.threads, device=_device(spec.device), precision=spec.precision,
                          save_weights=weights_path, probe=probe,
                          probe_settings=None if spec.probe_steps is None else ProbeSettings(steps=spec.probe_steps))
        weights = Path(weights_path).read_bytes() if weights_path else None
    metrics: dict[str, Any] = {"quality": float(result.aggregate),
                               "train_tokens_per_s": float(result.training["tokens_per_s"]),
                               "final_loss": float(result.training["final_loss"]),
                               "probe_s": float(result.timing["probe_s"])}
    if result.probe is not None:
        metrics.update(recall_probe=float(result.probe.score), recall_probe_lr=float(result.probe.learning_rate))
    metrics.update({f"category.{name}": float(score) for name, score in result.categories.items()})
    metrics.update({f"task.{t.name}": float(t.score) for t in result.tasks})
    environment.update(torch_version=result.environment["torch"], python_version=result.environment["python"],
                       precision=result.environment["precision"], corpus=result.environment["corpus"],
                       device=result.environment["device"])
    return metrics, environment, weights


def describe_error(err: BaseException) -> str:
    """One line naming what went wrong, for the `reason` column."""
    import ray.exceptions as rex

    if isinstance(err, rex.OutOfMemoryError):
        return "out of memory (Ray's memory monitor killed the worker)"
    if isinstance(err, rex.NodeDiedError):
        return "node lost (its machine died or left the cluster)"
    if isinstance(err, rex.WorkerCrashedError | rex.ActorDiedError):
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


def _cluster_fault(err: BaseException) -> str | None:
    """What makes a node unable to run any job of this search, or None for a failure of the job.

    A worker that cannot import star (the project is not installed on its node) fails to unpickle
    the job's function; one running other code, or handed an altered corpus, raises ClusterMismatch."""
    import ray.exceptions as rex

    cause = getattr(err, "cause", None) if isinstance(err, rex.RayTaskError) else None
    if isinstance(cause, ClusterMismatch):
        return str(cause).splitlines()[0]
    text = str(err)
    if "No module named 'star'" in text or "No module named \"star\"" in text:
        return "star is not installed there (No module named 'star')"
    return None


# A lost node is retried on the others this many times; two failures of the job itself fail it.
NODE_LOSS_RETRIES = 3
JOB_FAILURES = 2


@dataclass
class _Running:
    job: EvalJob
    started: float
    attempt: int
    failures: int = 0  # failures of the job itself (raised, crashed, timed out): JOB_FAILURES fails it
    losses: int = 0  # attempts lost with their node: retried elsewhere, up to NODE_LOSS_RETRIES
    history: tuple[str, ...] = ()  # why each earlier attempt did not finish


RAY_CONNECT_TIMEOUT_S = 10.0
NODE_CHECK_TIMEOUT_S = 120.0  # a node starts a Python worker to answer: seconds on a busy machine


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


def _quiet_ray() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging.getLogger("ray").setLevel(logging.ERROR)  # keep Ray's start-up notices off the user's terminal


def start_local_ray(cpus: int) -> None:
    """A Ray on this machine alone, for this process (nothing to do if one is running)."""
    import ray

    _quiet_ray()
    if ray.is_initialized():
        return
    try:
        # address "local": a Ray of its own even where `ray start` runs a cluster on this machine, which
        # Ray would otherwise join (and then refuse num_cpus)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise StarError(f"cannot start Ray: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class ClusterInfo:
    """The nodes that can run evaluations, as checked by `join_cluster`."""

    nodes: tuple[dict[str, Any], ...]  # per node: node (id), node_ip, cpus, gpus, code, machine

    @property
    def cpus(self) -> int:
        return int(sum(n["cpus"] for n in self.nodes))

    @property
    def largest_node_cpus(self) -> int:
        return int(max((n["cpus"] for n in self.nodes), default=0))


def join_cluster(address: str, threads: int | None = None, gpus: float = 0.0) -> ClusterInfo:
    """Join the Ray cluster at `address` and check that every node can run this search: that it
    runs star at the driver's code version, that it can fetch the driver's objects, and that some
    node can hold a worker of `threads` CPUs and `gpus` GPUs.  Anything else is one StarError line,
    raised before the search writes a row.

    The driver's Ray authentication mode (RAY_AUTH_MODE) must be the cluster's: a driver without the
    token is refused, and a driver with token authentication against a cluster without it connects
    but its workers cannot fetch its objects.  Both are said in one line (docs/cluster.md)."""
    import ray

    _quiet_ray()
    _check_reachable(address)
    if not ray.is_initialized():  # a process already connected (ray.init in the caller's code) stays so
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError or its own errors here
            raise StarError(f"cannot join Ray at {address}: {_join_failure(err)}") from None
    info = _check_nodes()
    if threads is not None and threads > info.largest_node_cpus:
        raise StarError(f"--threads-per-worker {threads}: no node of the cluster at {address} has that many CPUs "
                        f"(the largest has {info.largest_node_cpus})")
    if gpus > 0 and not any(n["gpus"] >= min(gpus, 1.0) for n in info.nodes):
        raise StarError(f"--gpus-per-worker {gpus:g}: no node of the cluster at {address} has a GPU to give")
    return info


def _join_failure(err: BaseException) -> str:
    """Why joining failed, in one line: Ray hides an authentication refusal under a generic error."""
    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    if any("InvalidAuthToken" in text or "Authentication" in text for text in chain):
        return ("the cluster uses Ray's token authentication and this driver has no token: set RAY_AUTH_MODE=token "
                "and put the cluster's token (`ray get-auth-token` on its head) in ~/.ray/auth_token or "
                "RAY_AUTH_TOKEN")
    return first_line(err)


# Larger than what Ray passes inline with a task (100 KiB), so that the node check fetches it from the
# driver as a job fetches the corpus.
CHECK_OBJECT_BYTES = 256 * 1024


def _node_report(shipped: bytes) -> dict[str, Any]:
    """Run on each node by `_check_nodes`: what the node would run a job with.  `shipped` is unused:
    Ray fetches it from the driver before the call, and that fetch is what is checked."""
    from star.machine import machine_name

    return {**node_identity(), "code": code_version(), "machine": machine_name()}


def _check_nodes() -> ClusterInfo:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise StarError("the Ray cluster has no node with CPUs to run evaluations")
    report = ray.remote(num_cpus=0, max_retries=0)(_node_report)
    shipped = ray.put(bytes(CHECK_OBJECT_BYTES))
    refs = {n["NodeID"]: report.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(shipped) for n in nodes}
    driver = code_version()
    checked = []
    for node in nodes:
        where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
        try:
            answer = ray.get(refs[node["NodeID"]], timeout=NODE_CHECK_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise StarError(f"{where} did not answer within {NODE_CHECK_TIMEOUT_S:g} s") from None
        except Exception as err:
            fault = _cluster_fault(err)
            if "OwnerDiedError" in str(err) and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
                raise StarError(f"{where} cannot fetch this driver's objects: the driver uses Ray's token "
                                "authentication (RAY_AUTH_MODE=token) and the cluster does not; run star with "
                                "RAY_AUTH_MODE=disabled, or start the cluster with tokens (docs/cluster.md)") from None
            if fault is None:
                raise StarError(f"{where} cannot run star: {describe_error(err)}") from None
            raise StarError(f"{where} cannot run this search: {fault}; install star {driver} on every node") from None
        if answer["code"] != driver:
            raise StarError(f"{where} runs star {answer['code']}, the driver {driver}: install the same version "
                            "on every node")
        checked.append({**answer, "cpus": node["Resources"].get("CPU", 0), "gpus": node["Resources"].get("GPU", 0)})
    return ClusterInfo(tuple(checked))


class RayExecutor:
    """Up to `workers` jobs in flight on Ray, each declaring `threads` CPUs (and `gpus` GPUs, a
    fraction to share one).  `corpus` goes to the object store once and reaches every job from there."""

    def __init__(self, workers: int, threads: int, timeout_s: float, address: str | None = None,
                 gpus: float = 0.0, corpus: Any = None) -> None:
        import ray

        if workers < 1 or threads < 1:
            raise StarError(f"--workers and --threads-per-worker must be >= 1, got {workers} and {threads}")
        self.workers, self.threads, self.timeout_s = workers, threads, timeout_s
        if address:
            if not ray.is_initialized():  # `star search` joins and checks before it makes the run folder
                join_cluster(address, threads, gpus)
        else:
            start_local_ray(max(os.cpu_count() or 1, workers * threads))
            if gpus > 0 and ray.cluster_resources().get("GPU", 0) < min(gpus, 1.0):
                # Ray would wait forever for a GPU that never comes
                raise StarError(f"workers need {gpus:g} GPU each (--gpus-per-worker or --device cuda), and Ray "
                                "finds no GPU on this machine")
        self._ray = ray
        self._remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(run_job)
        self._corpus = ray.put(corpus) if corpus is not None else None
        self._running: dict[Any, _Running] = {}

    @property
    def free_slots(self) -> int:
        return self.workers - len(self._running)

    @property
    def busy(self) -> int:
        return len(self._running)

    def submit(self, job: EvalJob) -> None:
        self._start(_Running(job, time.monotonic(), 1))

    def _start(self, run: _Running) -> None:
        run.started = time.monotonic()
        self._running[self._remote.remote(run.job, self._corpus)] = run

    def next_outcome(self) -> Outcome:
        """Block until one job finishes for good (success, or failure after its retries).  A node
        that cannot run this search at all (see `_cluster_fault`) stops the search with a StarError."""
        while True:
            ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=0.25)
            if ready:
                ref = ready[0]
                run = self._running.pop(ref)
                try:
                    value = self._ray.get(ref)
                except Exception as err:  # any failure of the task is data about the genome
                    fault = _cluster_fault(err)
                    if fault is not None:
                        raise StarError(f"a worker cannot run this search: {fault}; install star "
                                        f"{code_version()} on every node") from None
                    lost = isinstance(err, self._ray.exceptions.NodeDiedError)
                    outcome = self._failed(run, describe_error(err), lost)
                    if outcome:
                        return outcome
                    continue
                note = (f"ok on attempt {run.attempt}; " + "; ".join(
                    f"attempt {i}: {why}" for i, why in enumerate(run.history, 1))) if run.history else ""
                return Outcome(run.job, "ok", note, value["metrics"], time.monotonic() - run.started, value["worker"],
                               run.attempt, value["environment"], value["weights"])
            now = time.monotonic()
            for ref, run in list(self._running.items()):
                if now - run.started > self.timeout_s:
                    self._running.pop(ref)
                    self._ray.cancel(ref, force=True)
                    outcome = self._failed(run, f"timeout: no result after {self.timeout_s:g} s")
                    if outcome:
                        return outcome

    def _failed(self, run: _Running, reason: str, node_lost: bool = False) -> Outcome | None:
        """Retry the job (None) or give it up (its failed Outcome)."""
        run.history += (reason,)
        if node_lost and run.losses < NODE_LOSS_RETRIES:
            run.losses += 1
        elif not node_lost and run.failures + 1 < JOB_FAILURES:
            run.failures += 1
        else:
            return Outcome(run.job, "failed", reason, {}, time.monotonic() - run.started, "", run.attempt)
        run.attempt += 1
        self._start(run)
        return None

    def close(self) -> None:
        for ref in list(self._running):
            self._ray.cancel(ref, force=True)
        self._running.clear()
