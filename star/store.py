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

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from star.errors import StarError

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
)
# Columns that record when and where, not what: two runs of the same search differ only in these.
TIMING_COLUMNS = ("wall_s", "worker", "finished_at", "train_tokens_per_s")


def columns_for(score_columns: Sequence[str]) -> list[tuple[str, str]]:
    return [*BASE_COLUMNS, *((m, "float64") for m in METRIC_COLUMNS), *((c, "float64") for c in score_columns),
            *TRAILING_COLUMNS]


def _schema(columns: Sequence[tuple[str, str]]) -> Any:
    import pyarrow as pa

    types = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in columns])


def _write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, flush it to disk, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunStore:
    """One run folder.  Create it with `create`, reopen it (to resume or to read) with `open`."""

    def __init__(self, path: Path, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self.path, self.manifest, self.rows = path, manifest, rows
        self.columns = columns_for(manifest["score_columns"])
        for row in rows:  # a run written before a column existed reads it as null
            for name, _ in self.columns:
                row.setdefault(name, None)

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
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise StarError(f"--out {folder} is not writable: {err.strerror or err}") from None
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        store = cls(folder, manifest, [])
        store.write_manifest()
        return store

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        folder = Path(path)
        if not folder.is_dir():
            raise StarError(f"run folder {folder} does not exist")
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise StarError(f"{folder} is not a star run folder (no {MANIFEST})")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise StarError(f"{manifest_path} is not readable JSON: {err}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StarError(f"{manifest_path} is not a star run manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StarError(f"{manifest_path} has run format {manifest.get('format_version')}; "
                            f"this star reads format {FORMAT_VERSION}")
        return cls(folder, manifest, _read_rows(folder / EVALUATIONS))

    # ---- writing ---------------------------------------------------------------------------------

    def write_manifest(self) -> None:
        _write_atomic(self.path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(self.manifest, indent=2) + "\n"))

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add finished evaluations and persist them before returning."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = {name for name, _ in self.columns}
        for row in rows:
            unknown = set(row) - names
            if unknown:
                raise ValueError(f"row has columns the run does not: {sorted(unknown)}")
        self.rows.extend(rows)
        table = pa.Table.from_pylist([{name: row.get(name) for name, _ in self.columns} for row in self.rows],
                                     schema=_schema(self.columns))
        _write_atomic(self.path / EVALUATIONS, lambda tmp: pq.write_table(table, tmp))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
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
    if [r["eval_index"] for r in rows] != list(range(len(rows))):
        raise StarError(f"{path}: eval_index is not 0..{len(rows) - 1} in order; the file was edited or damaged")
    return rows


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
        self.study.add_trials(trials)
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
