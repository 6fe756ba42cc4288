"""A run folder: the manifest, every evaluation in Parquet, and an Optuna study mirroring them.

    RUN/manifest.json          settings, objective bounds, versions and machine (written once, at start;
                               the budget is updated when a resume extends it)
    RUN/evaluations.parquet    one row per finished evaluation, in the order they finished
    RUN/study.db               Optuna study (SQLite by default), one trial per evaluation

`evaluations.parquet` is the source of truth.  It is rewritten whole (to a temporary file, then an
atomic rename) after every finished evaluation, so at any instant it is a complete, readable file
holding every evaluation that finished; a crash can only lose work still in flight.  The Optuna study
is derived from it and brought up to date on every sync, so a crash between the two is repaired the
next time the run is opened.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from star.errors import StarError
from star.validate import finite, one_line, read_json, show

MANIFEST = "manifest.json"
EVALUATIONS = "evaluations.parquet"
FORMAT = "star-run"
FORMAT_VERSION = 1

# name → pyarrow type name; metrics are float64 and may be null (a failed evaluation has none).
BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("eval_index", "int64"), ("job", "int64"), ("genome_id", "string"), ("genome", "string"), ("space", "string"),
    ("origin", "string"), ("parents", "string"), ("layer_types", "string"), ("config_json", "string"),
    ("rung", "int64"), ("fidelity", "string"), ("fidelity_tokens", "int64"), ("status", "string"),
    ("reason", "string"), ("attempts", "int64"), ("feasible", "bool"), ("violation", "float64"),
    ("violations", "string"), ("weights_file", "string"),
)
METRIC_COLUMNS = ("quality", "params", "non_embedding_params", "cache_bytes", "ttft_ms", "prefill_tok_s", "decode_ms",
                  "decode_ms_p95", "peak_memory", "prefill_flops", "decode_flops", "train_tokens_per_s",
                  "final_loss", "true_quality", "recall_probe", "recall_probe_lr", "probe_s")
TRAILING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seed", "int64"), ("wall_s", "float64"), ("worker", "string"), ("finished_at", "string"),
    ("star_version", "string"), ("python_version", "string"), ("torch_version", "string"),
    ("ray_version", "string"), ("machine", "string"),
    # Where an evaluation ran, from its worker (added after the first runs: null in their rows).
    ("threads", "int64"), ("precision", "string"), ("corpus", "string"),
    # The Ray node (id, IP) and the torch device that ran it (added with clusters: null before).
    ("node", "string"), ("node_ip", "string"), ("device", "string"),
)
# Columns that record when and where, not what: two runs of the same search differ only in these.
TIMING_COLUMNS = ("wall_s", "worker", "finished_at", "train_tokens_per_s", "node", "node_ip")
# What the search writes in `status`: the evaluation finished, or failed for good (after its retries).
STATUSES = ("ok", "failed")
# Columns no row may leave empty: the search, pareto, report and export read them from every row.
REQUIRED_COLUMNS = ("eval_index", "job", "genome_id", "genome", "origin", "layer_types", "config_json", "rung",
                    "fidelity", "status")
MAX_SCORE_COLUMNS = 10_000  # the suite has 58 (8 categories, 50 tasks)
_GENOME = re.compile(r"[0-9]{1,18}(,[0-9]{1,18})*")  # comma-separated gene values, each fits an int64
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {"int64": (int,), "float64": (int, float), "string": (str,),
                                              "bool": (bool,)}
_TYPE_NAMES = {"int64": "an integer", "float64": "a number", "string": "a string", "bool": "true or false"}
# Files star replaces in a run folder, and the temporary file each is written through first.
REPORT = "report.html"
STUDY = "study.db"


def columns_for(score_columns: Sequence[str]) -> list[tuple[str, str]]:
    return [*BASE_COLUMNS, *((m, "float64") for m in METRIC_COLUMNS), *((c, "float64") for c in score_columns),
            *TRAILING_COLUMNS]


def _schema(columns: Sequence[tuple[str, str]]) -> Any:
    import pyarrow as pa

    types = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in columns])


def scratch_path(path: Path) -> Path:
    """The temporary file `path` is written through (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp")


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, flush it to disk, then rename over `path`.

    A failed write (disk full, a folder in the way) leaves `path` as it was and no temporary file
    behind, and is one `StarError` line, not an OSError traceback."""
    tmp = scratch_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
        raise StarError(f"cannot write {path}: {one_line(err.strerror or err)}") from None


def _first_missing(folder: Path) -> Path | None:
    """The top-most folder that creating `folder` (with its parents) would make; None if it exists."""
    top = None
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            break
        top = candidate
    return top


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree if it is there; cleanup after a failure never fails itself."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


class RunStore:
    """One run folder.  Create it with `create`, reopen it (to resume or to read) with `open`."""

    def __init__(self, path: Path, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self.path, self.manifest, self.rows = path, manifest, rows
        self.columns = columns_for(manifest["score_columns"])
        for row in rows:  # a run written before a column existed reads it as null
            for name, _ in self.columns:
                row.setdefault(name, None)
        # Set by `create`: this process made the run, and the top-most folder it made (None: the
        # folder was there, empty), so that a failed start can take it away again (`discard`).
        self._fresh = False
        self._created: Path | None = None

    # ---- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, manifest: dict[str, Any]) -> RunStore:
        folder = Path(path)
        if (folder / MANIFEST).exists():
            raise StarError(f"{folder} already holds a run; continue it with --resume {folder} or choose another --out")
        if folder.exists() and not folder.is_dir():
            raise StarError(f"--out {folder} is a file, not a folder")
        if folder.is_dir() and any(folder.iterdir()):
            raise StarError(f"--out {folder} is not empty and is not a star run folder (no {MANIFEST}); "
                            "choose a new or empty folder")
        created = _first_missing(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _probe_writable(folder)
        except OSError as err:
            if created is not None:
                _remove(created)
            raise StarError(f"--out {folder} is not writable: {one_line(err.strerror or err)}") from None
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        store = cls(folder, manifest, [])
        store._fresh, store._created = True, created
        try:
            store.write_manifest()
        except StarError:
            store.discard()
            raise
        return store

    def discard(self) -> bool:
        """Remove this run if this process created it (`create`) and no evaluation has finished.

        A start that fails after the folder exists (Ray unreachable, a study that cannot open, Ctrl-C
        before the first result) would otherwise leave a half-made run that the next try refuses as
        'already holds a run'.  Only what `create` made goes: the folders it made, or, when the
        folder was there (and empty, as `create` requires), what is in it now.  Returns whether it
        removed anything."""
        if not self._fresh or self.rows or (self.path / EVALUATIONS).exists():
            return False
        self._fresh = False
        if self._created is not None:
            _remove(self._created)
        else:
            with contextlib.suppress(OSError):
                for child in self.path.iterdir():
                    _remove(child)
        return True

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        folder = Path(path)
        if not folder.is_dir():
            raise StarError(f"run folder {folder} does not exist")
        manifest_path = folder / MANIFEST
        if not os.path.lexists(manifest_path):
            raise StarError(f"{folder} is not a star run folder (no {MANIFEST})")
        manifest = read_json(manifest_path, "manifest")
        _check_manifest(manifest, manifest_path)
        columns = columns_for(manifest["score_columns"])
        rows = _read_rows(folder / EVALUATIONS, columns, manifest["normaliser"]["names"])
        return cls(folder, manifest, rows)

    def check_writable(self) -> None:
        """Fail now, with one line, if a later write into this run could not succeed.

        A resume writes the manifest, evaluations.parquet, the study and report.html, each (but the
        study) through a temporary file; a folder or a link where one of them goes, or a folder that
        cannot be written, would fail only after the resume had changed something."""
        for name in (MANIFEST, EVALUATIONS, REPORT, STUDY):
            for path in (self.path / name, scratch_path(self.path / name)):
                if path.is_symlink() or (path.exists() and not path.is_file()):
                    kind = "a link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
                    raise StarError(f"{path} is {kind}, where star writes {name}; move it out of the run folder")
        try:
            _probe_writable(self.path)
        except OSError as err:
            raise StarError(f"run folder {self.path} is not writable: {one_line(err.strerror or err)}") from None

    # ---- writing ---------------------------------------------------------------------------------

    def write_manifest(self) -> None:
        _write_atomic(self.path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(self.manifest, indent=2) + "\n"))

    def write_file(self, relative: str, data: bytes) -> None:
        """Write a file the run keeps (a trained proxy's weights) at `relative` inside the folder,
        whole or not at all: a worker on another machine sends the bytes, the driver writes them."""
        path = self.path / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StarError(f"cannot create {path.parent}: {one_line(err.strerror or err)}") from None
        _write_atomic(path, lambda tmp: tmp.write_bytes(data))

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add finished evaluations and persist them before returning."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = {name for name, _ in self.columns}
        for row in rows:
            unknown = set(row) - names
            if unknown:
                raise ValueError(f"row has columns the run does not: {sorted(unknown)}")
        table = pa.Table.from_pylist([{name: row.get(name) for name, _ in self.columns} for row in [*self.rows, *rows]],
                                     schema=_schema(self.columns))
        _write_atomic(self.path / EVALUATIONS, lambda tmp: pq.write_table(table, tmp))
        self.rows.extend(rows)  # only once they are on disk: `rows` is what the run holds


def _probe_writable(folder: Path) -> None:
    """Create and remove a uniquely named empty file in `folder` (raises OSError if it cannot)."""
    handle, probe = tempfile.mkstemp(dir=folder, prefix=".star-write-test-")
    os.close(handle)
    os.unlink(probe)


def _check_manifest(manifest: Any, path: Path) -> None:
    """The manifest's structure, which every command relies on: the format, the settings object (its
    keys and types are `SearchSettings.from_manifest`'s to check), the objective bounds and the
    score columns.  Whatever is wrong is named with the file and the key."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StarError(f"{path} is not a star run manifest (no \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise StarError(f"{path} has run format {show(version)}; this star reads format {FORMAT_VERSION}")
    kinds = {dict: "an object", list: "a list", str: "a string"}
    for key, kind in (("settings", dict), ("normaliser", dict), ("score_columns", list), ("created", str),
                      ("versions", dict)):
        if key not in manifest:
            raise StarError(f"{path}: missing key {key!r}")
        if not isinstance(manifest[key], kind):
            raise StarError(f"{path}: {key!r} must be {kinds[kind]}, got {show(manifest[key])}")
    _check_normaliser(manifest["normaliser"], path)
    columns = manifest["score_columns"]
    fixed = {name for name, _ in columns_for([])}
    if len(columns) > MAX_SCORE_COLUMNS:
        raise StarError(f"{path}: score_columns has {len(columns):,} names, over the {MAX_SCORE_COLUMNS:,} allowed")
    seen: set[str] = set()
    for i, name in enumerate(columns):
        if not isinstance(name, str) or not name or name in fixed or name in seen:
            raise StarError(f"{path}: score_columns[{i}] must be a new, non-empty column name, got {show(name)}")
        seen.add(name)


def _check_normaliser(normaliser: dict[str, Any], path: Path) -> None:
    """The objective bounds: one name, direction and finite lower < upper per objective."""
    names = normaliser.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise StarError(f"{path}: normaliser.names must be a non-empty list of objective names, got {show(names)}")
    for name in names:
        if name not in METRIC_COLUMNS:
            raise StarError(f"{path}: normaliser.names: {show(name)} is not a metric a run records")
    for key in ("directions", "lower", "upper"):
        values = normaliser.get(key)
        if not isinstance(values, list) or len(values) != len(names):
            raise StarError(f"{path}: normaliser.{key} must be a list of {len(names)} values (one per objective), "
                            f"got {show(values)}")
    for i, direction in enumerate(normaliser["directions"]):
        if direction not in ("min", "max"):
            raise StarError(f"{path}: normaliser.directions[{i}] must be 'min' or 'max', got {show(direction)}")
    for i in range(len(names)):
        lower = finite(normaliser["lower"][i], f"{path}: normaliser.lower[{i}]")
        upper = finite(normaliser["upper"][i], f"{path}: normaliser.upper[{i}]")
        if not lower < upper:
            raise StarError(f"{path}: normaliser bounds of {names[i]} must have lower < upper, got {lower} and {upper}")


def _read_rows(path: Path, columns: Sequence[tuple[str, str]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    if not os.path.lexists(path):
        return []
    if not path.is_file():
        raise StarError(f"{path} is not a regular file; the run cannot be read")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise StarError(f"{path} is not a readable Parquet file ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); the run cannot be read") from None
    for column in ("eval_index", "job", "genome_id", "genome", "status", "rung"):
        if column not in table.column_names:
            raise StarError(f"{path} has no {column!r} column; it is not a star evaluations file")
    rows = table.to_pylist()
    for row in rows:  # a run written before a column existed reads it as null
        for name, _ in columns:
            row.setdefault(name, None)
    _check_rows(rows, columns, objectives, path)
    return rows


def _check_rows(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], objectives: Sequence[str],
                path: Path) -> None:
    """Every row as the search writes it: each column of its type (or null, except REQUIRED_COLUMNS),
    eval_index 0..n-1 in order, a known status, a genome of integers, and on a successful evaluation
    finite objectives and violation.  Checked once here so that no command meets a null rung or a
    string where a number goes half-way through its work."""
    required = set(REQUIRED_COLUMNS)
    for i, row in enumerate(rows):
        def bad(column: str, problem: str, i: int = i) -> StarError:
            return StarError(f"{path}: row with eval_index {i}, column {column!r}: {problem}")

        for name, kind in columns:
            value = row[name]
            if value is None:
                if name in required:
                    raise bad(name, "is empty (null)")
            elif (isinstance(value, bool) and kind != "bool") or not isinstance(value, _PYTHON_TYPES[kind]):
                raise bad(name, f"must be {_TYPE_NAMES[kind]}, got {show(value)}")
        if row["eval_index"] != i:
            raise bad("eval_index", f"is {row['eval_index']}: evaluations are numbered 0..{len(rows) - 1} in "
                                    "order; the file was edited or damaged")
        for name in ("job", "rung"):
            if row[name] < 0:
                raise bad(name, f"must be >= 0, got {row[name]}")
        if row["status"] not in STATUSES:
            raise bad("status", f"must be one of {', '.join(STATUSES)}, got {show(row['status'])}")
        if not _GENOME.fullmatch(row["genome"]):
            raise bad("genome", f"must be comma-separated gene values, got {show(row['genome'])}")
        if row["status"] == "ok":
            for name in ("violation", *objectives):
                value = row.get(name)
                if value is None or not math.isfinite(value):
                    raise bad(name, f"must be a finite number on a successful evaluation, got {show(value)}")
            if row["violation"] < 0:
                raise bad("violation", f"must be >= 0, got {row['violation']}")


# --------------------------------------------------------------------------------------------------
# The Optuna mirror
# --------------------------------------------------------------------------------------------------


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


class OptunaMirror:
    """An Optuna study with one trial per evaluation, for optuna-dashboard and Optuna's own tools.

    Trials carry the genome as integer parameters (one per gene), the objectives as values in the
    run's order and directions, and the rest (genome id, fidelity, layout, status) as user attributes.
    An evaluation below the search's top rung is a PRUNED trial (Optuna's word for a configuration
    stopped at a lower budget) with its objectives as user attributes, so that Optuna's Pareto front,
    like `star pareto`'s, never weighs a lower-rung score against a top-rung one.
    """

    def __init__(self, storage: str, study_name: str, objectives: Sequence[str], directions: Sequence[str],
                 gene_names: Sequence[str], gene_sizes: Sequence[int], top_rung: int = 0) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.storage_url = storage
        self.objectives = list(objectives)
        self.top_rung = top_rung
        self.distributions = {name: optuna.distributions.IntDistribution(0, size - 1)
                              for name, size in zip(gene_names, gene_sizes, strict=True)}
        try:
            self.study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                                             directions=["maximize" if d == "max" else "minimize" for d in directions])
        except Exception as err:  # bad URL, unreachable database, incompatible schema ...
            raise StarError(f"cannot open the Optuna study {study_name!r} at {storage}: "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
        self.mirrored = len(self.study.get_trials(deepcopy=False))

    def sync(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add a trial for every row not yet mirrored (rows are in eval_index order)."""
        if self.mirrored >= len(rows):
            return
        trials = [self._trial(row) for row in rows[self.mirrored:]]
        try:
            self.study.add_trials(trials)
        except Exception as err:  # a read-only or locked database, a full disk ...
            raise StarError(f"cannot add trials to the Optuna study at {self.storage_url}: {type(err).__name__}: "
                            f"{one_line(str(err).splitlines()[0]) if str(err) else ''}") from None
        self.mirrored = len(rows)

    def _trial(self, row: dict[str, Any]) -> Any:
        genes = [int(g) for g in str(row["genome"]).split(",")]
        params = dict(zip(self.distributions, genes, strict=True))
        attrs = {key: row[key] for key in ("eval_index", "genome_id", "origin", "rung", "fidelity", "status",
                                           "reason", "feasible", "violations", "layer_types")}
        states = self._optuna.trial.TrialState
        values = None
        if row["status"] != "ok":
            state = states.FAIL
        elif int(row["rung"]) < self.top_rung:
            state = states.PRUNED
            attrs.update({name: float(row[name]) for name in self.objectives})
        else:
            state, values = states.COMPLETE, [float(row[name]) for name in self.objectives]
        return self._optuna.trial.create_trial(state=state, params=params, distributions=self.distributions,
                                               values=values, user_attrs=attrs)
