"""Score a proxy: the recall probe, then training on the fidelity's tasks and scoring held-out examples.

What is trained depends on the fidelity (evaluators/fidelity.py): at CPU budgets real text alone
(MAD's protocol, one skill per run), at the GPU budget the whole 50-task mixture in one multi-task
run (the tasks share skills, and one run pays model construction once).  Every fidelity also runs
the in-context recall probe (evaluators/probe.py), because no budget a CPU affords teaches recall
through the mixture.  The quality is a weighted mean of the category scores measured
(`CATEGORY_WEIGHTS`, justified in docs/suite.md).

Rows are grouped by length (32, 64, 128, 256 tokens) and every batch holds the fidelity's
`batch_tokens` tokens of one length, so each training step costs the same and compiled kernels see
few shapes.  Held-out examples come from their own random streams (and, for text, held-out
documents); the training stream skips any row that equals a held-out row, so no scored example is
ever trained on.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import torch

from star.arch import ArchConfig
from star.errors import StarError
from star.machine import machine_name
from star.validate import check_memory

from .corpus import Corpus, bundled_corpus, user_corpus
from .fidelity import DEFAULT_FIDELITY, TOKENS_PER_BATCH, Fidelity, get_fidelity
from .probe import ProbeResult, ProbeSettings, recall_probe
from .tasks import CATEGORIES, PAD, SUITE_VERSION, VOCAB_SIZE, Example, Suite, Task, build_suite
from .trainer import IGNORE, ProxyTrainer, TrainSettings, resolve_device

HELD_OUT_TOKENS = 4096  # per task: 16 rows of 256 tokens ... 128 rows of 32

# The quality's weight of each category (1 where not named), over the categories a fidelity measures.
# Recall and language modelling count double: they are the two capabilities with published evidence
# that a small model's score carries to full scale (Zoology: associative recall accounts for most of
# the perplexity gap between gated convolutions and attention; scaling laws: language-modelling loss
# falls predictably with size).  docs/suite.md has the reasoning and the measurements.
CATEGORY_WEIGHTS = {"in_context_recall": 2.0, "real_text": 2.0}


def quality(categories: dict[str, float]) -> float:
    """The weighted mean of the measured category scores (CATEGORY_WEIGHTS, 1 for the others)."""
    weights = {c: CATEGORY_WEIGHTS.get(c, 1.0) for c in categories}
    return sum(weights[c] * score for c, score in categories.items()) / sum(weights.values())


def load_corpus(path: str | None) -> Corpus:
    return user_corpus(path) if path else bundled_corpus()


def example_key(task: Task, example: Example) -> bytes:
    return hashlib.sha256(task.name.encode() + b"\0" + repr(example.tokens).encode()).digest()


def held_out_examples(suite: Suite, task: Task) -> list[Example]:
    """The scored examples of a task: the same for every run of this suite version and corpus."""
    rng = random.Random(f"star-suite-v{SUITE_VERSION}/{task.name}/held-out")
    sources = replace(suite.sources, held_out=True)
    return [task.make(rng, sources) for _ in range(max(1, HELD_OUT_TOKENS // task.seq_len))]


class TrainingStream:
    """Deterministic endless training rows per task, never equal to a held-out row."""

    def __init__(self, suite: Suite, task: Task, seed: int, held_out: set[bytes]) -> None:
        self.suite, self.task, self.held_out = suite, task, held_out
        self.rng = random.Random(f"star-suite-v{SUITE_VERSION}/{task.name}/train/{seed}")
        self.rejected = 0

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        for _ in range(1000):
            example = self.task.make(self.rng, self.suite.sources)
            if example_key(self.task, example) not in self.held_out:
                return example
            self.rejected += 1
        raise RuntimeError(f"task {self.task.name}: cannot draw a training row that differs from the held-out set")


def encode_rows(suite: Suite, rows: list[tuple[Task, Example]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of shape (rows, seq_len): the task token, then the example; targets are the
    next token at answer positions and IGNORE elsewhere."""
    full = torch.full((len(rows), seq_len + 1), PAD, dtype=torch.long)
    answer = torch.zeros((len(rows), seq_len + 1), dtype=torch.bool)
    for r, (task, ex) in enumerate(rows):
        tokens = [suite.task_token(task.name), *ex.tokens]
        if len(tokens) > seq_len:
            raise ValueError(f"task {task.name}: a row of {len(tokens)} tokens exceeds {seq_len}")
        full[r, :len(tokens)] = torch.tensor(tokens)
        positions = [p + 1 for start, end in ex.spans for p in range(start, end)]
        answer[r, positions] = True
    targets = torch.where(answer, full, IGNORE)
    inputs = full
    return inputs[:, :-1], targets[:, 1:]


class Mixture:
    """Batches of the training mixture: a length bucket chosen in proportion to its tasks' weights,
    then each row's task in proportion to weight, so a task's share of tokens follows its weight.
    `tasks` restricts the mixture to some tasks (MAD-style: one skill trained alone, to study it at
    a fraction of the tokens the whole mixture needs); by default every task with a weight."""

    def __init__(self, suite: Suite, seed: int, held_out: set[bytes], tasks: list[Task] | None = None) -> None:
        self.suite = suite
        self.rng = random.Random(f"star-suite-v{SUITE_VERSION}/mixture/{seed}")
        trained = [t for t in (suite.tasks if tasks is None else tasks) if t.weight > 0]
        if not trained:
            names = ", ".join(t.name for t in tasks or [])
            raise StarError(f"nothing to train on: {names} are scored only (weight 0)")
        self.streams = {t.name: TrainingStream(suite, t, seed, held_out) for t in trained}
        self.buckets = sorted({t.seq_len for t in trained})
        self.bucket_tasks = {b: [t for t in trained if t.seq_len == b] for b in self.buckets}
        self.bucket_weights = [sum(t.weight for t in self.bucket_tasks[b]) for b in self.buckets]

    def next_batch(self, tokens: int = TOKENS_PER_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
        seq_len = self.rng.choices(self.buckets, weights=self.bucket_weights)[0]
        tasks = self.bucket_tasks[seq_len]
        chosen = self.rng.choices(tasks, weights=[t.weight for t in tasks], k=tokens // seq_len)
        return encode_rows(self.suite, [(t, next(self.streams[t.name])) for t in chosen], seq_len)


@dataclass
class TaskScore:
    name: str
    category: str
    metric: str
    score: float
    bits_per_byte: float | None = None


@dataclass
class SuiteResult:
    """Per-task scores, and per-category scores: the mean of the category's scored tasks, except
    in_context_recall, which is the recall probe's score whenever the probe ran (the probe is the
    suite's measurement of recall; the mixture's ten recall tasks are still listed as tasks).
    `aggregate` is the quality (`quality`)."""

    architecture: str
    seed: int
    fidelity: Fidelity
    tasks: list[TaskScore]
    timing: dict[str, float]
    training: dict[str, float | int | str]
    environment: dict[str, str]
    probe: ProbeResult | None = None
    categories: dict[str, float] = field(init=False)
    aggregate: float = field(init=False)

    def __post_init__(self) -> None:
        self.categories = {c: sum(t.score for t in self.tasks if t.category == c)
                           / max(1, sum(t.category == c for t in self.tasks))
                           for c in CATEGORIES if any(t.category == c for t in self.tasks)}
        if self.probe is not None:
            self.categories["in_context_recall"] = self.probe.score
            self.categories = {c: self.categories[c] for c in CATEGORIES if c in self.categories}
        self.aggregate = quality(self.categories)

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture, "seed": self.seed,
            "fidelity": {"level": self.fidelity.level, "name": self.fidelity.name, "tokens": self.fidelity.tokens,
                         "batch_tokens": self.fidelity.batch_tokens, "trains": self.fidelity.trains},
            "aggregate": self.aggregate, "categories": self.categories,
            "tasks": [{"name": t.name, "category": t.category, "metric": t.metric, "score": t.score,
                       **({"bits_per_byte": t.bits_per_byte} if t.bits_per_byte is not None else {})}
                      for t in self.tasks],
            "probe": None if self.probe is None else self.probe.to_dict(),
            "timing": self.timing, "training": self.training, "environment": self.environment,
        }


Progress = Callable[[str, int, int, float], None]  # (phase: "probe" or "train", steps done, total steps, last loss)


def environment(corpus: Corpus, threads: int, precision: str, device: str) -> dict[str, str]:
    import transformers

    return {
        "suite_version": SUITE_VERSION, "corpus": corpus.digest(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "machine": machine_name(), "threads": str(threads), "precision": precision,
        "device": device,
    }


def evaluate(config: ArchConfig, fidelity: Fidelity | int | str = DEFAULT_FIDELITY, seed: int = 0,
             corpus: Corpus | None = None, threads: int | None = None, device: str = "auto",
             precision: str = "auto", tasks: list[str] | None = None, progress: Progress | None = None,
             compile: bool = False, save_weights: str | None = None,
             train_on: list[str] | None = None, probe: ProbeResult | bool = True,
             probe_settings: ProbeSettings | None = None) -> SuiteResult:
    """Run the recall probe, train `config` (already at proxy scale, vocabulary 512) on the
    fidelity's tasks (or `train_on`) and score them (or `tasks`).  `probe` is True (run it), False
    (skip it) or a ProbeResult measured earlier for this genome and seed, reused (a promoted genome:
    the probe's budget does not depend on the fidelity).  `save_weights` keeps the trained proxy
    (native safetensors, fp32) for `star export --weights`."""
    if config.vocab_size != VOCAB_SIZE:
        raise StarError(f"the suite needs vocab_size {VOCAB_SIZE} (a proxy); got {config.vocab_size}; "
                        "use star.scaling.to_proxy")
    fid = fidelity if isinstance(fidelity, Fidelity) else get_fidelity(fidelity)
    # fp32 weights, gradients and AdamW's two moments; refused before anything is allocated
    check_memory(16 * config.params(), f"training the proxy of {config.name}")
    if threads:
        torch.set_num_threads(threads)
    threads_given = torch.get_num_threads()
    started = time.perf_counter()
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    corpus = corpus or bundled_corpus()
    suite = build_suite(corpus)
    trained = [suite.get(name) for name in (train_on or fid.train_on or ())] or None
    scored = [suite.get(name) for name in tasks] if tasks else list(trained or suite.tasks)
    held_out = {t.name: held_out_examples(suite, t) for t in suite.tasks}
    held_keys = {example_key(t, ex) for t in suite.tasks for ex in held_out[t.name]}
    mixture = Mixture(suite, seed, held_keys, trained)
    timing["setup_s"] = time.perf_counter() - t0

    # The probe and the text run are independent.  With two or more CPU threads they run side by
    # side, one core each (measured on the costliest lfm2-space genome: 200 probe steps and 50 text
    # steps took 13.0 s together against 11.0 + 11.6 s alone, while a second thread speeds a text
    # step up only 1.2-1.45 times); with one thread, one after the other.  The text run's thread
    # count is recorded: it is part of what makes a run reproducible.
    run_device = resolve_device(device)
    side_by_side = probe is True and threads_given >= 2 and run_device.type == "cpu"
    cancel = threading.Event()  # set when the text run fails or is interrupted: the probe stops too

    def run_probe() -> ProbeResult:
        def probe_progress(done: int, total: int) -> None:
            if progress:
                progress("probe", done, total, float("nan"))

        return recall_probe(config, seed, probe_settings, threads=torch.get_num_threads(), device=str(run_device),
                            progress=probe_progress, cancel=cancel)

    measured_here = probe is True
    pool: ThreadPoolExecutor | None = None
    pending: Future[ProbeResult] | None = None
    if side_by_side:
        torch.set_num_threads(1)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recall-probe")
        pending = pool.submit(run_probe)
    elif probe is True:
        probe = run_probe()
    try:
        t0 = time.perf_counter()
        trainer = ProxyTrainer(config, TrainSettings(steps=fid.steps, lr=fid.lr, precision=precision), seed=seed,
                               device=device, compile=compile)
        timing["build_s"] = time.perf_counter() - t0
        train_threads = torch.get_num_threads()

        data_s, train_s, first_step_s, loss = 0.0, 0.0, 0.0, float("nan")
        for step in range(fid.steps):
            if pending is not None and pending.done() and pending.exception() is not None:
                break  # the probe failed: its error is raised below
            t0 = time.perf_counter()
            inputs, targets = mixture.next_batch(fid.batch_tokens)
            t1 = time.perf_counter()
            loss = trainer.step(inputs, targets)
            t2 = time.perf_counter()
            data_s += t1 - t0
            train_s += t2 - t1
            if step == 0:
                first_step_s = t2 - t1
            if not math.isfinite(loss):
                raise StarError(f"training diverged at step {step} (loss {loss})")
            if progress:
                progress("train", step + 1, fid.steps, loss)
    except BaseException:
        cancel.set()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
            torch.set_num_threads(threads_given)
    if pending is not None:
        probe = pending.result()  # re-raises the probe's error, if it failed
    timing["probe_s"] = probe.wall_s if measured_here and isinstance(probe, ProbeResult) else 0.0
    timing.update(data_s=data_s, train_s=train_s, first_step_s=first_step_s)
    if save_weights:
        from pathlib import Path

        from safetensors.torch import save_model

        target = Path(save_weights)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        save_model(trainer.model, str(tmp), metadata={"format": "pt", "architecture": config.name})
        os.replace(tmp, target)

    t0 = time.perf_counter()
    scores = [score_task(trainer, suite, task, held_out[task.name]) for task in scored]
    timing["eval_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - started
    tokens = fid.steps * fid.batch_tokens
    training = {"steps": fid.steps, "tokens": tokens, "batch_tokens": fid.batch_tokens, "lr": fid.lr,
                "final_loss": loss, "threads": train_threads, "beside_probe": side_by_side,
                "tokens_per_s": tokens / max(train_s, 1e-9), "precision": trainer.precision,
                "rejected_rows": sum(s.rejected for s in mixture.streams.values()), "compiled": trainer.compiled,
                "trained_on": "all" if trained is None else ",".join(mixture.streams)}
    env = environment(corpus, torch.get_num_threads(), trainer.precision, str(trainer.device))
    return SuiteResult(config.name, seed, fid, scores, timing, training, env,
                       probe if isinstance(probe, ProbeResult) else None)


@torch.no_grad()
def score_task(trainer: ProxyTrainer, suite: Suite, task: Task, examples: list[Example]) -> TaskScore:
    rows_per_batch = max(1, TOKENS_PER_BATCH // task.seq_len)
    correct_spans, total_spans, nll_bits, scored = 0, 0, 0.0, 0
    for i in range(0, len(examples), rows_per_batch):
        chunk = examples[i:i + rows_per_batch]
        inputs, targets = encode_rows(suite, [(task, ex) for ex in chunk], task.seq_len)
        logits = trainer.logits(inputs).cpu()
        if task.metric == "bpb":
            mask = targets != IGNORE
            logp = torch.log_softmax(logits[mask], dim=-1)
            nll_bits += -logp.gather(1, targets[mask][:, None]).sum().item() / math.log(2)
            scored += int(mask.sum())
            continue
        wrong = (logits.argmax(-1) != targets) & (targets != IGNORE)
        for r, ex in enumerate(chunk):
            for start, end in ex.spans:  # targets[:, p] is example token p
                correct_spans += not bool(wrong[r, start:end].any())
                total_spans += 1
    if task.metric == "bpb":
        bpb = nll_bits / max(1, scored)
        return TaskScore(task.name, task.category, "bpb", max(0.0, 1.0 - bpb / 8.0), bpb)
    return TaskScore(task.name, task.category, "exact", correct_spans / max(1, total_spans))


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_parquet(result: SuiteResult, config: ArchConfig, path: str) -> None:
    """One row per task, with the run's identity repeated on each row so files concatenate cleanly."""
    import json
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = result.to_dict()
    rows = [{"architecture": result.architecture, "seed": result.seed, "fidelity": result.fidelity.level,
             "task": t["name"], "category": t["category"], "metric": t["metric"], "score": t["score"],
             "bits_per_byte": t.get("bits_per_byte"), "category_score": result.categories[t["category"]],
             "aggregate": result.aggregate, "trained_on": result.training.get("trained_on", "all"),
             "recall_probe": None if result.probe is None else result.probe.score}
            for t in d["tasks"]]
    table = pa.Table.from_pylist(rows)
    meta = {"star.result": json.dumps(d), "star.config": config.to_json()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise StarError(f"--out {path}: folder {target.parent} does not exist")
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(target)  # never leave a half-written file where a result was
