"""Every environment variable vidistill reads, with its meaning, read here and only here, when a
caller asks (never when a module is imported). `docs/configuration.md` lists them (generated
from SETTINGS by pipelines.config_reference), and a test fails when any other module reads the
environment.

The VIDISTILL_* variables are the deployment's choices; the others are set for vidistill's
processes by torchrun, MLflow's launcher (the `launcher` resource) or Dagster Pipes, and say
which rank or run a process is. Variables that shape the Definitions (partitions a run, GPUs a
run) take effect when the code location loads, since Dagster fixes those then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, what it means, its value when unset."""

    name: str
    meaning: str
    default: str = ""
    set_by: str = "you"  # who sets it: the deployment ("you"), torchrun, the launcher, Pipes

    def get(self) -> str:
        """The value, or the default when unset or empty."""
        return os.environ.get(self.name) or self.default

    def is_set(self) -> bool:
        return bool(os.environ.get(self.name))

    def whole_number(self) -> int | None:
        """The value as a whole number (0 or more), None when unset and without a default;
        anything else is an error naming the variable."""
        value = self.get()
        if value == "":
            return None
        if not value.isdigit():
            raise ValueError(f"${self.name} must be a whole number (0 or more), not {value!r}")
        return int(value)


DATA_ROOT = Setting(
    "VIDISTILL_DATA_ROOT",
    "the artifact root: every file the pipeline writes (default: `data/` in the project)",
)
SOURCE = Setting(
    "VIDISTILL_SOURCE",
    "the clips: `embedded` (the synthetic corpus), a folder of videos or a CSV / JSONL / "
    "Parquet manifest",
    "embedded",
)
SPLIT = Setting(
    "VIDISTILL_SPLIT", "how videos are cut into clips: `fixed` windows or inside `shots`", "fixed"
)
CORPUS_CLIPS = Setting(
    "VIDISTILL_CORPUS_CLIPS",
    "clips of the embedded corpus (default: the `clip_source` resource's `corpus_clips`)",
)
CLIPS_PER_SHARD = Setting(
    "VIDISTILL_CLIPS_PER_SHARD",
    "clips a shard, so a partition (default: the `clip_source` resource's `clips_per_shard`)",
)
CONFIG_DEFAULTS = Setting(
    "VIDISTILL_CONFIG_DEFAULTS",
    "a JSON file of `{config class: {field: default}}` replacing the launchpad's defaults for "
    "every launch without run config (read when the code location loads)",
)
PARTITIONS_PER_RUN = Setting(
    "VIDISTILL_PARTITIONS_PER_RUN",
    "shard partitions a backfill puts in one run; 0: the whole range in one run (read when the "
    "code location loads)",
    "1",
)
GPUS_PER_RUN = Setting(
    "VIDISTILL_GPUS_PER_RUN",
    "GPUs the pod of a caption run requests on Kubernetes (read when the code location loads)",
    "1",
)
TRAIN_GPUS = Setting(
    "VIDISTILL_TRAIN_GPUS",
    "GPUs the pod of a training run requests on Kubernetes (read when the code location loads)",
    "1",
)
TRACKING_URI = Setting(
    "VIDISTILL_TRACKING_URI",
    "MLflow tracking URI (default: a SQLite store under the data root)",
)
TRAINING_BACKEND = Setting(
    "VIDISTILL_TRAINING_BACKEND",
    "where trainings run: `subprocess` (torchrun on this machine) or `k8s` (a pod each)",
    "subprocess",
)
IMAGE = Setting("VIDISTILL_IMAGE", "the container image of a training pod (backend `k8s`)")
NAMESPACE = Setting(
    "VIDISTILL_NAMESPACE", "the Kubernetes namespace of training pods (backend `k8s`)", "dagster"
)
DATA_CLAIM = Setting(
    "VIDISTILL_DATA_CLAIM",
    "the PersistentVolumeClaim mounted at the data root in training pods (backend `k8s`)",
)
TEACHER = Setting(
    "VIDISTILL_TEACHER",
    "a local Qwen2-VL / Qwen2.5-VL folder: `teacher_captions`' default `teacher_path`, and what "
    "`--paper` adds the teacher group for",
)
FFMPEG = Setting(
    "VIDISTILL_FFMPEG",
    "the ffmpeg binary that encodes clips (default: PATH, then imageio-ffmpeg's bundled one)",
)
DAGSTER_HOME = Setting(
    "DAGSTER_HOME",
    "the Dagster instance's folder (`vidistill` and `.ci/` default it to `.dagster_home/`)",
)
OMP_NUM_THREADS = Setting(
    "OMP_NUM_THREADS",
    "torch threads of a step; its trainings' ranks share them (the demo sets it per run)",
)
RANK = Setting("RANK", "this process's rank among a training's processes", "0", "torchrun")
LOCAL_RANK = Setting("LOCAL_RANK", "this process's rank on its machine (its GPU)", "0", "torchrun")
WORLD_SIZE = Setting("WORLD_SIZE", "how many processes train together", "1", "torchrun")
MLFLOW_RUN_ID = Setting(
    "MLFLOW_RUN_ID", "the MLflow run rank 0 reports a training's steps to", "", "the launcher"
)
PIPES_CONTEXT = Setting(
    "DAGSTER_PIPES_CONTEXT",
    "how a trainer's rank 0 reports back to its Dagster step",
    "",
    "Dagster Pipes",
)

SETTINGS: tuple[Setting, ...] = tuple(v for v in globals().values() if isinstance(v, Setting))
