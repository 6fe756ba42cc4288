"""Bad input, named and fuzzed: one line `star: error: ...`, exit status 2, nothing written.

The named cases are the failures a hostile-user survey found (issue 22): each once ended in a
traceback, a hang, gigabytes of memory, or a modified file.  The fuzz tests generate bad configs,
numbers, paths and damaged run folders with hypothesis and check the same contract on every case:
exit 0 (the input happened to be valid) or one error line and exit 2; never a traceback, never a
change to a run folder.  Everything runs in-process through `star.cli.main`, so a case costs
milliseconds, except the few that need a real process (a full disk, a signal).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from star.cli import main
from star.presets import get_preset

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`star ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_contract(code: int, err: str, allow_ok: bool = True) -> None:
    """Exit 0 (valid after all) or exactly one `star: error:` line and exit 2; never a traceback."""
    assert "Traceback" not in err, err
    if code == 0 and allow_ok:
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("star: error: "), (code, err)


def folder_digest(folder: Path) -> str:
    """Names, kinds, modes and bytes of everything under `folder`."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(f"{path.relative_to(folder)}|{path.is_dir()}|{path.stat().st_mode}".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def static_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished run with static objectives (no Ray, no training): made in milliseconds."""
    folder = tmp_path_factory.mktemp("runs") / "static"
    assert main(["search", "--objectives", "params,cache_bytes", "--budget", "6", "--out", str(folder)]) == 0
    return folder


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def lfm2_proxy_dict() -> dict:
    return get_preset("lfm2-proxy").to_dict()


# --------------------------------------------------------------------------------------------------
# Named regression cases (issue 22's examples)
# --------------------------------------------------------------------------------------------------


def config_case(mutate) -> str:
    data = lfm2_proxy_dict()
    mutate(data)
    return json.dumps(data)


CONFIGS = {
    "nested_100k_deep": "[" * 100_000 + "]" * 100_000,
    "integer_of_5000_digits": '{"hidden_size": ' + "9" * 5000 + "}",
    "mixer_kind_is_a_list": config_case(lambda d: d["blocks"][0]["mixer"].update(kind=["attention"])),
    "hidden_size_10e200": config_case(lambda d: d.update(hidden_size=10**200)),
    "hidden_size_1e200_float": config_case(lambda d: d.update(hidden_size=1e200)),
    "vocab_size_10e25": config_case(lambda d: d.update(vocab_size=10**25)),
    "norm_eps_infinite": config_case(lambda d: d.update(norm_eps=1e999)).replace("Infinity", "1e999"),
    "norm_eps_nan": config_case(lambda d: d.update(norm_eps=float("nan"))),
    "name_is_an_object": config_case(lambda d: d.update(name={"a": 1})),
    "head_dim_10e9": config_case(lambda d: d["blocks"][2]["mixer"].update(head_dim=10**9)),
    "not_utf8": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("command", ["describe", "predict"])
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_bad_config_is_one_line(case, command, tmp_path, capsys):
    code, _, err = run([command, "--config", write(tmp_path / "config.json", CONFIGS[case])], capsys)
    assert_contract(code, err, allow_ok=False)


@pytest.mark.parametrize("argv, needle", [
    (["describe", "--config", ""], "--config"),
    (["describe", "--preset="], "preset"),
    (["describe", "--genome", " "], "--genome"),
    (["export", "--preset", "lfm2-proxy", "--format", "native", "-o", "OUT", "--weights", "--seed", str(10**30)],
     "--seed"),
    (["search", "--objectives", "params,cache_bytes", "--budget", "2", "--seed", str(10**30), "--out", "NEW"],
     "--seed"),
    (["search", "--objectives", "params,cache_bytes", "--budget", "2", "--max-params", "1e999", "--out", "NEW"],
     "--max-params"),
    (["search", "--objectives", "quality,params", "--budget", "1", "--eval-timeout", "nan", "--out", "NEW"],
     "--eval-timeout"),
    (["sample", "-n", str(10**9)], "-n"),
    (["describe", "--preset", "lfm2-proxy", "--context", str(10**30)], "--context"),
    (["predict", "--preset", "lfm2-proxy", "--context", str(10**30)], "--context"),
    (["predict", "--preset", "lfm2-proxy", "--prompt", "0"], "--prompt"),
    (["dashboard", "RUN", "--port", "99999"], "--port"),
    (["search", "--objectives", "params,cache_bytes", "--budget", "1e3", "--out", "NEW"], "--budget"),
    (["search", "--objectives", "params,cache_bytes", "--budget", "2", "--workers", "0", "--out", "NEW"],
     "--workers"),
])
def test_a_bad_number_or_empty_value_is_one_line_and_makes_no_folder(argv, needle, tmp_path, capsys, static_run):
    argv = [str(tmp_path / "new-run") if a == "NEW" else str(tmp_path / "out") if a == "OUT" else
            str(static_run) if a == "RUN" else a for a in argv]
    code, _, err = run(argv, capsys)
    assert_contract(code, err, allow_ok=False)
    assert needle in err
    assert not (tmp_path / "new-run").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["profile", "--quick", "-o", "/dev/null/profile.parquet"],
    ["profile", "--quick", "-o", "MISSING/profile.parquet"],
    ["eval", "--preset", "lfm2-proxy", "--fidelity", "16K", "--out", "MISSING/scores.parquet"],
    ["report", "RUN", "-o", "MISSING/report.html"],
])
def test_an_output_file_that_cannot_be_written_is_refused_before_the_work(argv, tmp_path, capsys, static_run):
    """Minutes of profiling or training once ended in an error about the file name."""
    argv = [str(static_run) if a == "RUN" else a.replace("MISSING", str(tmp_path / "missing")) for a in argv]
    code, _, err = run(argv, capsys)
    assert_contract(code, err, allow_ok=False)
    assert "does not exist" in err or "is not a folder" in err


def test_a_width_that_does_not_fit_in_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    """Width 20,000 with --weights once allocated 6.4 GB before failing; its size is known exactly
    from the accounting, so it is refused first."""
    monkeypatch.setenv("STAR_MEMORY_LIMIT", "1GiB")
    config = write(tmp_path / "wide.json", config_case(lambda d: d.update(hidden_size=20_000)))
    code, _, err = run(["export", "--config", config, "--format", "native", "-o", str(tmp_path / "out"),
                        "--weights"], capsys)
    assert_contract(code, err, allow_ok=False)
    assert "GiB" in err and "STAR_MEMORY_LIMIT" in err
    assert not (tmp_path / "out").exists()


def test_export_whose_weights_file_is_a_folder_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "model.safetensors").mkdir(parents=True)
    before = folder_digest(out)
    code, _, err = run(["export", "--preset", "lfm2-proxy", "--format", "native", "-o", str(out), "--weights"], capsys)
    assert_contract(code, err, allow_ok=False)
    assert folder_digest(out) == before and not (out / "config.json").exists()


@pytest.mark.parametrize("corpus", ["/dev/zero", "fifo", "folder-of-devices"])
def test_a_corpus_that_never_ends_is_refused_before_reading(corpus, tmp_path, capsys):
    if corpus == "fifo":
        corpus = str(tmp_path / "fifo")
        os.mkfifo(corpus)
    elif corpus == "folder-of-devices":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "zero.txt").symlink_to("/dev/zero")
        corpus = str(tmp_path / "docs")
    code, _, err = run(["eval", "--preset", "lfm2-proxy", "--corpus", corpus, "--fidelity", "16K",
                        "--probe-steps", "0"], capsys)
    assert_contract(code, err, allow_ok=False)
    assert "not a regular file" in err or "has no .txt" in err  # a folder's devices are skipped, never read


def test_an_unreachable_ray_address_is_one_line_within_seconds_and_leaves_no_folder(tmp_path, capsys):
    with socket.socket() as s:  # a port on this machine where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(["search", "--objectives", "quality,params", "--evaluator", "synthetic", "--budget", "1",
                        "--ray-address", f"127.0.0.1:{port}", "--out", str(tmp_path / "run")], capsys)
    assert_contract(code, err, allow_ok=False)
    assert "cannot reach Ray" in err
    assert not (tmp_path / "run").exists()


def test_gpu_workers_on_a_machine_without_a_gpu_are_one_line_not_a_search_that_waits_forever(tmp_path):
    """Ray queues a task that asks for a GPU until one appears: without the check, the search hangs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run([sys.executable, "-m", "star.cli", "search", "--objectives", "quality,params",
                             "--evaluator", "synthetic", "--budget", "2", "--gpus-per-worker", "0.25", "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "finds no GPU" in result.stderr and "0.25" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_search_space_error_with_newlines_is_still_one_line(tmp_path, capsys, monkeypatch):
    plugin = tmp_path / "badspace.py"
    plugin.write_text("raise ValueError('first line\\nsecond line\\nthird line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(["sample", "--space", "badspace:SPACE"], capsys)
    assert_contract(code, err, allow_ok=False)
    assert "first line second line" in err


def test_a_full_disk_on_stdout_is_one_line():
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "star.cli", "tasks", "--json"], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("star: error: cannot write the output")


# --------------------------------------------------------------------------------------------------
# Fuzzing
# --------------------------------------------------------------------------------------------------

BAD_NUMBERS = st.sampled_from([0, -1, 1, 2, 3, 2**31, 2**63, 10**29, 10**31, 10**200, 1e308, 0.5, -0.0])
BAD_VALUES = st.one_of(
    BAD_NUMBERS,
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.dictionaries(st.sampled_from(["kind", "hidden", "x"]), st.integers(min_value=-2, max_value=5), max_size=2),
    st.sampled_from([[[[[[[[]]]]]]], "attention", "short_conv", "swiglu", "", "\n"]),
)


def paths_of(data, prefix=()):
    """Every key path into nested dicts and lists, containers included."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths_of(value, (*prefix, i))


@st.composite
def mutated_json(draw, base: dict) -> str:
    """`base` with one to three edits (a value replaced, a key removed or added), or its text cut or
    spliced with garbage."""
    data = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from([p for p in paths_of(data) if p]))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if action == "set":
            parent[path[-1]] = draw(BAD_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(BAD_VALUES)
    text = json.dumps(data, allow_nan=True)
    cut = draw(st.sampled_from(["none", "none", "none", "truncate", "splice"]))
    if cut == "truncate":
        text = text[:draw(st.integers(min_value=0, max_value=len(text)))]
    elif cut == "splice":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(st.text(max_size=6)) + text[at:]
    return text


@FUZZ
@given(text=mutated_json(lfm2_proxy_dict()), command=st.sampled_from(["describe", "predict"]))
def test_fuzzed_configs_meet_the_contract(text, command, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        code, _, err = run([command, "--config", write(Path(tmp) / "config.json", text), "--json"], capsys)
    assert_contract(code, err)


ARGUMENT_VALUES = st.one_of(
    st.integers(min_value=-(10**35), max_value=10**35).map(str),
    BAD_NUMBERS.map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=16),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "0x10", "1_000", "٣", "\n", "1,2", "--x", "2GiB",
                     "400M", "-0", "+5", "1e3", "params,params", "quality,", "lfm2", "star", "no-such"]),
)
# (command before the flag, flag, command after): every flag that takes a value, on a command that
# otherwise works; the searches are static (no Ray, no training) and tiny.
FLAGS = [
    (["describe", "--preset", "lfm2-proxy"], "--context", []),
    (["describe", "--preset", "lfm2-proxy"], "--cache-dtype-bytes", []),
    (["describe"], "--genome", []),
    (["describe"], "--preset", []),
    (["describe", "--genome", "0,0,0,0,0"], "--space", []),
    (["predict", "--preset", "lfm2-proxy"], "--context", []),
    (["predict", "--preset", "lfm2-proxy"], "--prompt", []),
    (["predict", "--preset", "lfm2-proxy"], "--profile", []),
    (["sample"], "-n", []),
    (["sample"], "--seed", []),
    (["pareto", "RUN"], "--rung", []),
    (["pareto", "RUN"], "--format", []),
    (["export", "--preset", "lfm2-proxy", "--format", "native", "-o", "OUT"], "--seed", []),
    (["export", "RUN", "--format", "native", "-o", "OUT"], "--rank", []),
    (["export", "RUN", "--format", "native", "-o", "OUT"], "--id", []),
    *[(["search", "--objectives", "params,cache_bytes", "--budget", "2", "--out", "NEW"], flag, [])
      for flag in ("--seed", "--population", "--eta", "--max-params", "--max-cache-bytes", "--context", "--prompt",
                   "--selection", "--fidelities", "--workers", "--threads-per-worker")],
    (["search", "--budget", "2", "--out", "NEW"], "--objectives", []),
    (["search", "--objectives", "params,cache_bytes", "--out", "NEW"], "--budget", []),
]


@FUZZ
@given(case=st.sampled_from(FLAGS), value=ARGUMENT_VALUES)
def test_fuzzed_arguments_meet_the_contract_and_leave_no_half_made_folder(case, value, capsys, static_run):
    before, flag, after = case
    if flag == "--budget" and value.strip().lstrip("+").isdigit() and int(value) > 50:
        value = "-" + value  # a valid budget that large would run for minutes: keep it bad
    if flag == "--objectives" and "quality" in value:
        value = value.replace("quality", "qualty")  # a training search starts Ray: out of scope here
    with tempfile.TemporaryDirectory() as tmp:
        fill = {"NEW": str(Path(tmp) / "new-run"), "OUT": str(Path(tmp) / "out"), "RUN": str(static_run)}
        argv = [fill.get(a, a) for a in before] + [f"{flag}={value}" if flag.startswith("--") else flag, *(
            [] if flag.startswith("--") else [value])] + after
        digest = folder_digest(static_run)
        code, _, err = run(argv, capsys)
        assert_contract(code, err)
        assert folder_digest(static_run) == digest
        if code != 0:
            assert not (Path(tmp) / "new-run").exists() and not (Path(tmp) / "out").exists()


def damaged_copy(static_run: Path, tmp: Path, draw) -> Path:
    """A copy of the run with its manifest or one column of its evaluations damaged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp / "run"
    shutil.copytree(static_run, folder)
    if draw(st.booleans()):
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(draw(mutated_json(manifest)))
        return folder
    table = pq.read_table(folder / "evaluations.parquet")
    rows = table.to_pylist()
    column = draw(st.sampled_from(table.column_names))
    kind = draw(st.sampled_from(["null", "extreme", "drop", "as_text"]))
    if kind == "drop":
        table = table.drop_columns([column])
    elif kind == "as_text":
        table = table.set_column(table.column_names.index(column), column,
                                 pa.array([None if r[column] is None else f"{r[column]}x" for r in rows]))
    else:
        row = draw(st.integers(min_value=0, max_value=len(rows) - 1))
        field = table.schema.field(column)
        values = [r[column] for r in rows]
        if kind == "null":
            values[row] = None
        elif pa.types.is_integer(field.type):
            values[row] = draw(st.sampled_from([-1, 2**62, -(2**62), 7]))
        elif pa.types.is_floating(field.type):
            values[row] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, 1e300]))
        elif pa.types.is_string(field.type):
            values[row] = draw(st.sampled_from(["", "x,y", "\n", "{", "9" * 50, "ok", "failed"]))
        elif pa.types.is_boolean(field.type):
            values[row] = not values[row] if values[row] is not None else True
        table = table.set_column(table.column_names.index(column), column, pa.array(values, type=field.type))
    pq.write_table(table, folder / "evaluations.parquet")
    return folder


@FUZZ
@given(data=st.data(), command=st.sampled_from(["pareto", "pareto-json", "export", "resume"]))
def test_fuzzed_run_folders_meet_the_contract_and_are_never_changed_by_a_failure(data, command, capsys, static_run):
    with tempfile.TemporaryDirectory() as tmp:
        folder = damaged_copy(static_run, Path(tmp), data.draw)
        digest = folder_digest(folder)
        with contextlib.suppress(Exception):  # a damaged manifest may hide what the resume would train
            if "quality" in (folder / "manifest.json").read_text():
                command = "pareto"
        argv = {"pareto": ["pareto", str(folder)],
                "pareto-json": ["pareto", str(folder), "--format", "json"],
                "export": ["export", str(folder), "--rank", "1", "--format", "native", "-o", str(Path(tmp) / "out")],
                "resume": ["search", "--resume", str(folder), "--budget", "6"]}[command]
        code, _, err = run(argv, capsys)
        assert_contract(code, err)
        if code != 0 or command != "resume":
            assert folder_digest(folder) == digest
