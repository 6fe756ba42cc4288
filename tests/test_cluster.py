"""Searches on a real multi-node Ray cluster started on this machine (`ray start` processes, one per
node, see cluster_helpers.py), driven by `star search --ray-address` in its own process, as a user
runs it: evaluations spread over the nodes, inputs shipped to them, a node lost, a driver killed and
resumed, and clusters that cannot run the search refused in one line."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import assert_bad_input, star
from cluster_helpers import LocalCluster

from star.evaluators.corpus import user_corpus
from star.machine import code_version

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def rows(run: Path) -> list[dict]:
    path = run / "evaluations.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


def search(cluster: LocalCluster, *args: str) -> subprocess.Popen:
    """`star search ARGS --ray-address CLUSTER` started in the background, as a user's driver.

    Run from the cluster's folder: Ray puts the driver's working folder first on its workers' import
    path, and from the repository's root that would put its star/ ahead of what a node has installed."""
    return subprocess.Popen([sys.executable, "-m", "star.cli", "search", *args, "--ray-address", cluster.address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cluster.temp_dir,
                            env={**os.environ, **cluster.driver_env})


def on(cluster: LocalCluster, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`star ARGS --ray-address CLUSTER`, to its end (from the cluster's folder, as `search`)."""
    return subprocess.run([sys.executable, "-m", "star.cli", *args, "--ray-address", cluster.address],
                          capture_output=True, text=True, cwd=cluster.temp_dir,
                          env={**os.environ, **cluster.driver_env, **(env or {})})


def wait_for_rows(run: Path, count: int, driver: subprocess.Popen, timeout: float = 120, nodes: int = 1) -> None:
    """Until the run has `count` rows, from at least `nodes` different nodes."""
    deadline = time.monotonic() + timeout
    while len(done := rows(run)) < count or len({r["node"] for r in done}) < nodes:
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, f"no {count} rows after {timeout} s"
        time.sleep(0.2)


def synthetic(run: Path, budget: int, cost: float) -> list[str]:
    """A search whose evaluations each take `cost` seconds of a worker (the formula evaluator)."""
    return ["--space", "lfm2", "--objectives", "quality,params", "--evaluator", "synthetic", "--synthetic-cost",
            str(cost), "--budget", str(budget), "--population", "4", "--fidelities", "0", "--out", str(run)]


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more node, one CPU each."""
    c = LocalCluster(head_cpus=1)
    try:
        c.add_node(cpus=1)
        yield c
    finally:
        c.stop()


def test_a_suite_search_on_two_nodes_runs_on_both_and_ships_the_corpus_and_weights(cluster, tmp_path):
    """The corpus is a path relative to the driver's folder: the nodes' workers run elsewhere (as on
    other machines) and could not open it; they get it from Ray's object store, and the driver
    writes the weights they send back."""
    text = (REPO / "README.md").read_text() + (REPO / "docs" / "search.md").read_text()
    (tmp_path / "my-text.md").write_text(text)
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "star.cli", "search", "--space", "lfm2", "--objectives",
                             "quality,decode_ms", "--fidelities", "8K", "--budget", "4", "--population", "4",
                             "--probe-steps", "16", "--device", "cpu", "--keep-weights", "--corpus", "my-text.md",
                             "--out", "run", "--ray-address", cluster.address, "--json"],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **cluster.driver_env})
    assert result.returncode == 0, result.stderr
    done = rows(run)
    assert len(done) == 4 and all(r["status"] == "ok" for r in done), [r["reason"] for r in done]
    # both nodes ran evaluations (workers default to the cluster's CPUs: 2 of 1 thread)
    assert len({r["node"] for r in done}) == 2 and all(r["node_ip"] for r in done)
    assert {r["threads"] for r in done} == {1} and {r["device"] for r in done} == {"cpu"}
    digest = user_corpus(str(tmp_path / "my-text.md")).digest()
    assert {r["corpus"] for r in done} == {digest}  # the driver's text, on every node
    assert {r["star_version"] for r in done} == {code_version()}
    for r in done:
        weights = run / r["weights_file"]
        assert weights.is_file() and weights.stat().st_size > 10_000


def test_losing_a_node_mid_search_loses_no_evaluation(tmp_path):
    """SIGKILL one node's raylet and workers while both nodes evaluate: the jobs it held are retried
    on the node left, each (genome, rung) lands once, and the budget completes."""
    c = LocalCluster(head_cpus=1)
    try:
        port = c.add_node(cpus=1)
        run = tmp_path / "run"
        driver = search(c, *synthetic(run, budget=10, cost=2.0))
        wait_for_rows(run, 2, driver, nodes=2)  # both nodes evaluate (on a busy host one starts late)
        before = rows(run)
        assert c.kill_node(port) > 0
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
    finally:
        c.stop()
    done = rows(run)
    assert len(done) == 10 and all(r["status"] == "ok" for r in done), [r["reason"] for r in done]
    keys = [(r["genome_id"], r["rung"]) for r in done]
    assert len(set(keys)) == len(keys)
    retried = [r for r in done if r["attempts"] > 1]
    assert retried, "no evaluation was running on the lost node"
    for r in retried:
        assert "node lost" in r["reason"] and r["reason"].startswith(f"ok on attempt {r['attempts']}")
    lost_node = {r["node"] for r in before} - {r["node"] for r in retried}
    # the rows after those in flight at the kill (one per node) ran on the node left
    assert lost_node and not {r["node"] for r in done[len(before) + 2:]} & lost_node


def test_a_killed_driver_resumes_on_the_cluster_and_continues_the_same_run(cluster, tmp_path):
    run = tmp_path / "run"
    driver = search(cluster, *synthetic(run, budget=8, cost=1.5))
    wait_for_rows(run, 2, driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    before = rows(run)
    result = on(cluster, "search", "--resume", str(run), "--json")
    assert result.returncode == 0, result.stderr
    after = rows(run)
    assert len(after) == 8 and all(r["status"] == "ok" for r in after)
    assert after[:len(before)] == before  # what finished before the kill is kept as it was
    keys = [(r["genome_id"], r["rung"]) for r in after]
    assert len(set(keys)) == len(keys)
    assert len({r["node"] for r in after}) == 2


def test_a_driver_with_token_authentication_against_a_cluster_without_it_is_one_line(cluster, tmp_path):
    """It joins, but the other node's workers cannot fetch its objects (the corpus would never arrive)."""
    run = tmp_path / "run"
    assert_bad_input(on(cluster, "search", *synthetic(run, budget=4, cost=0),
                        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}),
                     "RAY_AUTH_MODE=token", "the cluster does not")
    assert not run.exists()


def _shadow_star(folder: Path, edit: bool) -> Path:
    """A PYTHONPATH folder for a node: with `edit`, a copy of star with one changed line (another
    checkout); without, a site hook that makes `import star` fail as where it is not installed."""
    folder.mkdir()
    if edit:
        for package, source in (("star", "star"), ("star/evaluators", "evaluators"),
                                ("star/search_spaces", "search_spaces")):
            shutil.copytree(REPO / source, folder / package, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.parquet"))
        errors = folder / "star" / "errors.py"
        errors.write_text(errors.read_text() + "\n# another checkout\n")
    else:
        (folder / "sitecustomize.py").write_text(
            "import sys\n\n\nclass NoStar:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'star' or name.startswith('star.'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n\n\n"
            "sys.meta_path.insert(0, NoStar())\n")
    return folder


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_cluster_that_cannot_run_the_search_is_one_line_and_leaves_the_run_as_it_was(tmp_path):
    # a run made on this machine, to resume on the cluster with a larger budget
    made = tmp_path / "made"
    result = star("search", *synthetic(made, budget=2, cost=0), "--json")
    assert result.returncode == 0, result.stderr
    made_files = _digests(made)

    c = LocalCluster(head_cpus=1)
    try:
        for edit, needle in ((False, "star is not installed there"), (True, "runs star 0.1.0+")):
            port = c.add_node(cpus=1, env={"PYTHONPATH": str(_shadow_star(tmp_path / f"shadow-{edit}", edit))})
            new = tmp_path / f"new-{edit}"
            assert_bad_input(on(c, "search", *synthetic(new, budget=4, cost=0)),
                             "cannot run this search" if not edit else "install the same version", needle)
            assert not new.exists()
            assert_bad_input(on(c, "search", "--resume", str(made), "--budget", "4"), needle)
            assert _digests(made) == made_files
            c.kill_node(port)
            deadline = time.monotonic() + 60
            while len(_alive(c.address)) > 1:  # the head declares the node dead after its health checks
                assert time.monotonic() < deadline
                time.sleep(0.5)
        # a worker larger than any node, and GPUs from a cluster that has none
        assert_bad_input(on(c, "search", *synthetic(tmp_path / "big", budget=4, cost=0), "--threads-per-worker", "2"),
                         "--threads-per-worker 2", "the largest has 1")
        assert_bad_input(on(c, "search", *synthetic(tmp_path / "gpu", budget=4, cost=0), "--gpus-per-worker", "0.5"),
                         "--gpus-per-worker 0.5", "no node")
        assert not (tmp_path / "big").exists() and not (tmp_path / "gpu").exists()
    finally:
        c.stop()


def _alive(address: str) -> list[str]:
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(','.join(n['NodeID'] for n in ray.nodes() if n['Alive']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    return [n for n in out.stdout.strip().split(",") if n]
