"""MLflow tracking of a training run, local by default.

`./mlruns` (any plain folder) becomes a SQLite store `<folder>/mlflow.db` with artifacts in `<folder>/artifacts`:
MLflow 3 refuses its old file store, and a database in that folder keeps "everything under ./mlruns". View with
`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`. A URI with a scheme (http://, sqlite://, databricks)
is used as it is.

The run is opened here, before the Trainer, so transformers' MLflowCallback logs the training args and every
logged metric into it, and it stays open after training for the final test metrics, the recipe file and the data
fingerprint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def resolve_tracking_uri(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments or None)."""
    if "://" in uri or uri.startswith("databricks"):
        return uri, None
    folder = Path(uri).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")


def ui_command(uri: str) -> str:
    tracking_uri, _ = resolve_tracking_uri(uri)
    return f"mlflow ui --backend-store-uri {tracking_uri}"


class TrackedRun:
    """The open MLflow run (or a no-op when tracking is off or this is not the main process)."""

    def __init__(self, mlflow: Any | None, run: Any | None) -> None:
        self._mlflow = mlflow
        self.run = run

    @property
    def enabled(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.enabled:
            # MLflow keeps params as strings of at most a few hundred characters.
            self._mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.enabled:
            clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
            self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).is_file():
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)


@contextmanager
def mlflow_run(
    tracking_uri: str | None, experiment: str, *, run_name: str | None = None, is_main_process: bool = True
) -> Iterator[TrackedRun]:
    """Open an MLflow run for the block; a no-op TrackedRun when tracking_uri is empty or off the main process."""
    if not tracking_uri or not is_main_process:
        yield TrackedRun(None, None)
        return
    import mlflow

    uri, artifact_location = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # for transformers' MLflowCallback and child processes
    found = mlflow.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found
        else mlflow.create_experiment(experiment, artifact_location=artifact_location)
    )
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
    logger.info("MLflow run %s in %s (view: %s)", run.info.run_id, uri, ui_command(tracking_uri))
    status = "FAILED"
    try:
        yield TrackedRun(mlflow, run)
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)
