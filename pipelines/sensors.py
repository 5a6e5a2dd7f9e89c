"""Sensors, both on from the first start of an instance: one registers the shards that appear
in the source, the other runs what the automation conditions ask for (assets.partitions.
NEW_SHARDS: a new shard is cut, then captioned, once its captioner exists)."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.partitions import clip_partitions
from resources.sources import ClipSource


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def new_clip_shards(context: SensorEvaluationContext, clip_source: ClipSource):
    """Register a `clip_shards` partition for every new shard of the source; the automation
    sensor then materializes it and its captions. Existing partitions are never touched."""
    plan = clip_source.plan()
    existing = set(context.instance.get_dynamic_partitions(clip_partitions.name))
    new = [k for k in plan if k not in existing]
    if not new:
        return SkipReason(f"no new shards in {clip_source.source} ({len(plan)} registered)")
    return SensorResult(dynamic_partitions_requests=[clip_partitions.build_add_request(new)])


shard_automation = AutomationConditionSensorDefinition(
    "shard_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes what an automation condition asks for: the clip shards and "
    "captions of shards registered after the instance started (assets.partitions.NEW_SHARDS).",
)
