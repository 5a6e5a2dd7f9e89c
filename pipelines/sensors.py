"""Sensors: pick up new shards as they appear in the source."""

from dagster import AssetSelection, RunRequest, SensorEvaluationContext, SensorResult, sensor

from assets.partitions import clip_partitions
from resources.sources import ClipSource

PER_SHARD_ASSETS = AssetSelection.assets("clip_shards", "frame_captions", "pseudo_captions")


@sensor(asset_selection=PER_SHARD_ASSETS, minimum_interval_seconds=60)
def new_clip_shards(context: SensorEvaluationContext, clip_source: ClipSource) -> SensorResult:
    """Register a partition for every new shard of the source and request its runs (the clip
    shard, then its captions). Existing partitions are never touched."""
    plan = clip_source.plan()
    existing = set(context.instance.get_dynamic_partitions(clip_partitions.name))
    new = [k for k in plan if k not in existing]
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=f"shard-{k}") for k in new],
        dynamic_partitions_requests=[clip_partitions.build_add_request(new)] if new else [],
    )
