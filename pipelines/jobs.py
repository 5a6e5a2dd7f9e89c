"""Jobs that carry what a cluster needs to place their runs: the GPUs each run's pod requests
from Kubernetes (dagster-k8s's K8sRunLauncher reads the `dagster-k8s/config` run tag). Launch
GPU work from these jobs (the sensor does), so every run of it asks for its GPUs.

GPU counts are read when the code location loads: $VIDISTILL_GPUS_PER_RUN for a caption run
(default 1), $VIDISTILL_TRAIN_GPUS for a training run (default 1)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from assets.partitions import clip_partitions, seed_partitions
from model_code.runtime import settings


def gpu_count(variable: settings.Setting) -> int:
    """GPUs a run asks for, from its variable (default 1)."""
    return variable.whole_number()


def gpu_request(gpus: int) -> dict[str, dict]:
    """Run tags that make the Kubernetes run launcher request `gpus` NVIDIA GPUs for the pod."""
    if gpus == 0:
        return {}
    limits = {"nvidia.com/gpu": str(gpus)}
    return {"dagster-k8s/config": {"container_config": {"resources": {"limits": limits}}}}


PER_SHARD_ASSETS = AssetSelection.assets("clip_shards", "frame_captions", "pseudo_captions")

shard_job = define_asset_job(
    "shard_and_caption",
    selection=PER_SHARD_ASSETS,
    partitions_def=clip_partitions,
    tags=gpu_request(gpu_count(settings.GPUS_PER_RUN)),
    description="One clip shard and its captions: one run (one pod) per partition.",
)

dual_encoder_job = define_asset_job(
    "train_dual_encoder",
    selection=AssetSelection.key_prefixes(["dual_encoder"], ["benchmark_scores"])
    & AssetSelection.groups("retrieval"),
    partitions_def=seed_partitions,
    tags=gpu_request(gpu_count(settings.TRAIN_GPUS)),
    description="The recipe's dual encoders (one per caption source) of one seed, trained and "
    "scored.",
)

adaptation_job = define_asset_job(
    "video_adaptation",
    selection=AssetSelection.groups("adaptation"),
    tags=gpu_request(gpu_count(settings.TRAIN_GPUS)),
    description="The image VLM, both adaptation stages and their evaluation (the "
    "adaptation-order ablation, which trains both stages twice more, is in the paper group).",
)

JOBS = [shard_job, dual_encoder_job, adaptation_job]
