"""Damaged run folders (issue 22): every command that opens a run (pareto, report, export, dashboard,
search --resume) meets a damaged manifest, damaged rows or files in the way with one line
`star: error: ...` naming the file, row and column, exit status 2, and leaves every byte of the run
folder as it was.  A new search that fails to start leaves no run folder behind.

One small static run (params, cache_bytes: no training, no Ray) is made per module; each test damages a
copy of it and calls `star.cli.main` in-process."""

import hashlib
import json
import os
import shutil
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from star.cli import main
from star.errors import StarError
from star.search import Search, check_resume, open_run

BUDGET = 12
# The first reference run (issue 7): a run folder from before the proxy-fidelity work, the probe and the
# worker-environment columns, kept so that runs made by earlier versions stay readable and resumable.
REFERENCE_RUN = Path(__file__).resolve().parent.parent / "results" / "lfm2-cpu-v1"


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("source") / "run"
    code = main(["search", "--objectives", "params,cache_bytes", "--budget", str(BUDGET), "--population", "4",
                 "--out", str(run), "--json"])
    assert code == 0 and (run / "study.db").is_file() and (run / "report.html").is_file()
    return run


@pytest.fixture
def run(source_run, tmp_path, capsys) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(source_run, copy)
    capsys.readouterr()  # the fixture's search output
    return copy


def digest(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file by its bytes' hash, a folder or link by its kind."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            entries[name] = "link:" + os.readlink(path)
        elif path.is_dir():
            entries[name] = "folder"
        else:
            entries[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def run_main(argv: list[str]) -> int:
    """`star.cli.main`, with a usage error (argparse exits) as its exit status."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def assert_refused(argv: list[str], capsys, folder: Path, *needles: str) -> str:
    """The contract: exit status 2, exactly one stderr line `star: error: ...`, the folder unchanged."""
    before = digest(folder)
    code = run_main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("star: error: "), err
    assert digest(folder) == before
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def commands(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {"pareto": ["pareto", str(folder)],
            "report": ["report", str(folder), "-o", str(tmp_path / "out.html")],
            "export": ["export", str(folder), "--rank", "1", "--format", "hf", "-o", str(tmp_path / "exported")],
            # a larger budget: had the resume started, it would have rewritten the manifest
            "resume": ["search", "--resume", str(folder), "--budget", str(BUDGET + 8), "--json"]}


# ---- damaged rows ---------------------------------------------------------------------------------


def edit_rows(edit: Callable[[list[dict]], None]) -> Callable[[Path], None]:
    """Rewrite evaluations.parquet with `edit` applied, typed by value as another tool would write it."""
    def apply(folder: Path) -> None:
        rows = pq.read_table(folder / "evaluations.parquet").to_pylist()
        edit(rows)
        pq.write_table(pa.Table.from_pylist(rows), folder / "evaluations.parquet")
    return apply


def each(**values) -> Callable[[list[dict]], None]:
    return lambda rows: [row.update(values) for row in rows]


def first(**values) -> Callable[[list[dict]], None]:
    return lambda rows: rows[0].update(values)


DAMAGED_ROWS = {
    "null_objective": (first(params=None), "column 'params'"),
    "nan_objective": (first(cache_bytes=float("nan")), "column 'cache_bytes'"),
    "null_rung": (first(rung=None), "column 'rung'"),
    "string_rung": (lambda rows: [row.update(rung=str(row["rung"])) for row in rows], "column 'rung'"),
    "negative_rung": (first(rung=-1), "column 'rung'"),
    "rung_beyond_the_fidelities": (first(rung=3), "not a rung of this run"),
    "null_layer_types": (each(layer_types=None), "column 'layer_types'"),
    "null_status": (each(status=None), "column 'status'"),
    "unknown_status": (first(status="maybe"), "column 'status'"),
    "null_violation": (first(violation=None), "column 'violation'"),
    "genome_not_integers": (first(genome="1,x,2"), "column 'genome'"),
    "eval_index_gap": (lambda rows: rows[1].update(eval_index=7), "column 'eval_index'"),
    "bool_job": (each(job=True), "column 'job'"),
}


@pytest.mark.parametrize("command", ["pareto", "report", "export", "resume"])
@pytest.mark.parametrize("case", DAMAGED_ROWS)
def test_damaged_rows_are_one_line_naming_file_row_and_column(case, command, run, tmp_path, capsys):
    edit, needle = DAMAGED_ROWS[case]
    edit_rows(edit)(run)
    line = assert_refused(commands(run, tmp_path)[command], capsys, run, needle)
    assert "evaluations.parquet" in line and "eval_index" in line
    assert not (tmp_path / "out.html").exists() and not (tmp_path / "exported").exists()


@pytest.mark.parametrize("command", ["report", "resume"])
def test_bad_config_json_is_one_line(command, run, tmp_path, capsys):
    """The report draws every seed and front member's layout from config_json; a resume ends with the
    report, so it checks them all before it evaluates anything."""
    edit_rows(lambda rows: [row.update(config_json="{") for row in rows])(run)
    assert_refused(commands(run, tmp_path)[command], capsys, run, "column 'config_json'", "eval_index")


def test_export_of_a_bad_config_json_is_one_line(run, tmp_path, capsys):
    top = json.loads(_stdout(["pareto", str(run), "--format", "json"], capsys))[0]
    edit_rows(lambda rows: [row.update(config_json='{"hidden_size": "wide"}') for row in rows
                            if row["genome_id"] == top["genome_id"]])(run)
    assert_refused(commands(run, tmp_path)["export"], capsys, run, "column 'config_json'")


def test_a_genome_outside_the_space_stops_resume_and_dashboard(run, tmp_path, capsys, no_server):
    edit_rows(first(genome="1,2"))(run)
    assert_refused(commands(run, tmp_path)["resume"], capsys, run, "column 'genome'", "search space 'lfm2'")
    (run / "study.db").unlink()  # the dashboard would rebuild it: it must not start to
    assert_refused(["dashboard", str(run), "--port", str(_free_port())], capsys, run, "column 'genome'")


def test_weights_file_outside_the_run_is_refused(run, tmp_path, capsys):
    top = json.loads(_stdout(["pareto", str(run), "--format", "json"], capsys))[0]
    edit_rows(lambda rows: [row.update(weights_file="../../etc/passwd") for row in rows])(run)
    assert_refused(["export", str(run), "--id", top["genome_id"], "--format", "native", "--weights", "-o",
                    str(tmp_path / "exported")], capsys, run, "outside the run folder")


# ---- damaged manifests ----------------------------------------------------------------------------


def edit_manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        edit(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return apply


def write_manifest(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "manifest.json").write_text(text)


DAMAGED_MANIFESTS = {
    "missing_objectives": (edit_manifest(lambda m: m["settings"].pop("objectives")), "missing key 'objectives'"),
    "unknown_objective": (edit_manifest(lambda m: m["settings"].update(objectives=["params", "bogus"])),
                          "unknown objective 'bogus'"),
    "objectives_not_the_normaliser": (edit_manifest(lambda m: m["settings"].update(objectives=["params", "decode_ms"])),
                                      "normaliser"),
    "budget_a_string": (edit_manifest(lambda m: m["settings"].update(budget="many")), "settings.budget"),
    "seed_beyond_int64": (edit_manifest(lambda m: m["settings"].update(seed=10**25)), "settings.seed"),
    "bool_population": (edit_manifest(lambda m: m["settings"].update(population=True)), "settings.population"),
    "unknown_setting": (edit_manifest(lambda m: m["settings"].update(colour="blue")), "unknown key 'colour'"),
    "settings_a_list": (edit_manifest(lambda m: m.update(settings=[])), "'settings' must be an object"),
    "evaluator_a_string": (edit_manifest(lambda m: m["settings"].update(evaluator="suite")), "settings.evaluator"),
    "constraint_not_a_number": (edit_manifest(lambda m: m["settings"].update(constraints={"params": "big"})),
                                "settings.constraints.params"),
    "normaliser_short": (edit_manifest(lambda m: m["normaliser"]["lower"].pop()), "normaliser.lower"),
    "normaliser_direction": (edit_manifest(lambda m: m["normaliser"]["directions"].__setitem__(0, "up")),
                             "normaliser.directions[0]"),
    "normaliser_bounds_reversed": (edit_manifest(lambda m: m["normaliser"].update(lower=m["normaliser"]["upper"])),
                                   "lower < upper"),
    "score_columns_clash": (edit_manifest(lambda m: m.update(score_columns=["rung"])), "score_columns[0]"),
    "missing_created": (edit_manifest(lambda m: m.pop("created")), "missing key 'created'"),
    "format_version_a_string": (edit_manifest(lambda m: m.update(format_version="1")), "run format"),
    "nested_100k_deep": (write_manifest('{"format": "star-run", "format_version": 1, "settings": '
                                        + "[" * 100_000 + "]" * 100_000 + "}"), "nested too deeply"),
    "not_json": (write_manifest('{"format": "star-run",'), "not valid JSON"),
    "huge_integer": (write_manifest('{"format": "star-run", "format_version": 1' + "0" * 5000 + "}"), "digits"),
    "a_folder": (lambda folder: ((folder / "manifest.json").unlink(), (folder / "manifest.json").mkdir()),
                 "not a regular file"),
}


@pytest.mark.parametrize("command", ["pareto", "report", "export", "resume"])
@pytest.mark.parametrize("case", DAMAGED_MANIFESTS)
def test_damaged_manifests_are_one_line(case, command, run, tmp_path, capsys):
    edit, needle = DAMAGED_MANIFESTS[case]
    edit(run)
    line = assert_refused(commands(run, tmp_path)[command], capsys, run, needle)
    assert "manifest.json" in line


RESUME_ONLY = {  # settings only a search uses: pareto and report read the run without them
    "unknown_device_profile": (lambda s: s.update(device_profile="nope"), "unknown device profile 'nope'"),
    "unknown_evaluator": (lambda s: s["evaluator"].update(kind="nope"), "--evaluator"),
    "unknown_precision": (lambda s: s["evaluator"].update(precision="fp8"), "--precision"),
    "unknown_space": (lambda s: s.update(space="nope"), "nope"),
    "negative_eval_timeout": (lambda s: s.update(eval_timeout_s=-1.0), "--eval-timeout"),
    "unknown_constraint": (lambda s: s.update(constraints={"colour": 1.0}), "constraint metric 'colour'"),
    "no_fidelities": (lambda s: s.update(fidelities=[]), "--fidelities"),
    "population_of_one": (lambda s: s.update(population=1), "--population"),
    "unknown_seed_preset": (lambda s: s.update(seed_presets=["nope"]), "nope"),
}


@pytest.mark.parametrize("case", RESUME_ONLY)
def test_resume_rechecks_every_stored_setting(case, run, tmp_path, capsys):
    edit, needle = RESUME_ONLY[case]
    edit_manifest(lambda m: edit(m["settings"]))(run)
    assert_refused(commands(run, tmp_path)["resume"], capsys, run, needle, "manifest.json")


def test_resume_below_the_evaluations_done_writes_nothing(run, tmp_path, capsys):
    assert_refused(["search", "--resume", str(run), "--budget", str(BUDGET - 1)], capsys, run, "below the 12")


# ---- files in the way, unwritable folders, foreign studies ---------------------------------------


def folder_at(name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        if (folder / name).exists():
            (folder / name).unlink()
        (folder / name).mkdir()
    return apply


def garbage_study(folder: Path) -> None:
    (folder / "study.db").write_bytes(b"garbage" * 100)


def foreign_database(folder: Path) -> None:
    """A valid SQLite file of another program: Optuna would add its tables to it."""
    (folder / "study.db").unlink()
    with sqlite3.connect(folder / "study.db") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    db.close()


def another_runs_study(folder: Path) -> None:
    """An Optuna study of the same name whose trials are other genomes."""
    with sqlite3.connect(folder / "study.db") as db:
        db.execute("UPDATE trial_user_attributes SET value_json = '\"0123456789ab\"' WHERE key = 'genome_id'")
    db.close()


def other_study_name(folder: Path) -> None:
    with sqlite3.connect(folder / "study.db") as db:
        db.execute("UPDATE studies SET study_name = 'someone-else'")
    db.close()


FILES_IN_THE_WAY = {
    "evaluations_tmp_is_a_folder": (folder_at(".evaluations.parquet.tmp"), ".evaluations.parquet.tmp is a folder"),
    "manifest_tmp_is_a_folder": (folder_at(".manifest.json.tmp"), ".manifest.json.tmp is a folder"),
    "report_is_a_folder": (folder_at("report.html"), "report.html is a folder"),
    "study_is_a_folder": (folder_at("study.db"), "study.db is a folder"),
    "garbage_study": (garbage_study, "not a readable Optuna study database"),
    "foreign_database": (foreign_database, "not an Optuna study database (it has a table 'notes')"),
    "another_runs_study": (another_runs_study, "not this run's evaluations"),
    "other_study_name": (other_study_name, "no study named 'star-search'"),
}


@pytest.mark.parametrize("case", FILES_IN_THE_WAY)
def test_resume_fails_before_writing_anything(case, run, tmp_path, capsys):
    """The survey's `--resume` rewrote manifest.json (the budget) and then failed on the study; now
    every check comes first."""
    edit, needle = FILES_IN_THE_WAY[case]
    edit(run)
    assert_refused(commands(run, tmp_path)["resume"], capsys, run, needle)


@pytest.fixture
def no_server(monkeypatch):
    """Should a dashboard test get past every check, fail instead of serving forever."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")

    def serve(*args, **kwargs) -> None:
        raise AssertionError("the dashboard started")

    monkeypatch.setattr(optuna_dashboard, "run_server", serve)


DASHBOARD_STUDIES = {"garbage_study": "not a readable Optuna study database",
                     "foreign_database": "not an Optuna study database",
                     "another_runs_study": "not this run's evaluations", "study_is_a_folder": "not a regular file"}


@pytest.mark.parametrize("case", DASHBOARD_STUDIES)
def test_dashboard_refuses_a_study_that_is_not_the_runs(case, run, capsys, no_server):
    FILES_IN_THE_WAY[case][0](run)
    assert_refused(["dashboard", str(run), "--port", str(_free_port())], capsys, run, DASHBOARD_STUDIES[case])


def test_a_read_only_run_folder_is_refused_before_resuming(run, tmp_path, capsys, monkeypatch):
    """As root a folder's mode does not stop writes, so the probe is made to fail as it would for
    anyone else."""
    def refuse(folder: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("star.store._probe_writable", refuse)
    assert_refused(commands(run, tmp_path)["resume"], capsys, run, "is not writable", "Permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_refused_for_real(run, tmp_path, capsys):
    run.chmod(0o555)
    try:
        assert_refused(commands(run, tmp_path)["resume"], capsys, run, "is not writable")
    finally:
        run.chmod(0o755)


def test_dashboard_checks_its_port_before_writing_the_study(run, capsys, no_server):
    """The survey's dashboard wrote study.db and then failed on its port."""
    (run / "study.db").unlink()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(["dashboard", str(run), "--port", str(port)], capsys, run, "cannot listen")
    assert_refused(["dashboard", str(run), "--port", "70000"], capsys, run, "--port")
    assert_refused(["dashboard", str(run), "--host", "no\0where", "--port", str(_free_port())], capsys, run,
                   "cannot listen")
    assert not (run / "study.db").exists()


# ---- a run folder from someone else runs none of its code and opens none of its databases ----------

THEIR_SPACE = """from pathlib import Path

Path({marker!r}).write_text("their code ran")
from star.search_spaces.lfm2 import SPACE  # noqa: E402
"""


def their_space(tmp_path: Path, monkeypatch, form: str) -> tuple[str, Path]:
    """A search space spec that runs code leaving a marker file: 'file.py:SPACE', or 'module:SPACE'
    with the module importable."""
    marker = tmp_path / "marker"
    (tmp_path / "their_space.py").write_text(THEIR_SPACE.format(marker=str(marker)))
    if form == "module":
        monkeypatch.syspath_prepend(str(tmp_path))
        return "their_space:SPACE", marker
    return f"{tmp_path / 'their_space.py'}:SPACE", marker


def opening(command: str, run: Path, tmp_path: Path) -> list[str]:
    if command == "dashboard":
        return ["dashboard", str(run), "--port", str(_free_port())]
    return commands(run, tmp_path)[command]


@pytest.mark.parametrize("form", ["file", "module"])
@pytest.mark.parametrize("command", ["resume", "dashboard"])
def test_a_space_named_as_code_in_a_manifest_is_not_loaded(command, form, run, tmp_path, capsys, monkeypatch,
                                                           no_server):
    spec, marker = their_space(tmp_path, monkeypatch, form)
    edit_manifest(lambda m: m["settings"].update(space=spec))(run)
    assert_refused(opening(command, run, tmp_path), capsys, run, repr(spec), "--trust-space", "manifest.json")
    assert not marker.exists()


def test_reading_a_run_whose_space_is_code_runs_none_of_it(run, tmp_path, capsys, monkeypatch):
    """pareto, report and export need nothing of the space: they read the run, and load no code."""
    spec, marker = their_space(tmp_path, monkeypatch, "file")
    edit_manifest(lambda m: m["settings"].update(space=spec))(run)
    for command in ("pareto", "report", "export"):
        assert main(commands(run, tmp_path)[command]) == 0, command
    assert not marker.exists()


def test_trusting_a_run_folder_loads_its_space(run, tmp_path, capsys, monkeypatch):
    """--trust-space, or naming the space again with --space, loads it: the user's explicit word."""
    spec, marker = their_space(tmp_path, monkeypatch, "file")
    edit_manifest(lambda m: m["settings"].update(space=spec))(run)
    assert main([*commands(run, tmp_path)["resume"], "--trust-space"]) == 0
    assert marker.read_text() == "their code ran" and len(open_run(run).rows) == BUDGET + 8
    marker.unlink()
    assert main(["search", "--resume", str(run), "--space", spec, "--budget", str(BUDGET + 9), "--json"]) == 0
    assert marker.exists() and len(open_run(run).rows) == BUDGET + 9


@pytest.mark.parametrize("command", ["resume", "dashboard"])
def test_a_storage_named_in_a_manifest_is_not_opened(command, run, tmp_path, capsys, no_server):
    """Optuna creates and writes any SQLite file (or reaches any database server) it is given."""
    elsewhere = tmp_path / "elsewhere.db"
    url = f"sqlite:///{elsewhere}"
    edit_manifest(lambda m: m["settings"].update(storage=url))(run)
    assert_refused(opening(command, run, tmp_path), capsys, run, repr(url), "--storage", "manifest.json")
    assert not elsewhere.exists()


def test_the_runs_own_study_and_an_explicit_storage_open(run, tmp_path, capsys, monkeypatch):
    own = f"sqlite:///{run / 'study.db'}"
    edit_manifest(lambda m: m["settings"].update(storage=own))(run)
    assert main([*commands(run, tmp_path)["resume"]]) == 0  # the folder's own study.db needs no flag
    elsewhere = tmp_path / "elsewhere.db"
    url = f"sqlite:///{elsewhere}"
    edit_manifest(lambda m: m["settings"].update(storage=url))(run)
    assert main(["search", "--resume", str(run), "--storage", url, "--budget", str(BUDGET + 9), "--json"]) == 0
    with sqlite3.connect(elsewhere) as db:
        assert db.execute("SELECT count(*) FROM trials").fetchone()[0] == BUDGET + 9
    db.close()
    served = []
    monkeypatch.setattr(pytest.importorskip("optuna_dashboard"), "run_server",
                        lambda storage, **kwargs: served.append(storage))
    assert main(["dashboard", str(run), "--storage", url, "--port", str(_free_port())]) == 0
    assert served == [url]
    assert_refused(["dashboard", str(run), "--storage", own, "--port", str(_free_port())], capsys, run,
                   "--storage", "differs from this run's")


# ---- failed starts leave no run folder -------------------------------------------------------------

NEW_SEARCH = ["search", "--objectives", "params,cache_bytes", "--budget", "4", "--population", "2", "--json"]


def failing_run(error: BaseException) -> Callable[[Search], None]:
    def run(self: Search) -> None:
        raise error
    return run


def test_a_new_search_that_fails_to_start_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """E.g. Ray unreachable: the folder (and the parents the command made) go again."""
    monkeypatch.setattr(Search, "run", failing_run(StarError("cannot reach the Ray cluster at 10.255.255.1")))
    out = tmp_path / "made" / "by" / "star"
    assert main([*NEW_SEARCH, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("star: error: cannot reach the Ray cluster")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_start_in_an_empty_folder_leaves_it_empty(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Search, "run", failing_run(StarError("cannot reach the Ray cluster")))
    out = tmp_path / "empty"
    out.mkdir()
    assert main([*NEW_SEARCH, "--out", str(out)]) == 2
    assert out.is_dir() and list(out.iterdir()) == []


def test_an_out_folder_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert_refused([*NEW_SEARCH, "--out", str(tmp_path / "a-file" / "run")], capsys, tmp_path, "not writable")


def test_interrupting_a_new_search_before_any_result_removes_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Search, "run", failing_run(KeyboardInterrupt()))
    assert main([*NEW_SEARCH, "--out", str(tmp_path / "run")]) == 130
    assert "removed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_failure_after_evaluations_finished_keeps_them(tmp_path, capsys, monkeypatch):
    """Only a run with nothing in it is removed: finished evaluations are results."""
    def fail(self: Search) -> None:
        raise StarError("stopped after the first batch")

    monkeypatch.setattr(Search, "_report", fail)
    out = tmp_path / "run"
    assert main([*NEW_SEARCH, "--out", str(out)]) == 2
    assert len(open_run(out).rows) == 4


def test_a_new_search_with_a_seed_beyond_int64_makes_no_folder(tmp_path, capsys):
    assert run_main([*NEW_SEARCH, "--seed", str(10**30), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("star: error: ")
    assert not (tmp_path / "run").exists()


# ---- valid runs still open -------------------------------------------------------------------------


def test_a_valid_run_resumes_and_the_reference_run_opens(run, tmp_path, capsys):
    assert main(["search", "--resume", str(run), "--budget", str(BUDGET), "--json"]) == 0
    (run / "study.db").unlink()  # what the errors above advise: the study is rebuilt from the run
    assert main(["search", "--resume", str(run), "--budget", str(BUDGET + 2), "--json"]) == 0
    with sqlite3.connect(run / "study.db") as db:
        assert db.execute("SELECT count(*) FROM trials").fetchone()[0] == BUDGET + 2
    db.close()
    assert json.loads((run / "manifest.json").read_text())["settings"]["budget"] == BUDGET + 2
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE_RUN, copy)
    store = open_run(copy)
    assert len(store.rows) == 60 and store.manifest["settings"]["evaluator"]["probe_steps"] is None
    settings = check_resume(store)  # every stored setting, the study and the folder pass
    assert settings.rungs == 2
    assert digest(copy) == digest(REFERENCE_RUN)
    assert main(["pareto", str(REFERENCE_RUN), "--format", "json"]) == 0


def _stdout(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
