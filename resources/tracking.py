"""MLflow tracking: a small resource around MlflowClient (local sqlite store by default)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from model_code.training.job import numeric_metrics
from resources.fields import NonEmpty, TrackingUri


class MlflowTracking(ConfigurableResource):
    """Every training run logs params, per-step metrics and its checkpoint reference here.

    `tracking_uri` empty means a local store under the data root; set it to any tracking
    server (`http://...`) to share runs."""

    tracking_uri: TrackingUri = Field(
        default="",
        description="empty: sqlite under the data "
        "root; else any MLflow URI (http://, postgresql://, ...)",
    )
    experiment: NonEmpty = "vidistill"
    root: NonEmpty = "data"

    def uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        path = Path(self.root).resolve() / "mlflow.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def env(self, run_id: str) -> dict[str, str]:
        """What a child process needs to log to this run (MLflow reads both variables)."""
        return {"MLFLOW_TRACKING_URI": self.uri(), "MLFLOW_RUN_ID": run_id}

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri())

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        artifacts = Path(self.root).resolve() / "mlruns"
        return client.create_experiment(self.experiment, artifact_location=artifacts.as_uri())

    @staticmethod
    def _end_abandoned(client, experiment: str, name: str) -> None:
        """Runs of this name still RUNNING belong to attempts that were killed (a step that
        ends in any other way ends its run): mark them KILLED, never leave them RUNNING."""
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        for stale in client.search_runs(
            [experiment], f"attributes.run_name = '{quoted}' and attributes.status = 'RUNNING'"
        ):
            client.set_terminated(stale.info.run_id, "KILLED")

    @contextlib.contextmanager
    def run(
        self, name: str, params: dict | None = None, tags: dict | None = None
    ) -> Iterator[TrackedRun]:
        """A run that ends FINISHED on success and FAILED on error."""
        client = self.client()
        experiment = self._experiment_id(client)
        self._end_abandoned(client, experiment, name)
        run = client.create_run(experiment, run_name=name, tags=tags or {})
        tracked = TrackedRun(client, run.info.run_id)
        if params:
            tracked.log_params(params)
        try:
            yield tracked
        except BaseException:
            client.set_terminated(run.info.run_id, "FAILED")
            raise
        client.set_terminated(run.info.run_id, "FINISHED")


class TrackedRun:
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[i : i + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """A file (a plot, a table) into the run's artifacts, under `folder` if given."""
        self.client.log_artifact(self.run_id, str(path), folder)
