"""MLflow tracking for dealcast jobs: one run per job, its artifacts, and a gated model registry.

Every job (train, forecast, backtest, evaluate, detect) runs inside :func:`job_run`, which opens
exactly one MLflow run named after the job in the ``dealcast`` experiment, logs the job's
parameters once and hands back a :class:`JobRun` for metrics (with ``step``) and artifacts
(tables as CSV, figures as PNG, objects as JSON).

Where runs go: ``MLFLOW_TRACKING_URI`` if it is set (e.g. a team ``mlflow server``), otherwise a
SQLite database at ``<data_dir>/mlflow/mlflow.db`` with artifacts under
``<data_dir>/mlflow/artifacts``; no server is needed by default. The tracking URI is set only
for the duration of a call and restored afterwards (MLflow otherwise writes it into
``os.environ``, where it would leak into the next job).

A data directory can be moved or copied: MLflow records absolute artifact locations in its
database (experiments, runs, logged models, model versions), so before a local store is used
:func:`relocate_artifacts` rewrites the locations that still point at the directory's old
place to ``<data_dir>/mlflow/artifacts``. A copy therefore logs and reads its own artifacts and
never writes into the original.

Models are logged with MLflow's scikit-learn flavour (``skops`` serialisation, a signature
inferred from the input example and the model's output, pinned requirements) and registered.
:func:`promote` gives a version the alias ``champion`` only if its backtest score beats the
current champion's, otherwise ``challenger``; a version the caller vetoes (e.g. a close
probability no better than stage win rates on held-out data) is ``challenger`` whatever the
scores, sitting champion or not, with the reason in its ``dealcast.gate_veto`` tag;
:func:`load_champion` loads ``@champion``.

MLflow is made quiet on import of this module (unless the user set these variables):
``MLFLOW_DISABLE_TELEMETRY=true`` (no usage telemetry, no network calls for its config),
``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=true`` (no "View run" banners on stdout) and
``MLFLOW_LOGGING_LEVEL=WARNING``. Importing this module never contacts a server.
"""

from __future__ import annotations

import json as _json
import logging
import math
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "EXPERIMENT",
    "SCORE_TAG",
    "VETO_TAG",
    "JobRun",
    "NoChampionError",
    "artifact_root",
    "champion_tags",
    "champion_version",
    "job_run",
    "load_champion",
    "log_and_register",
    "promote",
    "relocate_artifacts",
    "tracking_uri",
]

_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}
_WE_SET_LOG_LEVEL = "MLFLOW_LOGGING_LEVEL" not in os.environ
for _key, _value in _QUIET_ENV.items():
    os.environ.setdefault(_key, _value)

import mlflow  # noqa: E402  (the variables above must be set before MLflow is imported)
import mlflow.sklearn  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.telemetry import get_telemetry_client, set_telemetry_client  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.entities.model_registry import ModelVersion

# If MLflow was imported before this module, the variables above came too late for it:
# drop its telemetry client now (it re-reads the variable) and lower its log level.
if get_telemetry_client() is not None:
    set_telemetry_client()
if _WE_SET_LOG_LEVEL:
    logging.getLogger("mlflow").setLevel(logging.WARNING)

EXPERIMENT = "dealcast"
"""The MLflow experiment every dealcast job logs to."""
CHAMPION = "champion"
"""Registry alias of the version the forecast job loads."""
CHALLENGER = "challenger"
"""Registry alias of the latest version that did not beat the champion."""
SCORE_TAG = "backtest_score"
"""Model-version tag holding the score :func:`promote` compares."""
VETO_TAG = "dealcast.gate_veto"
"""Model-version tag: why :func:`promote` kept a version from ``@champion`` (its ``veto``)."""
_HIGHER_TAG = "backtest_higher_is_better"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc")
_INPUT_EXAMPLE_ROWS = 5

_active_uri: str | None = None


class NoChampionError(LookupError):
    """No version of a registered model has the alias ``champion`` yet."""


def tracking_uri(data_dir: Path) -> str:
    """Return where MLflow runs go for a data directory.

    Parameters
    ----------
    data_dir : Path
        The dealcast data directory (the store's root).

    Returns
    -------
    str
        ``MLFLOW_TRACKING_URI`` when set and not empty, else
        ``sqlite:///<data_dir>/mlflow/mlflow.db`` (absolute path).

    Examples
    --------
    >>> tracking_uri(Path("/srv/dealcast-data"))  # doctest: +SKIP
    'sqlite:////srv/dealcast-data/mlflow/mlflow.db'
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    return f"sqlite:///{(Path(data_dir).resolve() / 'mlflow' / 'mlflow.db').as_posix()}"


def artifact_root(data_dir: Path) -> Path:
    """Return the directory holding the artifacts of a local (non-server) tracking store.

    Parameters
    ----------
    data_dir : Path
        The dealcast data directory.

    Returns
    -------
    Path
        ``<data_dir>/mlflow/artifacts`` (absolute). Unused when ``MLFLOW_TRACKING_URI`` points
        at a server: the server decides where artifacts live.
    """
    return Path(data_dir).resolve() / "mlflow" / "artifacts"


def _is_server(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in _SERVER_SCHEMES


_ARTIFACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)
"""The columns of MLflow's SQL schema that hold absolute artifact locations."""


def _local_db(data_dir: Path, uri: str) -> Path | None:
    """The SQLite file of ``data_dir``'s own local store, if ``uri`` is that store."""
    db = Path(data_dir).resolve() / "mlflow" / "mlflow.db"
    return db if uri == f"sqlite:///{db.as_posix()}" else None


def relocate_artifacts(data_dir: Path, uri: str | None = None) -> str | None:
    """Point a moved or copied data directory's MLflow artifact locations at the directory.

    MLflow's SQL store keeps the absolute ``file://`` location of the ``dealcast``
    experiment, and of every run, logged model and model version under it. When the data
    directory was copied (or moved) those still name the old place, and MLflow would write new
    runs' artifacts there and read old ones from there. This rewrites every location that
    starts with the experiment's old artifact root to the current
    ``<data_dir>/mlflow/artifacts``, in one SQLite transaction. MLflow has no API to change an
    experiment's artifact location, hence SQL; only those columns are touched.

    Parameters
    ----------
    data_dir : Path
        The dealcast data directory.
    uri : str, optional
        The tracking URI in use (default :func:`tracking_uri`). Nothing is done unless it is
        the data directory's own SQLite store and that database exists.

    Returns
    -------
    str or None
        The old artifact root (a ``file://`` URI) when locations were rewritten, else None.
    """
    db = _local_db(data_dir, tracking_uri(data_dir) if uri is None else uri)
    if db is None or not db.is_file():
        return None
    new_root = artifact_root(data_dir).as_uri()
    con = sqlite3.connect(db, timeout=60)
    try:
        with con:  # one transaction: commit on success, roll back on error
            tables = {
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "experiments" not in tables:
                return None
            row = con.execute(
                "SELECT artifact_location FROM experiments WHERE name = ?", (EXPERIMENT,)
            ).fetchone()
            old_root = row[0] if row else None
            if not old_root or old_root == new_root:
                return None
            if not old_root.startswith("file://") or not old_root.endswith("/mlflow/artifacts"):
                return None  # not a location dealcast chose: leave it as the user set it
            below = old_root + "/"
            for table, column in _ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                con.execute(  # exact prefix match (LIKE would ignore case)
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (new_root, len(old_root) + 1, old_root, len(below), below),
                )
    finally:
        con.close()
    return old_root


@contextmanager
def _using(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at ``uri`` for the block, then restore it exactly."""
    global _active_uri
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved_active = _active_uri
    mlflow.set_tracking_uri(uri)  # also writes os.environ["MLFLOW_TRACKING_URI"]
    _active_uri = uri
    try:
        yield
    finally:
        _active_uri = saved_active
        if saved_env is None:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None unsets it, as documented
        else:
            mlflow.set_tracking_uri(saved_env)


def _ensure_experiment(client: MlflowClient, data_dir: Path, uri: str) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = None if _is_server(uri) else artifact_root(data_dir).as_uri()
        try:
            return str(client.create_experiment(EXPERIMENT, artifact_location=location))
        except MlflowException:
            # Another process created it between our lookup and our create.
            experiment = client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def _prepare_local_store(data_dir: Path, uri: str) -> None:
    """Create the directories a local store writes to (SQLite cannot create its parent dir)."""
    if _is_server(uri):
        return
    artifact_root(data_dir).mkdir(parents=True, exist_ok=True)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def _resolve(data_dir: Path | None, caller: str) -> str:
    if data_dir is not None:
        uri = tracking_uri(data_dir)
        relocate_artifacts(data_dir, uri)
        return uri
    if _active_uri is not None:
        return _active_uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    raise ValueError(
        f"{caller}() does not know which MLflow store to use: call it inside job_run(...), "
        "pass data_dir=<the dealcast data directory>, or set MLFLOW_TRACKING_URI"
    )


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} is not allowed: use letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (e.g. 'dealcast-close-probability')"
        )


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{full}."))
        elif isinstance(value, date | datetime):
            flat[full] = value.isoformat()
        else:
            flat[full] = str(value)
    return flat


def _json_default(value: object) -> object:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pl.DataFrame):
        return value.to_dicts()
    raise TypeError(
        f"JobRun.json: a {type(value).__name__} is not JSON-serialisable; convert it to "
        "dicts/lists/numbers/strings (or log a table with JobRun.frame)"
    )


@dataclass(frozen=True)
class JobRun:
    """The MLflow run of one dealcast job; created by :func:`job_run`, not directly.

    Attributes
    ----------
    run_id : str
        The MLflow run id.
    experiment_id : str
        The id of the ``dealcast`` experiment.
    tracking_uri : str
        Where the run is stored.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str

    @property
    def _client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one metric value, at ``step`` (e.g. a backtest origin index or a horizon)."""
        self._client.log_metric(self.run_id, name, float(value), step=step or 0)

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Log several metric values at the same ``step`` in one call."""
        timestamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), timestamp, step or 0) for k, v in values.items()]
        if batch:
            self._client.log_batch(self.run_id, metrics=batch)

    def tag(self, name: str, value: object) -> None:
        """Set a run tag (e.g. the model version a forecast used)."""
        self._client.set_tag(self.run_id, name, str(value))

    def frame(self, name: str, table: pl.DataFrame | pd.DataFrame) -> str:
        """Log a table as the CSV artifact ``<name>.csv``; returns the artifact path.

        CSV rather than Parquet so the MLflow UI can preview it; the typed copy of every result
        lives in the dealcast store. Nested (list/struct) columns are refused by CSV: flatten
        them first.
        """
        _check_name(name, "artifact name")
        polars_table = table if isinstance(table, pl.DataFrame) else pl.from_pandas(table)
        nested = [c for c, t in polars_table.schema.items() if t.is_nested()]
        if nested:
            raise TypeError(
                f"JobRun.frame({name!r}): columns {nested} are nested (list/struct) and cannot "
                "be written as CSV; explode or unnest them first"
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.csv"
            polars_table.write_csv(path)
            self._client.log_artifact(self.run_id, str(path))
        return path.name

    def figure(self, name: str, figure: Figure) -> str:
        """Log a matplotlib figure as the PNG artifact ``<name>.png``; returns the artifact path.

        The figure is left open: close it (``plt.close(figure)``) if it came from pyplot.
        """
        _check_name(name, "artifact name")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.png"
            figure.savefig(path, format="png", dpi=110, bbox_inches="tight")
            self._client.log_artifact(self.run_id, str(path))
        return path.name

    def json(self, name: str, obj: object) -> str:
        """Log a JSON-serialisable object as ``<name>.json``; returns the artifact path.

        numpy scalars/arrays, dates and polars frames (as a list of row dicts) are converted.
        """
        _check_name(name, "artifact name")
        text = _json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.json"
            path.write_text(text + "\n", encoding="utf-8")
            self._client.log_artifact(self.run_id, str(path))
        return path.name


@contextmanager
def job_run(
    data_dir: Path,
    job: str,
    *,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
) -> Iterator[JobRun]:
    """Run one dealcast job as one MLflow run.

    Parameters
    ----------
    data_dir : Path
        The dealcast data directory; see :func:`tracking_uri` for where the run is stored.
    job : str
        The job's name (``train``, ``forecast``, ...): the run name and the tag ``dealcast.job``.
    params : Mapping[str, Any]
        Logged once as run parameters; nested mappings become dotted keys, values strings.
    tags : Mapping[str, str], optional
        Extra run tags.

    Yields
    ------
    JobRun
        Log metrics and artifacts through it. The run ends ``FINISHED`` when the block exits
        normally, ``KILLED`` on ``KeyboardInterrupt`` and ``FAILED`` on any other exception
        (which is re-raised).

    Examples
    --------
    >>> with job_run(data_dir, "backtest", params={"horizons": 3}) as run:  # doctest: +SKIP
    ...     run.metrics({"wape_h0": 0.12}, step=0)
    ...     run.frame("backtest", frame)
    """
    _check_name(job, "job name")
    uri = tracking_uri(data_dir)
    _prepare_local_store(data_dir, uri)
    relocate_artifacts(data_dir, uri)
    with _using(uri):
        active = mlflow.active_run()
        if active is not None:
            raise RuntimeError(
                f"MLflow run {active.info.run_id} is still active; job_run({job!r}) starts one "
                "run per job: finish the other job's run first"
            )
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _ensure_experiment(client, data_dir, uri)
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=job,
            tags={"dealcast.job": job, **dict(tags or {})},
        )
        handle = JobRun(run.info.run_id, experiment_id, uri)
        try:
            if params:
                mlflow.log_params(_flatten(params))
            yield handle
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")
            raise
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")


def _pinned(distribution: str) -> str:
    return f"{distribution}=={metadata.version(distribution)}"


def log_and_register(
    run: JobRun,
    model: Any,
    *,
    name: str,
    input_example: pd.DataFrame | pl.DataFrame,
    tags: Mapping[str, str] | None = None,
) -> int:
    """Log a fitted scikit-learn model in ``run`` and register it as a new version of ``name``.

    Parameters
    ----------
    run : JobRun
        The active job run (from :func:`job_run`).
    model : sklearn estimator
        Fitted. Its ``predict_proba`` (else ``predict``) output on the input example defines the
        signature's output, and is what the pyfunc flavour serves.
    name : str
        Registered model name, e.g. ``dealcast-close-probability``.
    input_example : pandas or polars DataFrame
        Rows the model accepts (the first 5 are stored); converted to pandas for MLflow.
    tags : Mapping[str, str], optional
        Extra version tags (e.g. ``dealcast.cutoff``, what data the model saw).

    Returns
    -------
    int
        The new model version. It has no alias until :func:`promote` gives it one.

    Notes
    -----
    Serialised with ``skops``; the types it must trust to load the model (e.g. dealcast's own
    estimator classes) are the ones found in this model and are recorded with it, so loading
    needs the same ``dealcast`` code installed. Requirements are pinned from the installed
    versions instead of being inferred (inference loads the model in a subprocess: slow).
    """
    _check_name(name, "registered model name")
    if _active_uri != run.tracking_uri or mlflow.active_run() is None:
        raise RuntimeError(
            f"log_and_register({name!r}) must be called inside the job_run block of run "
            f"{run.run_id}"
        )
    import skops.io

    rows = input_example.head(_INPUT_EXAMPLE_ROWS)
    example = rows.to_pandas() if isinstance(rows, pl.DataFrame) else rows
    method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
    output = getattr(model, method)(rows)
    signature = infer_signature(example, output)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    info = mlflow.sklearn.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted,
        pyfunc_predict_fn=method,
        pip_requirements=[
            _pinned(d) for d in ("scikit-learn", "skops", "numpy", "pandas", "polars")
        ],
        run_id=run.run_id,
    )
    client = MlflowClient(tracking_uri=run.tracking_uri)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        try:
            client.create_registered_model(name)
        except MlflowException:
            if not client.search_registered_models(filter_string=f"name = '{name}'"):
                raise
    version = client.create_model_version(
        name=name,
        source=info.model_uri,
        run_id=run.run_id,
        model_id=info.model_id,
        tags={"dealcast.job_run": run.run_id, **dict(tags or {})},
    )
    return int(version.version)


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        return None
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    if version is None:
        return None
    return client.get_model_version(name, str(version))


def promote(
    name: str,
    version: int | str,
    *,
    score: float,
    higher_is_better: bool,
    data_dir: Path | None = None,
    veto: str | None = None,
) -> str:
    """Give a model version the alias ``champion`` if it beats the current one, else ``challenger``.

    Parameters
    ----------
    name : str
        Registered model name.
    version : int or str
        The version to judge (from :func:`log_and_register`).
    score : float
        Its backtest score; stored as the version tag ``backtest_score``.
    higher_is_better : bool
        Whether a higher score is better (accuracy) or worse (WAPE). Must agree with the
        champion's; scores of different directions are not comparable.
    data_dir : Path, optional
        Needed only outside :func:`job_run` when ``MLFLOW_TRACKING_URI`` is not set.
    veto : str, optional
        Why this version must not be champion whatever its score (e.g. "close probability
        Brier 0.254 not below stage win rates 0.228 on the held-out period"). A vetoed version
        is ``"challenger"`` even when there is no champion; the reason is stored as the version
        tag ``dealcast.gate_veto``.

    Returns
    -------
    str
        ``"challenger"`` when vetoed; else ``"champion"`` when there is no champion yet, the
        champion has no recorded score, or ``score`` is strictly better than the champion's;
        ``"challenger"`` otherwise (ties keep the sitting champion). The alias moves: the
        previous champion loses it.
    """
    _check_name(name, "registered model name")
    if not math.isfinite(score):
        raise ValueError(f"promote({name!r}, {version}): score must be finite, got {score}")
    uri = _resolve(data_dir, "promote")
    with _using(uri):
        client = MlflowClient(tracking_uri=uri)
        candidate = str(version)
        client.get_model_version(name, candidate)  # fails clearly if it does not exist
        sitting = _champion(client, name)
        alias = CHAMPION
        if veto:
            alias = CHALLENGER
            client.set_model_version_tag(name, candidate, VETO_TAG, veto)
            if sitting is not None and sitting.version == candidate:
                client.delete_registered_model_alias(name, CHAMPION)
        elif sitting is not None and sitting.version != candidate:
            sitting_score = sitting.tags.get(SCORE_TAG)
            sitting_higher = sitting.tags.get(_HIGHER_TAG)
            if sitting_higher is not None and sitting_higher != str(higher_is_better):
                raise ValueError(
                    f"promote({name!r}, {candidate}): champion version {sitting.version} was "
                    f"scored with higher_is_better={sitting_higher}, this one with "
                    f"{higher_is_better}; score both the same way"
                )
            if sitting_score is not None:
                best = float(sitting_score)
                beats = score > best if higher_is_better else score < best
                alias = CHAMPION if beats else CHALLENGER
        client.set_model_version_tag(name, candidate, SCORE_TAG, repr(float(score)))
        client.set_model_version_tag(name, candidate, _HIGHER_TAG, str(higher_is_better))
        client.set_registered_model_alias(name, alias, candidate)
        if alias == CHAMPION:
            aliases = client.get_registered_model(name).aliases
            if aliases.get(CHALLENGER) is not None and str(aliases[CHALLENGER]) == candidate:
                client.delete_registered_model_alias(name, CHALLENGER)
        return alias


def champion_version(name: str, *, data_dir: Path | None = None) -> int | None:
    """Return the version of ``name`` that has the alias ``champion``, or None.

    ``data_dir`` is needed only outside :func:`job_run` when ``MLFLOW_TRACKING_URI`` is unset.
    """
    _check_name(name, "registered model name")
    uri = _resolve(data_dir, "champion_version")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # nothing was ever tracked here: do not create an empty database
    with _using(uri):
        sitting = _champion(MlflowClient(tracking_uri=uri), name)
    return None if sitting is None else int(sitting.version)


def champion_tags(name: str, *, data_dir: Path | None = None) -> dict[str, str]:
    """The version tags of ``name@champion`` (empty when there is no champion)."""
    _check_name(name, "registered model name")
    uri = _resolve(data_dir, "champion_tags")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return {}
    with _using(uri):
        sitting = _champion(MlflowClient(tracking_uri=uri), name)
    return {} if sitting is None else dict(sitting.tags)


def load_champion(name: str, *, data_dir: Path | None = None) -> Any:
    """Load the scikit-learn model registered as ``models:/<name>@champion``.

    Parameters
    ----------
    name : str
        Registered model name, e.g. ``dealcast-close-probability``.
    data_dir : Path, optional
        Needed only outside :func:`job_run` when ``MLFLOW_TRACKING_URI`` is unset.

    Returns
    -------
    sklearn estimator
        The champion version, as it was fitted.

    Raises
    ------
    NoChampionError
        No version has the alias yet: run ``dealcast train`` first.
    """
    version = champion_version(name, data_dir=data_dir)
    uri = _resolve(data_dir, "load_champion")
    if version is None:
        raise NoChampionError(
            f"no version of model {name!r} is '@{CHAMPION}' in the MLflow store {uri}: run "
            "`dealcast train` first (or check MLFLOW_TRACKING_URI)"
        )
    # MLflow refuses to deserialise any model (skops included) unless this is set; these are
    # models dealcast itself logged to the user's own store, so they are trusted.
    saved = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    try:
        with _using(uri):
            return mlflow.sklearn.load_model(f"models:/{name}/{version}")
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = saved
