"""Sensors: pick up new shards as they appear in the source."""

from dagster import RunRequest, SensorEvaluationContext, SensorResult, sensor

from assets.partitions import clip_partitions
from pipelines.jobs import shard_job
from resources.sources import ClipSource


@sensor(job=shard_job, minimum_interval_seconds=60)
def new_clip_shards(context: SensorEvaluationContext, clip_source: ClipSource) -> SensorResult:
    """Register a partition for every new shard of the source and request its run (the clip
    shard, then its captions, in a run that asks for its GPUs). Existing partitions are never
    touched."""
    plan = clip_source.plan()
    existing = set(context.instance.get_dynamic_partitions(clip_partitions.name))
    new = [k for k in plan if k not in existing]
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=f"shard-{k}") for k in new],
        dynamic_partitions_requests=[clip_partitions.build_add_request(new)] if new else [],
    )
