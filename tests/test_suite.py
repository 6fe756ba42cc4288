"""The suite runner: batching, scoring, determinism, the `star eval` command and its errors."""

import json
import math

import pyarrow.parquet as pq
import pytest
import torch
from cli_helpers import assert_bad_input, star

from star.arch import ArchConfig, AttentionMixer, BlockConfig, ShortConvMixer, SwiGLUFFN
from star.errors import StarError
from star.evaluators import suite as S
from star.evaluators.corpus import bundled_corpus, user_corpus
from star.evaluators.fidelity import FIDELITIES, TEXT_BATCH_TOKENS, TEXT_TASKS
from star.evaluators.tasks import build_suite, select_tasks
from star.evaluators.trainer import IGNORE, ProxyTrainer, TrainSettings

TINY = ArchConfig(
    hidden_size=64, vocab_size=512, name="tiny-hybrid", max_position_embeddings=512,
    blocks=(BlockConfig(ShortConvMixer(3), SwiGLUFFN(128)),
            BlockConfig(AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=32), SwiGLUFFN(128))),
)


@pytest.fixture(scope="module")
def suite():
    return build_suite(bundled_corpus())


def test_encode_rows_supervises_exactly_the_answers(suite):
    task = suite.get("mqar-8")
    ex = task.make(__import__("random").Random(0), suite.sources)
    inputs, targets = S.encode_rows(suite, [(task, ex)], task.seq_len)
    assert inputs.shape == targets.shape == (1, task.seq_len)
    assert inputs[0, 0] == suite.task_token("mqar-8")
    supervised = (targets[0] != IGNORE).nonzero().flatten().tolist()
    assert supervised == [p for a, b in ex.spans for p in range(a, b)]
    for p in supervised:  # the target at p is example token p, which the input holds at p + 1
        assert targets[0, p] == ex.tokens[p] == inputs[0, p + 1]


def test_mixture_batches_have_constant_token_count_and_follow_weights(suite):
    mixture = S.Mixture(suite, seed=0, held_out=set())
    counts = {}
    for _ in range(60):
        inputs, targets = mixture.next_batch()
        assert inputs.numel() == S.TOKENS_PER_BATCH and inputs.shape == targets.shape
        for token in inputs[:, 0].tolist():
            counts[token] = counts.get(token, 0) + inputs.shape[1]
    weights = {suite.task_token(t.name): t.weight for t in suite.tasks}
    assert all(weights[t] > 0 for t in counts), "zero-weight tasks are scored only"
    heavy, rare = counts.get(suite.task_token("language-common"), 0), counts.get(suite.task_token("language-rare-1"), 0)
    assert heavy > 3 * rare


def test_a_mixture_restricted_to_a_category_draws_only_its_tasks(suite):
    recall = select_tasks("in_context_recall")
    assert len(recall) == 10 and all(suite.get(n).category == "in_context_recall" for n in recall)
    assert select_tasks("copy, in_context_recall,mqar-4") == [*recall, "copy"]  # suite order, each once
    mixture = S.Mixture(suite, seed=0, held_out=set(), tasks=[suite.get(n) for n in recall])
    drawn = {token for _ in range(40) for token in mixture.next_batch()[0][:, 0].tolist()}
    assert drawn == {suite.task_token(n) for n in recall}  # every recall task, nothing else
    with pytest.raises(StarError, match="scored only"):
        S.Mixture(suite, seed=0, held_out=set(), tasks=[suite.get("text-prose-late")])
    with pytest.raises(StarError, match="unknown task or category"):
        select_tasks("in_context_recal")


class Oracle(ProxyTrainer):
    """Logits that put all mass on the true next token (or on a wrong one), to test scoring alone."""

    def __init__(self, right: bool) -> None:
        self.right = right

    def logits(self, inputs):
        nxt = torch.roll(inputs, -1, dims=1)
        if not self.right:
            nxt = (nxt + 1) % 512
        return torch.nn.functional.one_hot(nxt, 512).float() * 30.0


def test_scoring_gives_one_to_a_perfect_predictor_and_zero_to_a_wrong_one(suite):
    for name in ("mqar-16", "copy", "tool-nested", "language-rare-1", "text-code", "text-prose-late"):
        task = suite.get(name)
        held = S.held_out_examples(suite, task)
        perfect, wrong = S.score_task(Oracle(True), suite, task, held), S.score_task(Oracle(False), suite, task, held)
        assert perfect.score == pytest.approx(1.0, abs=1e-6), name
        assert wrong.score == 0.0, name
        if task.metric == "bpb":
            assert perfect.bits_per_byte == pytest.approx(0.0, abs=1e-6) and wrong.bits_per_byte > 8


def test_trainer_is_deterministic_and_learns(suite):
    mixture = S.Mixture(suite, seed=1, held_out=set())
    batches = [mixture.next_batch() for _ in range(6)]

    def run(seed):
        trainer = ProxyTrainer(TINY, TrainSettings(steps=len(batches), precision="fp32", lr=1e-2), seed=seed)
        losses = [trainer.step(*b) for b in batches]
        return losses, torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    (l1, w1), (l2, w2), (_, w3) = run(0), run(0), run(1)
    assert l1 == l2 and torch.equal(w1, w2)
    assert not torch.equal(w1, w3)
    assert l1[-1] < l1[0] and all(math.isfinite(x) for x in l1)


def test_fidelity_names_levels_and_budgets():
    assert S.get_fidelity("2") is S.get_fidelity("default")
    custom = S.get_fidelity("64K")  # a custom budget trains real text, as the CPU levels do
    assert custom.tokens == 65536 and custom.steps == 65536 // TEXT_BATCH_TOKENS and custom.train_on == TEXT_TASKS
    assert [f.tokens for f in FIDELITIES] == sorted(f.tokens for f in FIDELITIES)
    assert all(f.train_on == TEXT_TASKS and f.batch_tokens == TEXT_BATCH_TOKENS for f in FIDELITIES[:4])
    gpu = S.get_fidelity("gpu")  # the whole mixture, in bigger batches
    assert gpu.level == 4 and gpu.train_on is None and gpu.batch_tokens == 4 * S.TOKENS_PER_BATCH
    assert gpu.steps == gpu.tokens // gpu.batch_tokens
    inputs, targets = S.Mixture(build_suite(bundled_corpus()), seed=0, held_out=set()).next_batch(gpu.batch_tokens)
    assert inputs.numel() == gpu.batch_tokens and inputs.shape == targets.shape
    for bad in ("7", "fast", "0K", "-3M", "9" * 5000 + "K"):
        with pytest.raises(StarError):
            S.get_fidelity(bad)


def test_quality_is_the_weighted_mean_of_the_measured_categories():
    assert S.quality({"in_context_recall": 1.0, "real_text": 0.5}) == pytest.approx(0.75)
    everything = dict.fromkeys(S.CATEGORIES, 0.0) | {"in_context_recall": 1.0, "real_text": 1.0}
    assert S.quality(everything) == pytest.approx(4 / 10)  # recall and real text count double


@pytest.mark.slow
def test_star_eval_json_and_parquet_on_a_tiny_architecture(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(TINY.to_json())
    out = tmp_path / "scores.parquet"
    args = ("eval", "--config", str(config), "--fidelity", "16K", "--seed", "3", "--threads", "2", "--probe-steps", "8")
    result = star(*args, "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # A CPU fidelity trains and scores real text; the recall probe gives in_context_recall.
    assert [t["name"] for t in data["tasks"]] == list(TEXT_TASKS)
    assert data["training"]["trained_on"] == "text-prose,text-code"
    assert all(0.0 <= t["score"] <= 1.0 and t["bits_per_byte"] > 0 for t in data["tasks"])
    probe = data["probe"]
    assert [r["learning_rate"] for r in probe["runs"]] == [1e-3, 2e-3] and probe["score"] == max(
        r["score"] for r in probe["runs"])
    text = sum(t["score"] for t in data["tasks"]) / 2
    assert data["categories"] == {"in_context_recall": probe["score"], "real_text": pytest.approx(text)}
    assert data["aggregate"] == pytest.approx((2 * probe["score"] + 2 * text) / 4)
    assert data["training"]["steps"] == 16 and data["environment"]["torch"] == torch.__version__
    table = pq.read_table(out)
    assert table.num_rows == 2 and set(table.column("task").to_pylist()) == set(TEXT_TASKS)
    assert table.column("recall_probe").to_pylist() == [probe["score"]] * 2
    assert json.loads(table.schema.metadata[b"star.result"])["aggregate"] == data["aggregate"]
    again = json.loads(star(*args, "--json").stdout)  # same seed: same scores, probe included
    assert [t["score"] for t in again["tasks"]] == [t["score"] for t in data["tasks"]] and again["probe"] == {
        **probe, "wall_s": again["probe"]["wall_s"]}
    human = star(*args)
    assert human.returncode == 0 and "aggregate" in human.stdout and "real_text" in human.stdout
    assert "recall probe" in human.stdout
    alone = json.loads(star(*args[:3], "--fidelity", "8K", "--threads", "2", "--train-on", "in_context_recall",
                            "--probe-steps", "0", "--json").stdout)
    recall = select_tasks("in_context_recall")
    assert [t["name"] for t in alone["tasks"]] == recall and list(alone["categories"]) == ["in_context_recall"]
    assert alone["training"]["trained_on"] == ",".join(recall) and alone["probe"] is None


def test_the_probe_runs_beside_the_text_run_and_the_scores_do_not_depend_on_the_thread_count():
    """With two threads the probe and the text run go side by side, one core each; with one, one
    after the other.  The text run uses one thread either way, so every score is the same."""
    settings = S.ProbeSettings(steps=12, easy_steps=4, check_every=4, scored_rows=16, check_rows=8)
    before = torch.get_num_threads()
    results = {threads: S.evaluate(TINY, "8K", seed=2, threads=threads, precision="fp32", probe_settings=settings)
               for threads in (1, 2)}
    one, two = results[1], results[2]
    assert (one.training["beside_probe"], two.training["beside_probe"]) == (False, True)
    assert one.training["threads"] == two.training["threads"] == 1
    assert torch.get_num_threads() == 2  # the caller's count is back after the side-by-side runs
    assert [t.score for t in one.tasks] == [t.score for t in two.tasks] and one.aggregate == two.aggregate
    assert one.probe is not None and two.probe is not None
    assert [(r["steps"], r["accuracies"], r["final_loss"]) for r in one.probe.runs] == [
        (r["steps"], r["accuracies"], r["final_loss"]) for r in two.probe.runs]
    torch.set_num_threads(before)


@pytest.mark.parametrize(("extra", "needles"), [
    (("--tasks", "mqar-4,no-such-task"), ("unknown task", "no-such-task")),
    (("--corpus", "/no/such/corpus.txt"), ("corpus", "no such file")),
    (("--fidelity", "ultra"), ("unknown fidelity",)),
    (("--train-on", "in_context_recal"), ("unknown task or category", "in_context_recal")),
    (("--train-on", "text-prose-late", "--fidelity", "4K"), ("nothing to train on", "scored only")),
    (("--out", "scores.csv"), (".parquet",)),
    (("--probe-steps", "-1"), ("--probe-steps",)),
])
def test_star_eval_bad_input_is_one_line_exit_2(extra, needles):
    assert_bad_input(star("eval", "--preset", "lfm2-proxy", *extra), *needles)


def test_empty_and_malformed_corpora_are_rejected(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_bad_input(star("eval", "--preset", "lfm2-proxy", "--corpus", str(empty)), "empty")
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(StarError, match=r"no \.txt"):
        user_corpus(str(folder))
    import pyarrow as pa

    pq.write_table(pa.table({"body": ["x" * 1000]}), tmp_path / "no_text.parquet")
    with pytest.raises(StarError, match="no 'text' column"):
        user_corpus(str(tmp_path / "no_text.parquet"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StarError, match="not a readable Parquet"):
        user_corpus(str(tmp_path / "bad.parquet"))


def test_user_corpus_feeds_the_real_text_tasks(tmp_path):
    import pyarrow as pa

    rows = [f"Document {i}: the quick brown fox jumps over the lazy dog. " * 8 for i in range(200)]
    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"text": rows}), path)
    corpus = user_corpus(str(path))
    suite = build_suite(corpus)
    ex = S.held_out_examples(suite, suite.get("text-prose"))[0]
    text = bytes(t - 256 for t in ex.tokens).decode()
    assert "quick brown fox" in text
    assert corpus.prose.held_out and not set(corpus.prose.train) & set(corpus.prose.held_out)
