"""The in-context recall probe: its rows, and that it is learned where it can be and only there."""

import random
import threading

import pytest
import torch

from star.arch import ArchConfig, AttentionMixer, BlockConfig, ShortConvMixer, SwiGLUFFN
from star.errors import StarError
from star.evaluators import probe as P
from star.evaluators.trainer import IGNORE
from star.presets import get_preset


def tiny(kinds: str) -> ArchConfig:
    """A two- or three-block model: c = short convolution (kernel 3), A = attention."""
    mixers = {"c": ShortConvMixer(3), "A": AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=16)}
    return ArchConfig(hidden_size=32, vocab_size=512, name=kinds, max_position_embeddings=512,
                      blocks=tuple(BlockConfig(mixers[k], SwiGLUFFN(64)) for k in kinds))


@pytest.mark.parametrize("stage", [P.EASY, P.FAR, *P.SCORED])
def test_every_answer_is_the_value_paired_with_the_queried_key(stage):
    inputs, targets = P.make_rows(random.Random(0), stage, 64)
    assert inputs.shape == targets.shape == (64, stage.length)
    for row_in, row_target in zip(inputs.tolist(), targets.tolist(), strict=True):
        keys, values = row_in[0:2 * stage.pairs:2], row_in[1:2 * stage.pairs:2]
        assert len(set(keys)) == stage.pairs and all(P.KEY_BASE <= k < P.VALUE_BASE for k in keys)
        pairs = dict(zip(keys, values, strict=True))
        answers = [p for p, t in enumerate(row_target) if t != IGNORE]
        assert len(answers) == stage.queries
        for p in answers:  # the input at p is the queried key; the target is its value
            assert row_in[p] in pairs and row_target[p] == pairs[row_in[p]]
            assert p - (2 * stage.pairs - 1) >= stage.min_distance
        filler = set(row_in[2 * stage.pairs:]) - set(keys) - set(values)
        assert filler <= {P.FILLER}


def test_scored_queries_are_beyond_the_reach_of_sixteen_short_convolutions():
    """Sixteen blocks of kernel 5 see 64 tokens back: a convolution-only layout can only guess."""
    assert P.MIN_DISTANCE > 16 * (5 - 1)
    assert all(s.queries <= s.pairs for s in P.SCORED)  # each key asked once when scored
    assert P.EASY.queries > P.EASY.pairs  # the easy rows repeat keys


def test_the_probe_keeps_the_layout_at_its_own_width():
    config = P.probe_config(get_preset("lfm2-350m"))
    assert config.hidden_size == P.PROBE_WIDTH and config.vocab_size == P.PROBE_VOCAB
    assert config.layer_types == get_preset("lfm2-350m").layer_types


@pytest.mark.slow
def test_a_conv_then_attention_layout_learns_recall_and_a_conv_only_one_stays_at_chance():
    settings = P.ProbeSettings(steps=200)
    hybrid = P.recall_probe(tiny("cA"), seed=0, settings=settings, threads=2)
    conv = P.recall_probe(tiny("cc"), seed=0, settings=settings, threads=2)
    assert hybrid.score >= 0.5, hybrid.runs  # measured: 1.0, learned at step 200 by lr 2e-3 (seeds 0-2)
    assert conv.score <= 0.1, conv.runs  # chance: 1 of 32 values
    for result in (hybrid, conv):  # the best of the learning rates, each reported
        assert [r["learning_rate"] for r in result.runs] == list(settings.learning_rates)
        assert result.score == max(r["score"] for r in result.runs if r["score"] is not None)
        best = next(r for r in result.runs if r["score"] == result.score)
        assert result.learning_rate == best["learning_rate"]
    # conv-only never learns: every learning rate trains to the cap and is scored there
    assert [(r["steps"], r["learned"]) for r in conv.runs] == [(settings.steps, False)] * 2


@pytest.mark.slow
def test_the_probe_stops_once_recall_is_learned_and_its_score_does_not_depend_on_the_thread_count():
    settings = P.ProbeSettings(steps=400, easy_steps=100, check_every=25)
    one = P.recall_probe(tiny("cA"), seed=1, settings=settings, threads=1)
    two = P.recall_probe(tiny("cA"), seed=1, settings=settings, threads=2)
    assert one.score == two.score == 1.0, (one.runs, two.runs)
    first = one.runs[0]  # one lane: the first learning rate learns, and the second never starts
    assert first["learned"] and first["steps"] < settings.steps and first["accuracy"] >= settings.solved
    assert (first["steps"] - settings.easy_steps) % settings.check_every == 0
    assert one.runs[1]["steps"] == 0 and one.runs[1]["score"] is None
    assert all(r["steps"] < settings.steps for r in two.runs)  # two lanes: both stop when one learns


def test_check_points_start_after_the_easy_rows_and_end_at_the_cap():
    assert P.check_points(P.ProbeSettings()) == {200, 250, 300, 350, 400, 450, 500, 550, 600}
    short = P.ProbeSettings(steps=12, easy_steps=200, check_every=5)  # easy rows: at most half the steps
    assert P.easy_steps(short) == 6 and P.check_points(short) == {6, 11, 12}


def test_the_probe_is_deterministic_and_independent_of_the_thread_count():
    settings = P.ProbeSettings(steps=12, learning_rates=(1e-3, 3e-3), scored_rows=16)
    before = torch.get_num_threads()
    one = P.recall_probe(tiny("cA"), seed=3, settings=settings, threads=1)
    two = P.recall_probe(tiny("cA"), seed=3, settings=settings, threads=2)
    assert torch.get_num_threads() == before
    assert [r["accuracies"] for r in one.runs] == [r["accuracies"] for r in two.runs]
    assert [r["final_loss"] for r in one.runs] == [r["final_loss"] for r in two.runs]
    other = P.recall_probe(tiny("cA"), seed=4, settings=settings, threads=2)
    assert [r["final_loss"] for r in other.runs] != [r["final_loss"] for r in one.runs]


def test_a_check_decides_on_all_the_held_out_rows_not_on_the_quick_look(monkeypatch):
    """The quick look at `check_rows` rows only decides whether to score them all: a run whose
    quick look passes but whose full scoring does not keeps training, and is scored at the cap."""
    settings = P.ProbeSettings(steps=12, easy_steps=4, check_every=4, scored_rows=32, check_rows=8,
                               learning_rates=(1e-3,))
    seen: list[int] = []

    def scripted(trainer, inputs, targets):  # the quick look passes, the full set does not
        seen.append(len(inputs))
        return 0.95 if len(inputs) == settings.check_rows else 0.5

    monkeypatch.setattr(P, "accuracy", scripted)
    result = P.recall_probe(tiny("cA"), seed=0, settings=settings)
    run = result.runs[0]
    assert run["steps"] == settings.steps and not run["learned"] and run["accuracy"] == 0.5
    assert result.score == pytest.approx(0.5 / settings.solved)
    # checks at steps 4, 8 and 12: each a quick look (2 settings) then a full scoring (2 settings)
    assert seen == [8, 8, 32, 32] * 3
    seen.clear()
    monkeypatch.setattr(P, "accuracy", lambda trainer, inputs, targets: seen.append(len(inputs)) or 0.2)
    low = P.recall_probe(tiny("cA"), seed=0, settings=settings)
    assert seen == [8, 8, 8, 8, 8, 8, 32, 32] and low.runs[0]["accuracy"] == 0.2  # full rows at the cap only


def test_a_cancelled_probe_stops_and_says_so():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(StarError, match="cancelled"):
        P.recall_probe(tiny("cA"), seed=0, settings=P.ProbeSettings(steps=400), cancel=cancel)
