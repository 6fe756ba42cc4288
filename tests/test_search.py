"""The search end to end: static and Ray-executed runs, determinism, resume after SIGKILL, faults,
constraints, the Optuna mirror, `star pareto`, and bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from cli_helpers import assert_bad_input, star

from star.evaluators.static import static_metrics
from star.evolution import Evolution, EvolutionSettings
from star.executor import FaultPlan
from star.genome import genome_id
from star.machine import fingerprint, machine_name
from star.objectives import Normaliser, screening_metrics
from star.pareto import dominates
from star.queries import front_rows
from star.report import Report
from star.search import Search, SearchSettings, create_run, open_study
from star.search_spaces import get_space
from star.store import TIMING_COLUMNS, RunStore


def run_search(folder: Path, workers: int = 1, **settings) -> RunStore:
    defaults = {"space": "lfm2", "objectives": ["params", "cache_bytes"], "budget": 40, "population": 8}
    store = create_run(folder, SearchSettings(**{**defaults, **settings}))
    Search(store, workers=workers, threads_per_worker=1).run()
    return RunStore.open(folder)


def content(path: Path) -> list[dict]:
    """The rows of evaluations.parquet without the columns that record when and where."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in pq.read_table(path).to_pylist()]


def synthetic(**extra) -> dict:
    return {"objectives": ["quality", "decode_ms", "cache_bytes"], "fidelities": ["0", "2"],
            "evaluator": {"kind": "synthetic", "corpus": None, "precision": "auto", "device": "cpu",
                          "cost_s": extra.pop("cost_s", 0.0)}, **extra}


def assert_front_is_the_non_dominated_set(store: RunStore, front: list[dict]) -> None:
    """Brute force, at the top rung reached: a front member is feasible and nothing at its rung beats it;
    nothing from a lower rung is on the front."""
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    top = max(r["rung"] for r in store.rows if r["status"] == "ok")
    feasible = [r for r in store.rows if r["status"] == "ok" and r["rung"] == top and r["feasible"]]
    ids = {r["genome_id"] for r in front}
    assert all(r["rung"] == top for r in front)
    for row in feasible:
        beaten = any(dominates(normaliser.point(o), normaliser.point(row)) for o in feasible)
        assert (row["genome_id"] in ids) == (not beaten), row["genome_id"]


# ---- static searches: no training, no Ray ---------------------------------------------------------


def test_static_search_cli_writes_parquet_manifest_study_and_front(tmp_path):
    out = tmp_path / "run"
    result = star("search", "--space", "lfm2", "--objectives", "params,cache_bytes", "--budget", "120", "--out",
                  str(out), "--seed-preset", "lfm2-1.2b", "--seed-preset", "lfm2-350m", "--json")
    assert result.returncode == 0, result.stderr
    front = json.loads(result.stdout)
    assert front and all({"genome_id", "layer_types", "params", "cache_bytes"} <= set(r) for r in front)
    rows = pq.read_table(out / "evaluations.parquet").to_pylist()
    assert len(rows) == 120 and [r["eval_index"] for r in rows] == list(range(120))
    assert len({r["genome_id"] for r in rows}) == 120  # duplicates removed by genome id
    assert [r["origin"] for r in rows[:2]] == ["seed:lfm2-1.2b", "seed:lfm2-350m"]
    assert rows[0]["layer_types"].split(",").count("attention") == 6
    assert all(r["status"] == "ok" and r["params"] > 0 and r["star_version"] and r["machine"] for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 0 and manifest["versions"]["python"]
    # the CPU kind, not just its name, and where the device metrics come from
    assert manifest["machine"] == machine_name() and manifest["fingerprint"] == fingerprint(with_torch=False)
    assert manifest["device_measured_on"] == "ryzen-hx370: a roofline model, not a measurement"
    store = RunStore.open(out)
    assert_front_is_the_non_dominated_set(store, front_rows(store))
    assert [r["genome_id"] for r in front] == [r["genome_id"] for r in front_rows(store)]
    study = optuna.load_study(study_name="star-search", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 120 and trials[0].values == [rows[0]["params"], rows[0]["cache_bytes"]]
    assert trials[5].user_attrs["genome_id"] == rows[5]["genome_id"]
    # Optuna's own Pareto set (its best trials) is the run's front: the same genomes, none missing or extra
    assert sorted(t.user_attrs["genome_id"] for t in study.best_trials) == sorted(r["genome_id"] for r in front)

    listed = star("pareto", str(out), "--format", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == front
    csv = star("pareto", str(out), "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("genome_id,layer_types,params,cache_bytes")
    assert len(csv.stdout.strip().splitlines()) == len(front) + 1
    table = star("pareto", str(out))
    assert table.returncode == 0 and front[0]["genome_id"] in table.stdout


def test_same_seed_same_evaluations_and_another_seed_differs(tmp_path):
    a = run_search(tmp_path / "a", budget=60, seed=3, space="star")
    b = run_search(tmp_path / "b", budget=60, seed=3, space="star")
    c = run_search(tmp_path / "c", budget=60, seed=4, space="star")
    assert content(a.path / "evaluations.parquet") == content(b.path / "evaluations.parquet")
    assert [r["genome_id"] for r in a.rows] != [r["genome_id"] for r in c.rows]


def test_constraints_screen_children_and_keep_violators_off_the_front(tmp_path):
    store = run_search(tmp_path / "run", budget=50, constraints={"params": 400e6}, seed_presets=["lfm2-1.2b"])
    seed, others = store.rows[0], store.rows[1:]
    assert seed["origin"] == "seed:lfm2-1.2b" and not seed["feasible"] and "params" in seed["violations"]
    assert all(r["feasible"] and r["params"] <= 400e6 for r in others)  # nothing over budget is evaluated
    assert seed["genome_id"] not in {r["genome_id"] for r in front_rows(store)}


def test_hvi_selection_runs_and_evolution_improves_on_the_initial_population(tmp_path):
    store = run_search(tmp_path / "run", budget=120, selection="hvi", population=16)
    from star.objectives import Normaliser as N
    from star.pareto import hypervolume

    normaliser = N.from_dict(store.manifest["normaliser"])
    initial = hypervolume([normaliser.point(r) for r in store.rows[:16]], normaliser.reference)
    final = hypervolume([normaliser.point(r) for r in front_rows(store)], normaliser.reference)
    assert final > initial
    assert {r["origin"] for r in store.rows[16:]} == {"child"}


# ---- searches that evaluate on Ray ----------------------------------------------------------------


def test_ray_search_with_one_worker_is_deterministic_and_promotes(tmp_path, ray_local):
    a = run_search(tmp_path / "a", **synthetic(budget=30))
    b = run_search(tmp_path / "b", **synthetic(budget=30))
    assert content(a.path / "evaluations.parquet") == content(b.path / "evaluations.parquet")
    promoted = [r for r in a.rows if r["origin"] == "promotion"]
    assert promoted and all(r["rung"] == 1 and r["fidelity"] == "2" for r in promoted)
    for row in promoted:  # promoted only after being evaluated at the lower rung
        first = next(r for r in a.rows if r["genome_id"] == row["genome_id"])
        assert first["rung"] == 0 and first["eval_index"] < row["eval_index"]
    assert all(r["status"] == "ok" and 0 <= r["quality"] <= 1 and r["worker"] != "driver" for r in a.rows)
    assert all(r["threads"] >= 1 and r["machine"] == machine_name() and r["precision"] is None for r in a.rows)
    assert_front_is_the_non_dominated_set(a, front_rows(a))


def test_seeded_presets_always_reach_the_top_rung_and_selection_compares_the_first_rung(tmp_path, ray_local):
    store = run_search(tmp_path / "run", **synthetic(budget=30, seed_presets=["lfm2-350m", "qwen3-16"]))
    for name in ("lfm2-350m", "qwen3-16"):
        genome_id = next(r["genome_id"] for r in store.rows if r["origin"] == f"seed:{name}")
        assert sorted(r["rung"] for r in store.rows if r["genome_id"] == genome_id) == [0, 1], name
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    evolution = Evolution(get_space("lfm2"), EvolutionSettings(seed=0, population=8, rungs=2), normaliser)
    for row in store.rows:
        evolution.tell(row)
    assert {c.rung for c in evolution.population} == {0}  # promoted scores never enter selection
    assert {c.genome_id for c in evolution.archive.front} <= {r["genome_id"] for r in store.rows if r["rung"] == 0}


def test_the_front_never_weighs_a_lower_rung_score_against_a_higher_one(tmp_path):
    """A genome that stopped at the first rung with numbers that would dominate every promoted genome
    is neither on the top rung's front nor displaces it, in star pareto, the report and Optuna."""
    settings = SearchSettings(space="lfm2", objectives=["quality", "cache_bytes"], budget=4, fidelities=["0", "2"],
                              evaluator=synthetic()["evaluator"])
    store = create_run(tmp_path / "run", settings)
    space = get_space("lfm2")
    rng = random.Random(0)
    genomes = [space.sample(rng) for _ in range(3)]

    def row(index: int, genome: tuple, rung: int, quality: float, cache: float) -> dict:
        config = space.decode(genome)
        return {"eval_index": index, "job": index, "genome_id": genome_id("lfm2", genome), "space": "lfm2",
                "genome": ",".join(map(str, genome)), "origin": "random", "parents": "",
                "layer_types": ",".join(config.layer_types), "config_json": config.to_json(), "rung": rung,
                "fidelity": settings.fidelities[rung], "fidelity_tokens": 0, "status": "ok", "reason": "",
                "attempts": 1, "feasible": True, "violation": 0.0, "violations": "", "quality": quality,
                "cache_bytes": cache, "params": 1.0, "seed": 0}

    store.append([row(0, genomes[0], 0, 0.50, 2e6), row(1, genomes[1], 0, 0.40, 3e6),
                  row(2, genomes[1], 1, 0.60, 3e6), row(3, genomes[2], 0, 0.90, 1e6)])  # genomes[2] stopped at 0
    store = RunStore.open(store.path)
    promoted = genome_id("lfm2", genomes[1])
    assert [r["genome_id"] for r in front_rows(store)] == [promoted]
    assert {r["genome_id"] for r in front_rows(store, rung=0)} == {genome_id("lfm2", genomes[2])}
    listed = json.loads(star("pareto", str(store.path), "--format", "json").stdout)
    assert [(r["genome_id"], r["rung"]) for r in listed] == [(promoted, 1)]
    assert_bad_input(star("pareto", str(store.path), "--rung", "5"), "no successful evaluation at that rung")
    report = Report(store)
    assert [r["genome_id"] for r in report.front] == [promoted]
    traces = {t["name"]: t for t in report.figures()["front-quality-cache_bytes"]["data"]}
    assert traces["Pareto set at rung 1 (2)"]["customdata"][0][0] == promoted
    assert len(traces["rung 0 (0): not compared"]["customdata"]) == 2  # genomes[0] and genomes[2], apart
    best = open_study(store).study.best_trials  # Optuna: lower-rung evaluations are pruned trials
    assert [t.user_attrs["genome_id"] for t in best] == [promoted]


def test_rigged_genomes_fail_with_the_right_reason_and_the_search_finishes(tmp_path, ray_local):
    spec = "raise=0.15,nan=0.15,hang=0.15,crash=0.15"
    # 8 s: a crashed worker is told apart from a hung one only once Ray reports its death and a new
    # worker runs the retry, all within the evaluation timeout, which counts from submission.  On a
    # loaded 2-core machine that came later than 2 s (the suite in two processes) and later than 4 s
    # (the suite beside two ExecuTorch lowering processes, 2026-12-07)
    store = run_search(tmp_path / "run", workers=2, eval_timeout_s=8.0, inject_faults=spec,
                       **synthetic(budget=24, fidelities=["0"]))
    assert len(store.rows) == 24
    plan = FaultPlan.parse(spec)
    expected = {"raise": "RuntimeError: injected fault", "nan": "non-finite result: quality=nan",
                "hang": "timeout: no result after 8 s", "crash": "worker died"}
    seen = set()
    for row in store.rows:
        fault = plan.fault_for(row["genome_id"])
        if fault is None:
            assert row["status"] == "ok", row["reason"]
        else:
            seen.add(fault)
            assert row["status"] == "failed" and row["attempts"] == 2
            assert row["reason"].startswith(expected[fault]), row["reason"]
            assert row["quality"] is None
    assert seen == set(expected), seen  # the budget was large enough to meet every kind of fault
    study = optuna.load_study(study_name="star-search", storage=f"sqlite:///{store.path / 'study.db'}")
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials) == sum(
        r["status"] == "failed" for r in store.rows)


@pytest.mark.slow
def test_resume_after_sigkill_at_ten_random_moments_matches_an_uninterrupted_run(tmp_path, ray_local):
    settings = synthetic(budget=80, cost_s=0.05)
    reference = run_search(tmp_path / "reference", **settings)
    out = tmp_path / "killed"
    args = ["--space", "lfm2", "--objectives", "quality,decode_ms,cache_bytes", "--budget", "80", "--population",
            "8", "--fidelities", "0,2", "--evaluator", "synthetic", "--synthetic-cost", "0.05", "--device", "cpu",
            "--threads-per-worker", "1", "--json"]
    rng = random.Random(7)
    counts = [0]
    for attempt in range(10):
        command = [sys.executable, "-m", "star.cli", "search", *args,
                   *(["--resume", str(out)] if attempt else ["--out", str(out)])]
        with open(tmp_path / f"stderr{attempt}.txt", "w") as stderr:
            process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
        # A random moment while evaluations are landing: after this run's first new row, then 0-0.5 s more.
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and _rows(out) <= counts[-1]:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        assert process.poll() is None, (tmp_path / f"stderr{attempt}.txt").read_text()
        os.killpg(process.pid, signal.SIGKILL)  # the driver, its local Ray and its workers
        process.wait()
        counts.append(_rows(out))
    assert counts == sorted(counts) and 10 <= counts[-1] < 80, counts  # every kill landed mid-run
    final = star("search", *args, "--resume", str(out))
    assert final.returncode == 0, final.stderr
    assert content(out / "evaluations.parquet") == content(reference.path / "evaluations.parquet")
    rows = RunStore.open(out).rows
    assert len({(r["genome_id"], r["rung"]) for r in rows}) == len(rows) == 80
    assert [r["genome_id"] for r in front_rows(RunStore.open(out))] == [r["genome_id"] for r in front_rows(reference)]
    study = optuna.load_study(study_name="star-search", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.user_attrs["genome_id"] for t in study.trials] == [r["genome_id"] for r in rows]


def _rows(folder: Path) -> int:
    try:
        return len(RunStore.open(folder).rows)
    except Exception:  # not created yet
        return 0


# ---- bad input --------------------------------------------------------------------------------------


def test_search_bad_input_is_one_line_exit_2_and_leaves_results_untouched(tmp_path):
    base = ["search", "--objectives", "params,cache_bytes", "--budget", "10"]
    assert_bad_input(star(*base, "--space", "nope", "--out", str(tmp_path / "a")), "unknown search space 'nope'")
    assert_bad_input(star(*base[:1], "--objectives", "params,speed", "--out", str(tmp_path / "b")), "speed")
    assert_bad_input(star(*base, "--max-params", "lots", "--out", str(tmp_path / "c")), "--max-params")
    assert_bad_input(star(*base, "--seed-preset", "qwen3-1.7b", "--out", str(tmp_path / "d")), "qwen3-1.7b")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_bad_input(star(*base, "--out", str(blocker / "run")), "not writable")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_bad_input(star(*base, "--out", str(foreign)), "not a star run folder")
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1

    run = tmp_path / "run"
    assert star(*base, "--out", str(run)).returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert_bad_input(star(*base, "--out", str(run)), "already holds a run")
    assert_bad_input(star("search", "--resume", str(run), "--space", "star"), "--space")
    assert_bad_input(star("search", "--resume", str(run), "--budget", "3"), "below the 10 evaluations")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert star(*base, "--out", str(run), "--resume").returncode == 0  # the same command line again works

    (run / "evaluations.parquet").write_bytes(b"PAR1 this is not parquet")
    damaged = {p.name: p.read_bytes() for p in run.iterdir()}
    assert_bad_input(star("search", "--resume", str(run), "--budget", "20"), "not a readable Parquet file")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == damaged
    assert_bad_input(star("pareto", str(tmp_path / "missing")), "does not exist")
    assert_bad_input(star("pareto", str(foreign)), "not a star run folder")


def test_resume_of_a_finished_run_evaluates_nothing_and_can_extend_the_budget(tmp_path):
    out = tmp_path / "run"
    base = ["search", "--objectives", "params,cache_bytes", "--budget", "30", "--out", str(out)]
    assert star(*base).returncode == 0
    again = star("search", "--resume", str(out), "--json")
    assert again.returncode == 0 and len(RunStore.open(out).rows) == 30
    longer = star("search", "--resume", str(out), "--budget", "45", "--json")
    assert longer.returncode == 0 and len(RunStore.open(out).rows) == 45
    fresh = tmp_path / "fresh"
    assert star(*base[:-1], str(fresh), "--budget", "45").returncode == 0
    assert content(out / "evaluations.parquet") == content(fresh / "evaluations.parquet")


def test_selection_rules_rank_feasible_fronts_first_and_hvi_discards_violators():
    from star.evolution import Candidate, rank_order

    pts = {"a": (0.0, 1.0), "b": (1.0, 0.0), "c": (0.5, 0.5), "d": (0.9, 0.9), "e": (0.0, 0.0)}
    cands = [Candidate(k, (), 0, p, 0.0 if k != "e" else 0.3) for k, p in pts.items()]
    nsga2 = [cands[i].genome_id for i in rank_order(cands, "nsga2")]
    hvi = [cands[i].genome_id for i in rank_order(cands, "hvi")]
    assert set(nsga2[:3]) == {"a", "b", "c"} and nsga2[3:] == ["d", "e"]  # e beats all, but is infeasible
    assert nsga2.index("c") == 2  # interior point: finite crowding, after the infinite boundaries
    assert set(hvi[:3]) == {"a", "b", "c"} and hvi[3:] == ["d"]


def test_search_settings_own_the_defaults_the_command_line_uses():
    """One place for each default: a run made in Python and one made by `star search` with no flags
    get the same settings (the CLI once kept fidelities "0,2" while SearchSettings said ["2"])."""
    from dataclasses import asdict

    from star.errors import StarError
    from star.search import DEFAULT_BUDGET, DEFAULT_OBJECTIVES, DEFAULT_SPACE, SearchSettings

    from_flags = SearchSettings.from_flags({})
    in_python = SearchSettings(space=DEFAULT_SPACE, objectives=DEFAULT_OBJECTIVES.split(","), budget=DEFAULT_BUDGET)
    assert asdict(from_flags) == asdict(in_python)
    assert from_flags.fidelities == ["0", "2"] and from_flags.objectives == ["quality", "decode_ms", "cache_bytes"]
    given = SearchSettings.from_flags({"fidelities": "64K,256K", "objectives": "params", "synthetic_cost": 0.5,
                                       "evaluator": "synthetic", "max_cache_bytes": "1G", "budget": 5,
                                       "seed_preset": None})
    assert given.fidelities == ["64K", "256K"] and given.objectives == ["params"] and given.budget == 5
    assert given.evaluator["kind"] == "synthetic" and given.evaluator["cost_s"] == 0.5
    assert given.constraints == {"cache_bytes": 1e9}
    given.check_same_flags({"fidelities": "64K,256K", "budget": 9})  # the same flags again, a new budget
    with pytest.raises(StarError, match="--fidelities"):
        given.check_same_flags({"fidelities": "0,2"})


def test_screening_metrics_are_star_describe_numbers_for_the_runs_prompt():
    """A search screens each child with the same exact accounting `star describe --json` prints (one
    place computes it): parameters, bf16 cache bytes at the context, prefill FLOPs for the run's prompt
    and decode FLOPs per token at the context, next to the device's predictions."""
    space, rng = get_space("lfm2"), random.Random(3)
    for _ in range(4):
        config = space.decode(space.sample(rng))
        screen = screening_metrics(config, "ryzen-hx370", 256, 4096)
        exact = static_metrics(config, 4096, prompt=256)
        for name in ("params", "non_embedding_params", "cache_bytes", "prefill_flops"):
            assert screen[name] == exact[name]
        assert screen["decode_flops"] == exact["decode_flops_per_token"] == config.flops(1, 4096)
        assert screen["prefill_flops"] == config.flops(256, 0) < static_metrics(config, 4096)["prefill_flops"]
        assert screen["decode_ms"] > 0 and screen["ttft_ms"] > 0
