"""Which materialized partitions are stale, read from Dagster's own records: a partition is
stale when a data version it recorded for an input (the `dagster/input_data_version/<input>`
tag of its latest materialization) is no longer that input's, or when its code version is no
longer the asset's. A new `video_vlm` thus makes every caption partition it wrote stale, and
the `stale_captions` sensor (off until a user switches it on) re-captions exactly those."""

from __future__ import annotations

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from assets.partitions import CAPTION_SOURCES

CAPTION_ASSETS = [s for s in CAPTION_SOURCES if s not in ("alt_text", "ground_truth")]


def _latest(instance, key: AssetKey, partition: str | None):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0].asset_materialization if records else None


def _input_version(instance, asset_graph, key, partition, parent) -> str | None:
    """The data version of `parent` as `key`[partition] would record it now, the way Dagster
    records it (dagster/_core/execution/context/data_version_cache.py): the parent's own for an
    unpartitioned parent; for a partitioned one, the sha256 of the versions of the partitions
    this partition reads (the same shard, one seed, all the shards) in partition-key order."""
    from hashlib import sha256

    from dagster import AllPartitionMapping, IdentityPartitionMapping
    from dagster import SpecificPartitionsPartitionMapping as Specific

    parent_def = asset_graph.get(parent).partitions_def
    if parent_def is None:
        latest = _latest(instance, parent, None)
        return latest.tags.get("dagster/data_version") if latest else None
    mapping = asset_graph.get_partition_mapping(key, parent)
    if isinstance(mapping, IdentityPartitionMapping) and partition is not None:
        keys = [partition]
    elif isinstance(mapping, Specific):
        keys = list(mapping.partition_keys)
    elif isinstance(mapping, AllPartitionMapping):
        keys = list(parent_def.get_partition_keys(dynamic_partitions_store=instance))
    else:  # a mapping this project does not use: no claim either way
        return None
    if len(keys) >= 100:  # Dagster records the parent's latest version then: no claim
        return None
    versions = []
    for k in sorted(keys):
        latest = _latest(instance, parent, k)
        if latest is not None and "dagster/data_version" in latest.tags:
            versions.append(latest.tags["dagster/data_version"])
    if not versions:
        return "INITIAL"  # what Dagster records for an input never materialized
    return sha256("".join(versions).encode()).hexdigest()


def stale_causes(instance, asset_graph, key: AssetKey) -> dict[str | None, list[str]]:
    """{partition (None if unpartitioned): why it is stale} for each materialized partition of
    `key` whose inputs or code changed since it was materialized."""
    node = asset_graph.get(key)
    partitions = (
        sorted(instance.get_materialized_partitions(key)) if node.partitions_def else [None]
    )
    out: dict[str | None, list[str]] = {}
    for partition in partitions:
        mine = _latest(instance, key, partition)
        if mine is None:
            continue
        causes = []
        if node.code_version and mine.tags.get("dagster/code_version") != node.code_version:
            was = mine.tags.get("dagster/code_version")
            causes.append(f"code version {was} -> {node.code_version}")
        for parent in node.parent_keys:
            recorded = mine.tags.get(f"dagster/input_data_version/{parent.to_user_string()}")
            current = _input_version(instance, asset_graph, key, partition, parent)
            if recorded and current and recorded != current:
                causes.append(f"{parent.to_user_string()} {recorded[:12]} -> {current[:12]}")
        if causes:
            out[partition] = causes
    return out


@sensor(
    asset_selection=AssetSelection.assets(*CAPTION_ASSETS),
    minimum_interval_seconds=120,
    default_status=DefaultSensorStatus.STOPPED,
)
def stale_captions(context: SensorEvaluationContext):
    """Re-caption exactly the caption partitions a new captioner (or a re-cut shard) made
    stale, one run per partition. Off by default: switch it on in the UI (Automation) after a
    new video_vlm, or list what it would do with `vidistill stale`."""
    graph = context.repository_def.asset_graph
    requests = []
    for name in CAPTION_ASSETS:
        key = AssetKey(name)
        for partition in stale_causes(context.instance, graph, key):
            # one request per stale version of a partition: a failed refresh is not retried
            # every tick, a partition that goes stale again is
            version = _latest(context.instance, key, partition).tags.get("dagster/data_version")
            requests.append(
                RunRequest(
                    run_key=f"{name}[{partition}]@{version}",
                    asset_selection=[key],
                    partition_key=partition,
                )
            )
    return requests or SkipReason("no stale caption partitions")
