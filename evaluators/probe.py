"""The in-context recall probe: Zoology's multi-query associative recall (MQAR) on the genome's own
layout, trained the way Zoology and MAD train so that recall is learned on two CPU cores.

Why a probe of its own: in the 50-task mixture, recall is one task in five of a budget that CPUs can
afford, and no architecture learns it there (docs/benchmarks.md: at chance after 2 M mixture tokens
and after 8 M recall-only tokens).  Recall is the capability that attention buys (Zoology: most of
the perplexity gap between gated convolutions and attention is associative recall), so a quality
that cannot see it steers a search away from attention.  The probe sees it in about 20 s of one core
(LFM2's layout; about 75 s for a layout that never learns it):

- Zoology's task: key–value pairs, then queries of those keys; the loss is on the answers only.
- The genome's layout at a narrow width (`PROBE_WIDTH`), so the probe measures mixer choices and
  their order, not size (the text run measures size).
- Easy before hard (Zoology's loader, and Zucchet et al. 2025: the plateau before recall appears
  grows with sequence length and shrinks with repeated keys): first short rows of 2 pairs whose
  keys are queried seven times over, then long rows where every query is far from its pair.
- Best of two learning rates (Zoology reports the best of four; MAD the best of a small grid), with
  the same data for both.
- Trained until learned, within a cap: recall appears as a jump whose step varies from seed to seed,
  so a fixed step count cuts slow learners at a random point of their jump (measured: a layout
  scored 0.77, 0.91 and 1.0 on different seeds at 400 fixed steps, which alone broke the seed-to-seed
  ranking).  From the end of the easy rows, every `check_every` steps the held-out rows are scored;
  the probe stops as soon as a run answers `solved` of them (score 1: the other learning rate cannot
  raise a capped score, so it stops or never starts) and otherwise trains to `steps` (600).  Layouts
  that learn pay less than a fixed budget; layouts that cannot learn pay the whole cap.  A check
  first scores a quarter of the held-out rows (`check_rows`) and scores them all only once that
  quarter reaches `solved`: scoring all of them at every check cost a third of a non-learner's probe.
- Scored on held-out long rows only, at two difficulty settings (4 and 8 pairs), as MAD averages a
  task over its settings.  A layout that answers 90% of them has learned the circuit: the score is
  the mean accuracy over 0.9, capped at 1, because above that the accuracy says only how many steps
  ago recall appeared, which varies from seed to seed (measured: 0.93-1.0 for the same layout).
  Every scored query is `MIN_DISTANCE` or more tokens after its pair:
  beyond the reach of 16 short-convolution blocks of kernel ≤ 5, so a convolution-only layout can
  only guess (1 of `VALUES`), whatever it learns.  A short convolution before an attention block
  supplies the one-token shift an induction circuit needs and learns it; attention alone needs a
  two-layer circuit and learns it much later.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from star.arch import ArchConfig
from star.errors import StarError
from star.scaling import to_proxy

from .trainer import IGNORE, ProxyTrainer, TrainSettings

PROBE_WIDTH = 32
PROBE_HEAD_DIM = 32
FILLER = 0
KEYS = 16  # keys are tokens 1..16, values 17..48
VALUES = 32
KEY_BASE, VALUE_BASE = 1, 1 + KEYS
PROBE_VOCAB = 512  # as the suite's: measured, recall appeared on fewer seeds with a 64-token vocabulary


@dataclass(frozen=True)
class Stage:
    """One row format: `pairs` key–value pairs from position 0, then `queries` queries (a key, then
    its value as the answer) at random places from `query_start` on, filler tokens elsewhere.  With
    more queries than pairs, keys are queried more than once."""

    length: int
    pairs: int
    queries: int
    query_start: int

    @property
    def min_distance(self) -> int:
        """Tokens from the last pair's value to the earliest possible query."""
        return self.query_start - (2 * self.pairs - 1)


EASY = Stage(length=32, pairs=2, queries=14, query_start=4)
FAR = Stage(length=128, pairs=8, queries=12, query_start=96)
SCORED = (Stage(length=128, pairs=4, queries=4, query_start=96), Stage(length=128, pairs=8, queries=8, query_start=96))
MIN_DISTANCE = min(s.min_distance for s in (FAR, *SCORED))


@dataclass(frozen=True)
class ProbeSettings:
    steps: int = 600  # the cap: a run that has not learned recall by then is scored where it stands
    batch_tokens: int = 512  # small batches, more steps: recall appears after a number of steps, not tokens
    learning_rates: tuple[float, ...] = (1e-3, 2e-3)  # tried in this order; 1e-3 learned most often
    easy_steps: int = 200  # steps on `easy` rows before `far` rows (at most half of `steps`)
    check_every: int = 50  # steps between scorings of the held-out rows, from the end of the easy rows
    easy: Stage = EASY
    far: Stage = FAR
    scored_rows: int = 256  # per difficulty setting
    check_rows: int = 64  # per setting, scored at each check; all `scored_rows` once these reach `solved` or at the cap
    solved: float = 0.9  # the accuracy at which recall counts as learned (score 1)
    precision: str = "fp32"  # at width 32 a step is overhead-bound: bf16 casts cost more than they save


@dataclass
class ProbeResult:
    score: float  # the best run's score: min(1, mean accuracy over the scored settings / settings.solved)
    learning_rate: float
    # Per learning rate: lr, steps run, score, per-setting accuracy and loss at its last scoring, and
    # whether it stopped because recall was learned.  A run that another run's success stopped before
    # its first scoring has score None.  Which runs stopped early can depend on the thread count; the
    # score cannot (1 exactly when some run learns within the cap, else the best run's at the cap).
    runs: list[dict[str, float | int | bool | list[float] | None]]
    wall_s: float

    def to_dict(self) -> dict:
        return {"score": self.score, "learning_rate": self.learning_rate, "runs": self.runs, "wall_s": self.wall_s}


def make_rows(rng: random.Random, stage: Stage, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of shape (rows, stage.length) for next-token training: targets are the
    values at query answers and IGNORE everywhere else."""
    slots = (stage.length + 1 - stage.query_start) // 2
    if stage.queries > slots or 2 * stage.pairs > stage.query_start:
        raise ValueError(f"stage {stage} does not fit its row")
    tokens = torch.full((rows, stage.length + 1), FILLER, dtype=torch.long)
    answers = torch.zeros((rows, stage.length + 1), dtype=torch.bool)
    for r in range(rows):
        keys = rng.sample(range(KEYS), stage.pairs)
        values = [rng.randrange(VALUES) for _ in keys]
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            tokens[r, 2 * i], tokens[r, 2 * i + 1] = KEY_BASE + k, VALUE_BASE + v
        if stage.queries <= stage.pairs:
            asked = rng.sample(range(stage.pairs), stage.queries)
        else:
            asked = [rng.randrange(stage.pairs) for _ in range(stage.queries)]
        for i, slot in zip(asked, sorted(rng.sample(range(slots), stage.queries)), strict=True):
            at = stage.query_start + 2 * slot
            tokens[r, at], tokens[r, at + 1] = KEY_BASE + keys[i], VALUE_BASE + values[i]
            answers[r, at + 1] = True
    targets = torch.where(answers, tokens, IGNORE)
    return tokens[:, :-1], targets[:, 1:]


def probe_config(config: ArchConfig) -> ArchConfig:
    """The genome's layout at the probe's width and vocabulary."""
    probe = to_proxy(config, hidden=PROBE_WIDTH, vocab=PROBE_VOCAB, head_dim=PROBE_HEAD_DIM)
    return replace(probe, name=f"{config.name}-recall-probe")


def scored_sets(rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out rows: fixed for every run (their own random stream, never the training one)."""
    return [make_rows(random.Random(f"star-probe/recall/held-out/{i}"), stage, rows) for i, stage in enumerate(SCORED)]


def accuracy(trainer: ProxyTrainer, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    logits = trainer.logits(inputs).cpu()
    mask = targets != IGNORE
    return float((logits.argmax(-1)[mask] == targets[mask]).float().mean())


def easy_steps(settings: ProbeSettings) -> int:
    return min(settings.easy_steps, settings.steps // 2)


def check_points(settings: ProbeSettings) -> set[int]:
    """Steps after which the held-out rows are scored: from the end of the easy rows every
    `check_every` steps, and always after the last step."""
    start = easy_steps(settings)
    return {*range(start, settings.steps, max(1, settings.check_every)), settings.steps} - {0}


def _train(trainer: ProxyTrainer, learning_rate: float, seed: int, settings: ProbeSettings,
           held_out: list[tuple[torch.Tensor, torch.Tensor]], learned: threading.Event,
           progress: Callable[[int], None] | None,
           cancel: threading.Event | None = None) -> dict[str, float | int | bool | list[float] | None]:
    """One run: train on easy then far rows, scoring the held-out rows at each check point, until
    recall is learned (here, or in another run: `learned`) or the cap is reached."""
    rng = random.Random(f"star-probe/recall/train/{seed}")  # the same rows for every learning rate
    checks, easy = check_points(settings), easy_steps(settings)
    run: dict[str, float | int | bool | list[float] | None] = {
        "learning_rate": learning_rate, "steps": 0, "score": None, "accuracy": None, "accuracies": None,
        "final_loss": float("nan"), "learned": False}
    for step in range(settings.steps):
        if learned.is_set() or (cancel is not None and cancel.is_set()):
            break
        stage = settings.easy if step < easy else settings.far
        run["final_loss"] = trainer.step(*make_rows(rng, stage, max(1, settings.batch_tokens // stage.length)))
        run["steps"] = step + 1
        if progress:
            progress(1)
        if step + 1 in checks:
            # A quick look at the first `check_rows` rows of each setting; the decision and the score
            # always come from all the held-out rows.
            quick = [accuracy(trainer, inputs[:settings.check_rows], targets[:settings.check_rows])
                     for inputs, targets in held_out]
            if sum(quick) / len(quick) < settings.solved and step + 1 < settings.steps:
                continue
            accuracies = [accuracy(trainer, *rows) for rows in held_out]
            mean = sum(accuracies) / len(accuracies)
            run.update(score=min(1.0, mean / settings.solved), accuracy=mean, accuracies=accuracies)
            if mean >= settings.solved:
                run["learned"] = True
                learned.set()
    return run


def recall_probe(config: ArchConfig, seed: int = 0, settings: ProbeSettings | None = None, threads: int = 1,
                 device: str = "cpu", progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> ProbeResult:
    """Train the probe once per learning rate, until one learns recall or each reaches the cap, and
    return the best run's score.  Each run uses one core (at this width a step is dispatch overhead,
    which one core per run serves best); with `threads` >= 2 the runs go in parallel threads.
    Setting `cancel` stops the runs at their next step (the caller no longer wants the result)."""
    settings = settings or ProbeSettings()
    started = time.perf_counter()
    model_config = probe_config(config)
    # Models are built one after another: initialisation draws from torch's global generator.
    trainers = [ProxyTrainer(model_config, TrainSettings(steps=settings.steps, lr=lr, weight_decay=0.1,
                                                         precision=settings.precision), seed=seed, device=device)
                for lr in settings.learning_rates]
    held_out = scored_sets(settings.scored_rows)
    learned = threading.Event()  # set by a run that learns recall: every run stops
    total = settings.steps * len(trainers)
    done = [0]
    lock = threading.Lock()

    def tick(steps: int) -> None:
        with lock:
            done[0] += steps
            if progress:
                progress(done[0], total)

    runs: list[dict] = [{}] * len(trainers)
    errors: list[BaseException] = []

    def lane(indices: list[int]) -> None:
        try:
            for i in indices:
                runs[i] = _train(trainers[i], settings.learning_rates[i], seed, settings, held_out, learned, tick,
                                 cancel)
        except BaseException as err:  # re-raised in the calling thread
            errors.append(err)
            learned.set()  # stops the other lanes

    lanes = max(1, min(threads, len(trainers))) if device == "cpu" else 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        workers = [threading.Thread(target=lane, args=(list(range(k, len(trainers), lanes)),)) for k in range(lanes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if errors:
            raise errors[0]
    finally:
        torch.set_num_threads(before)
    if cancel is not None and cancel.is_set():
        raise StarError("the recall probe was cancelled")
    if progress and done[0] < total:
        progress(total, total)  # the runs that stopped early leave nothing to wait for
    best = max((r for r in runs if r["score"] is not None), key=lambda r: r["score"])
    return ProbeResult(float(best["score"]), float(best["learning_rate"]), runs, time.perf_counter() - started)
