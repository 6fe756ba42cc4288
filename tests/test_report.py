"""Inspecting and exporting a real run: the HTML report in a headless browser, optuna-dashboard's
HTTP API, and export of a winner (config, and trained weights whose logits match ours)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from cli_helpers import assert_bad_input, star

from star.arch import ArchConfig
from star.export import build_model
from star.machine import machine_name
from star.scaling import to_proxy
from star.search import SearchSettings, create_run
from star.store import RunStore


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A small real search: proxies trained on real text (8K tokens, then 16K for the promoted), a short
    recall probe, weights kept, LFM2-1.2B seeded (so promoted: every seed reaches the top rung)."""
    out = tmp_path_factory.mktemp("report") / "run"
    result = star("search", "--space", "lfm2", "--objectives", "quality,decode_ms,cache_bytes", "--fidelities",
                  "8K,16K", "--budget", "3", "--population", "3", "--seed-preset", "lfm2-1.2b", "--keep-weights",
                  "--probe-steps", "16", "--device", "cpu", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return out


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("CI must have Debian's chromium for the browser test (.ci/run installs it)")
    return found


def test_real_run_rows_carry_suite_scores_and_weights(real_run):
    rows = RunStore.open(real_run).rows
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert [(r["origin"], r["rung"]) for r in rows] == [("seed:lfm2-1.2b", 0), ("promotion", 1), ("random", 0)]
    seed, promoted = rows[0], rows[1]
    assert promoted["genome_id"] == seed["genome_id"] and promoted["fidelity_tokens"] == 2 * seed["fidelity_tokens"]
    # The probe's budget does not depend on the rung: the promoted evaluation reuses the seed's probe.
    assert seed["probe_s"] > 0 and promoted["probe_s"] == 0 and promoted["recall_probe"] == seed["recall_probe"]
    for row in rows:
        assert 0 <= row["quality"] <= 1 and row["category.real_text"] is not None and row["task.text-code"] is not None
        assert row["category.in_context_recall"] == row["recall_probe"] and row["task.mqar-8"] is None
        assert (real_run / row["weights_file"]).is_file()
        # where it ran, as the worker saw it: what an exact repeat needs
        assert row["precision"] in ("bf16", "fp32") and row["threads"] >= 1
        assert row["torch_version"] == torch.__version__
        assert row["corpus"].startswith("pydoc-topics:") and row["machine"] == machine_name()


@pytest.mark.slow
def test_report_renders_every_plot_with_points_and_preset_markers_in_a_browser(real_run, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "report.html"
    result = star("report", str(real_run), "-o", str(page_file))
    assert result.returncode == 0, result.stderr
    assert page_file.stat().st_size < 5 * 2**20
    assert "<script src" not in page_file.read_text()  # offline: plotly.js is inside the file
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("http*://**", lambda route: (errors.append(f"network request {route.request.url}"), route.abort()))
        page.goto(page_file.as_uri())
        page.wait_for_selector("body[data-rendered=true]", timeout=60_000)
        plots = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
            id: gd.id, names: gd.data.map(t => t.name || ''),
            points: gd.data.reduce((n, t) => n + (t.type === 'heatmap' ? t.z.flat().length : (t.x || []).length), 0),
            svgPoints: gd.querySelectorAll('.scatterlayer path.point').length,
            canvases: gd.querySelectorAll('canvas').length,
            hasScene: !!(gd._fullLayout.scene && gd._fullLayout.scene._scene),
            heatmapImages: gd.querySelectorAll('.hm image').length, bars: gd.querySelectorAll('.bars path').length,
            labels: (gd.data[0].y || []).map(String)}))""")
        hover = page.evaluate("() => document.getElementById('front-quality-decode_ms').data[1].customdata[0]")
        browser.close()
    assert errors == []
    ids = {p["id"] for p in plots}
    assert {"front-quality-decode_ms", "front-quality-cache_bytes", "front-decode_ms-cache_bytes", "front-3d",
            "hypervolume", "layout-map", "categories"} <= ids
    for plot in plots:
        assert plot["points"] > 0, plot
        seed_names = [n for n in plot["names"] if n.startswith("seed: lfm2-1.2b")]
        if plot["id"].startswith("front-") and plot["id"] != "front-3d":
            assert plot["svgPoints"] == plot["points"], plot  # every point drawn
            assert seed_names == ["seed: lfm2-1.2b (rung 1 (16K))"], plot["names"]  # at the rung it reached
            assert "Pareto set at rung 1 (16K)" in plot["names"] and "rung 0 (8K): not compared" in plot["names"]
        if plot["id"] == "front-3d":
            assert plot["canvases"] > 0 and plot["hasScene"] and seed_names
        if plot["id"] == "hypervolume":
            assert plot["svgPoints"] == 3
        if plot["id"] == "layout-map":
            assert plot["heatmapImages"] == 1 and any(label.startswith("seed: lfm2-1.2b") for label in plot["labels"])
        if plot["id"] == "categories":
            assert plot["bars"] > 0 and seed_names
    rows = RunStore.open(real_run).rows
    assert hover[0] in {r["genome_id"] for r in rows} and hover[1].count("A") + hover[1].count("C") == 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_runs_pareto_set_over_http(real_run):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "star.cli", "dashboard", str(real_run), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=2))
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.3)
        study = next(s for s in studies["study_summaries"] if s["study_name"] == "star-search")
        detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=10))
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert len(detail["trials"]) == 3
    dashboard_front = {next(a["value"] for a in t["user_attrs"] if a["key"] == "genome_id")
                       for t in detail["best_trials"]}
    ours = {r["genome_id"] for r in json.loads(star("pareto", str(real_run), "--format", "json").stdout)}
    assert dashboard_front == ours


def test_dashboard_binds_only_this_machine_unless_told(real_run):
    port = _free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        assert_bad_input(star("dashboard", str(real_run), "--port", str(port)), f"127.0.0.1:{port}")


def test_export_of_the_top_genome_loads_in_transformers_and_its_trained_weights_match_our_logits(real_run, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    assert star("export", str(real_run), "--rank", "1", "--format", "hf", "-o", str(tmp_path / "cfg")).returncode == 0
    top = json.loads(star("pareto", str(real_run), "--format", "json").stdout)[0]
    config = AutoConfig.from_pretrained(tmp_path / "cfg")
    assert config.num_hidden_layers == 16 and config.layer_types == [
        "full_attention" if k == "attention" else "conv" for k in top["layer_types"]]

    result = star("export", str(real_run), "--rank", "1", "--format", "hf", "--weights", "-o", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr
    row = next(r for r in RunStore.open(real_run).rows
               if r["genome_id"] == top["genome_id"] and r["rung"] == top["rung"])
    proxy = to_proxy(ArchConfig.from_json(row["config_json"]))
    ours = build_model(proxy, weights_from=real_run / row["weights_file"])
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "w").eval()
    tokens = torch.randint(0, proxy.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(tokens), theirs(tokens).logits, atol=1e-4)
    trained = ours.embed_tokens.weight
    fresh = build_model(proxy, seed=0).embed_tokens.weight
    assert not torch.equal(trained, fresh)  # the trained weights, not a fresh initialisation
    by_id = star("export", str(real_run), "--id", top["genome_id"], "--format", "native", "-o", str(tmp_path / "n"))
    assert by_id.returncode == 0 and json.loads((tmp_path / "n" / "config.json").read_text())["hidden_size"] == 2048


def test_report_and_export_bad_input_is_one_line_exit_2(real_run, tmp_path):
    assert_bad_input(star("report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")), "does not exist")
    empty = create_run(tmp_path / "empty", SearchSettings(space="lfm2", objectives=["params", "cache_bytes"], budget=5))
    assert_bad_input(star("report", str(empty.path), "-o", str(tmp_path / "r.html")), "no evaluations")
    assert_bad_input(star("export", str(empty.path), "--rank", "1", "--format", "hf", "-o", str(tmp_path / "e")),
                     "no evaluations")
    assert_bad_input(star("export", str(real_run), "--id", "nope", "--format", "hf", "-o", str(tmp_path / "e")),
                     "'nope'")
    assert_bad_input(star("export", str(real_run), "--rank", "99", "--format", "hf", "-o", str(tmp_path / "e")),
                     "out of range")
    assert_bad_input(star("export", str(real_run), "--rank", "0", "--format", "hf", "-o", str(tmp_path / "e")),
                     "out of range")
    assert_bad_input(star("dashboard", str(tmp_path / "missing")), "does not exist")
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "e").exists()
