"""The committed reference run (results/lfm2-cpu) and the case study written from it."""

import json
import re
import shutil
from pathlib import Path

from cli_helpers import star

from star.objectives import Normaliser
from star.pareto import dominates
from star.presets import get_preset
from star.queries import best_per_genome, front_rows
from star.search_spaces import get_space
from star.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "lfm2-cpu"
CASE_STUDY = ROOT / "docs" / "case-study.md"


def test_the_reference_run_loads_and_is_small_enough_to_commit():
    store = RunStore.open(RUN)
    assert store.manifest["settings"]["space"] == "lfm2"
    assert len(store.rows) >= 40 and all(r["status"] == "ok" for r in store.rows)
    assert (RUN / "report.html").is_file()
    size = sum(f.stat().st_size for f in RUN.rglob("*") if f.is_file())
    assert size < 5 * 10**6, size
    manifest = store.manifest  # reproducibility: the command, the seed, the versions and the machine
    assert manifest["command"].startswith("star search") and manifest["versions"] and manifest["machine"]
    assert isinstance(manifest["settings"]["seed"], int)


def test_a_run_written_before_the_worker_environment_columns_still_takes_new_rows(tmp_path):
    """The reference run predates `threads`, `precision` and `corpus`: resuming such a run appends rows
    that carry them while the old rows keep nulls, and nothing already recorded changes."""
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    store = RunStore.open(run)
    old = [dict(r) for r in store.rows]
    assert all(r["precision"] is None for r in old)  # read back as absent, not invented
    new = {**old[-1], "eval_index": len(old), "job": old[-1]["job"] + 1, "threads": 1, "precision": "bf16",
           "corpus": "pydoc-topics:x"}
    store.append([new])
    reread = RunStore.open(run).rows
    assert reread[-1]["precision"] == "bf16" and reread[-1]["threads"] == 1
    assert [{k: v for k, v in r.items() if k in old[0]} for r in reread[:-1]] == old


def test_the_pareto_set_is_non_dominated_and_complete():
    """At the top rung, among the genomes evaluated there: no comparison crosses rungs."""
    store = RunStore.open(RUN)
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    front = front_rows(store)
    top = max(r["rung"] for r in store.rows)
    assert {r["rung"] for r in front} == {top}
    points = {r["genome_id"]: normaliser.point(r) for r in store.rows if r["rung"] == top and r["violation"] == 0}
    front_ids = {r["genome_id"] for r in front}
    for a in front_ids:
        assert not any(dominates(points[b], points[a]) for b in front_ids if b != a)
    for other in set(points) - front_ids:  # every feasible genome left out is dominated by the front
        assert any(dominates(points[f], points[other]) for f in front_ids), other
    listed = json.loads(star("pareto", str(RUN), "--format", "json").stdout)
    assert [r["genome_id"] for r in listed] == [r["genome_id"] for r in front]


def test_the_case_study_says_where_the_lfm2_layout_and_the_qwen3_baseline_land():
    """Each seeded preset against the genomes evaluated at its own top rung, never across rungs."""
    store = RunStore.open(RUN)
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    space = get_space("lfm2")
    rows = {r["genome_id"]: r for r in best_per_genome(store.rows)}
    text = CASE_STUDY.read_text()
    for preset in ("lfm2-1.2b", "qwen3-16"):
        genome = ",".join(map(str, space.encode(get_preset(preset))))
        seeded = [r for r in rows.values() if r["genome"] == genome]
        assert seeded, f"{preset} was not evaluated in the reference run"
        row = seeded[0]
        front = {r["genome_id"]: r for r in front_rows(store, rung=row["rung"])}
        assert all(r["rung"] == row["rung"] for r in front.values())
        if row["genome_id"] in front:
            assert re.search(rf"{preset}[^\n]*on the front", text), preset
        else:  # dominated: the case study must name a genome of its rung's front that dominates it
            dominators = [g for g, r in front.items() if dominates(normaliser.point(r), normaliser.point(row))]
            assert dominators and any(g in text for g in dominators), preset


def test_the_case_study_winner_exports_as_a_transformers_config(tmp_path):
    from transformers import AutoConfig

    store = RunStore.open(RUN)
    winner = front_rows(store)[0]
    result = star("export", str(RUN), "--rank", "1", "--format", "hf", "-o", str(tmp_path / "winner"))
    assert result.returncode == 0, result.stderr
    config = AutoConfig.from_pretrained(tmp_path / "winner")
    kinds = winner["layer_types"].split(",")
    if all(kind == "attention" for kind in kinds):
        assert config.model_type == "qwen3" and config.num_hidden_layers == len(kinds)
    else:
        assert config.model_type == "lfm2"
        assert config.layer_types == ["full_attention" if k == "attention" else "conv" for k in kinds]
