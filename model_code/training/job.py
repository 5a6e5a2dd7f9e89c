"""What every training program here shares: its job file, rank 0's reports, its entry point.

A trainer (model_code.training.train_vlm, model_code.training.train_dual_encoder) reads one *job*: a
JSON object with its `config` (the fields of its dataclass in model_code.training.configs) and the
paths it reads and writes. The same program runs

    python -m model_code.training.train_dual_encoder --job job.json            # one process
    torchrun --nproc_per_node 4 -m model_code.training.train_dual_encoder --job job.json   # DDP
    (from the asset) TrainingLauncher: torchrun through Dagster Pipes, locally or in a pod

Only rank 0 reports: JSON lines on stdout always; Dagster Pipes (logs, the checkpoint's
materialization) when Dagster launched it; MLflow when $MLFLOW_RUN_ID names the run to log to.
A rank that raises writes its error where torchrun looks for it (`record`), so the launcher can
name the rank and its message.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from model_code.runtime import settings

CURVES = "training_curves.png"  # in every trainer's checkpoint folder


def rank() -> int:
    return int(settings.RANK.get())


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of a metrics dict as floats (bools, strings and the rest left out): what
    MLflow and Dagster metadata take as metrics."""
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def checkpoint_metadata(folder: str | Path, lineage: dict, extra: dict | None = None) -> dict:
    """A checkpoint's materialization metadata (plain values) from its lineage record."""
    metadata: dict[str, Any] = {
        "path": str(folder),
        "version": lineage["version"],
        "code_version": lineage["code_version"],
        "parents": lineage.get("parents", {}),
        "mlflow_run_id": lineage.get("mlflow_run_id", ""),
    }
    metadata.update(numeric_metrics(lineage.get("metrics", {})))
    metadata.update(extra or {})
    return metadata


class Reporter:
    """Rank 0's voice: stdout, Dagster Pipes and MLflow; silent on the other ranks."""

    def __init__(self):
        self.rank = rank()
        self.pipes = None
        self.mlflow = None
        self.mlflow_run_id = settings.MLFLOW_RUN_ID.get() if self.rank == 0 else ""
        self.history: list[dict] = []  # rank 0's metric reports, for the training curves
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        if self.rank == 0 and settings.PIPES_CONTEXT.is_set():
            # dagster-pipes: the dependency-free protocol library, not dagster itself
            pipes = importlib.import_module("dagster_pipes")
            self.pipes = self._stack.enter_context(pipes.open_dagster_pipes())
        if self.mlflow_run_id:
            from mlflow.tracking import MlflowClient

            self.mlflow = MlflowClient()  # $MLFLOW_TRACKING_URI
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def log(self, message: str) -> None:
        if self.rank != 0:
            return
        if self.pipes is not None:  # the step's log has it; its stdout need not
            self.pipes.log.info(message)
        else:
            print(message, flush=True)

    def metrics(self, step: int, metrics: dict) -> None:
        """Per-step metrics: a JSON line, a Pipes log line, an MLflow batch."""
        if self.rank != 0:
            return
        numbers = numeric_metrics(metrics)
        self.history.append({"step": step, **numbers})
        self.log(json.dumps({"step": step, **numbers}))
        if self.mlflow is not None and numbers:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.log_batch(
                self.mlflow_run_id, metrics=[Metric(k, v, now, step) for k, v in numbers.items()]
            )

    def plot_curves(self, folder: str | Path, title: str) -> None:
        """Rank 0: the run's loss and learning-rate curves as training_curves.png in `folder`
        (the checkpoint being written), so the picture travels with the weights."""
        if self.rank != 0 or not self.history:
            return
        from model_code.evaluation.plots import training_curves_png

        (Path(folder) / CURVES).write_bytes(training_curves_png(self.history, title))

    def checkpoint(self, folder: str | Path, lineage: dict, extra: dict | None = None) -> None:
        """The checkpoint is published: its metadata to Pipes (the asset's materialization),
        its training curves (if plotted) to MLflow and to the metadata as a path."""
        if self.rank != 0:
            return
        metadata = checkpoint_metadata(folder, lineage, extra)
        curves = Path(folder) / CURVES
        if curves.exists():
            metadata["training_curves"] = {"raw_value": str(curves), "type": "path"}
            if self.mlflow is not None:
                self.mlflow.log_artifact(self.mlflow_run_id, str(curves))
        print(json.dumps({"checkpoint": str(folder), "version": lineage["version"]}), flush=True)
        if self.pipes is not None:  # Pipes takes structured values as {raw_value, type}
            metadata = {
                k: {"raw_value": v, "type": "json"}
                if isinstance(v, dict) and "raw_value" not in v
                else v
                for k, v in metadata.items()
            }
            self.pipes.report_asset_materialization(
                metadata=metadata, data_version=lineage["version"]
            )


def publish(
    out: str | Path,
    *,
    model,
    save: Callable[[Path], None],
    report: Reporter,
    kind: str,
    parents: dict,
    config,
    data: dict,
    metrics: dict,
    extra: dict | None = None,
    title: str | None = None,
) -> dict:
    """Rank 0's publish, the same for every trainer: refused when the training produced
    garbage (no optimizer step, a non-finite weight); else `save` writes the model into a
    staging folder that gets lineage.json and the training curves and replaces `out` in one
    rename; the materialization goes to Pipes. Returns the lineage."""
    from model_code.models.lineage import write_lineage
    from model_code.runtime.files import atomic_dir
    from model_code.training.common import check_publishable

    check_publishable(model, metrics["steps"])
    with atomic_dir(out) as tmp:
        save(tmp)
        lineage = write_lineage(
            tmp,
            kind=kind,
            parents=parents,
            training_config=asdict(config),
            data=data,
            metrics=metrics,
            mlflow_run_id=report.mlflow_run_id,
        )
        report.plot_curves(tmp, title or kind)
    report.checkpoint(out, lineage, extra)
    return lineage


@dataclass(frozen=True)
class DualEncoderJob:
    """What a dual-encoder training is given, its job file's JSON object: built by the asset
    (assets/retrieval.py), the trainer's CLI and benchmarks/training_ranks.py, read by
    model_code.training.train_dual_encoder. A missing or unknown field is an error naming it."""

    pairs: str  # parquet: key, caption (one row a caption; a clip may have several)
    shards: list[str]  # webdataset tars holding the pairs' clips
    out: str  # the checkpoint folder, written atomically by rank 0
    config: dict = field(default_factory=dict)  # DualEncoderTrainConfig fields
    state: str | None = None  # training-state prefix (training.common.state_file adds the key)
    extra_texts: list[str] = field(default_factory=list)  # vocabulary: class prompts, queries
    parents: dict = field(default_factory=dict)  # for lineage.json
    data: dict = field(default_factory=dict)  # for lineage.json's data record

    @classmethod
    def from_json(cls, job: dict) -> DualEncoderJob:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(job) - set(names))
        if unknown:
            raise ValueError(f"a dual-encoder job has no field {', '.join(unknown)}: {names}")
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [n for n in required if job.get(n) in (None, "")]
        if missing:
            raise ValueError(f"a dual-encoder job needs {', '.join(missing)}")
        if not isinstance(job.get("config", {}), dict):
            raise TypeError("a dual-encoder job's config must be a JSON object")
        return cls(**{**job, "shards": [str(s) for s in job["shards"]]})

    def to_json(self) -> dict:
        return asdict(self)


def read_job(path: str | Path) -> dict:
    from model_code.models.lineage import read_json_object

    job = read_json_object(path)
    if not isinstance(job.get("config", {}), dict):
        raise TypeError(f"{path}: a job's 'config' must be a JSON object")
    return job


def run_job(train: Callable[[dict, Reporter], Any], job: dict) -> int:
    """Run `train(job, reporter)` on this rank; torchrun's `record` keeps a rank's error."""
    from torch.distributed.elastic.multiprocessing.errors import record

    @record
    def main() -> None:
        import torch.distributed as dist

        with Reporter() as reporter:
            train(job, reporter)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    main()
    return 0


def quiet_libraries() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
