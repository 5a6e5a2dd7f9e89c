"""Corpus group: which clip shards exist, and the shards themselves."""

from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.common import file_version, md_table
from assets.partitions import NEW_SHARDS, clip_partitions, shard_backfill_policy
from resources.sources import ClipSource
from resources.storage import ArtifactStore


def register_new_partitions(instance, plan: dict) -> list[str]:
    """Add a `clip_shards` partition for every shard of the plan not registered yet."""
    existing = set(instance.get_dynamic_partitions(clip_partitions.name))
    new = [k for k in plan if k not in existing]
    if new:
        instance.add_dynamic_partitions(clip_partitions.name, new)
    return new


@asset(group_name="corpus", code_version="1")
def clip_shard_plan(context: AssetExecutionContext, clip_source: ClipSource) -> MaterializeResult:
    """Which shards the source holds; registers one `clip_shards` partition per shard, so a
    backfill of them all is one click in the UI."""
    plan = clip_source.plan()
    new = register_new_partitions(context.instance, plan)
    return MaterializeResult(
        metadata={
            "source": clip_source.source,
            "partitions": len(plan),
            "new_partitions": len(new),
            "plan": md_table(
                [
                    {"partition": k, **{f: v if f != "sources" else len(v) for f, v in e.items()}}
                    for k, e in plan.items()
                ]
            ),
        }
    )


def build_shard(partition: str, clip_source: ClipSource, store: ArtifactStore) -> dict:
    """Write clips/{partition}.tar, its rejects and its clip index; return counts for metadata."""
    from model_code.data import corpus, shards
    from model_code.data.ingest import account_for_inputs, clip_index, ingest, rejects_bytes
    from model_code.data.manifest import VideoSource

    plan = clip_source.plan()
    if partition not in plan:
        raise KeyError(f"partition {partition!r} is not in the source {clip_source.source!r}")
    entry = plan[partition]
    if entry["kind"] == "embedded":
        specs = corpus.split_specs(
            "corpus", clip_source.corpus_config(), entry["start"], entry["stop"]
        )
        clips, rejects, inputs = shards.embedded_clips(specs), [], len(specs)
    else:
        sources = [VideoSource(**s) for s in entry["sources"]]
        clips, rejects = ingest(sources, clip_source.ingest_config())
        inputs = len(sources)  # manifest rows: several may be segments of one video
    shard = store.shard(partition)
    shards.write_shard(shard, clips)
    index = clip_index(clips, partition)
    store.write_parquet(store.clip_index(partition), index)
    store.write_bytes(
        store.rejects(partition),
        rejects_bytes([{**r, "partition": partition} for r in rejects]),
    )
    used, unused = account_for_inputs(partition, inputs, clips, rejects)
    return {
        "partition": partition,
        "inputs": inputs,
        "clips": len(clips),
        "rejects": len(rejects),
        "inputs_used": used,
        "inputs_rejected": unused,
        "seconds": float((index["end"] - index["start"]).sum()) if len(index) else 0.0,
        "shard": str(shard),
        "version": file_version(shard),
        "samples": index.head(5)[["key", "alt_text", "start", "end"]].to_dict("records"),
        "reject_samples": rejects[:5],
    }


@asset(
    group_name="corpus",
    partitions_def=clip_partitions,
    deps=[clip_shard_plan],
    code_version="1",
    backfill_policy=shard_backfill_policy(),
    automation_condition=NEW_SHARDS,
)
def clip_shards(
    context: AssetExecutionContext, clip_source: ClipSource, store: ArtifactStore
) -> MaterializeResult:
    """One webdataset shard of clips (`{key}.mp4` + `{key}.json`) per partition; every input
    that cannot be used is recorded in rejects/{partition}.parquet with its reason."""
    reports = [build_shard(p, clip_source, store) for p in context.partition_keys]
    for r in reports:
        context.log.info(f"{r['partition']}: {r['clips']} clips, {r['rejects']} rejects")
    one = reports[0] if len(reports) == 1 else None
    return MaterializeResult(
        metadata={
            "partitions": len(reports),
            "clips": sum(r["clips"] for r in reports),
            "rejects": sum(r["rejects"] for r in reports),
            "inputs": sum(r["inputs"] for r in reports),
            "inputs_used": sum(r["inputs_used"] for r in reports),
            "inputs_rejected": sum(r["inputs_rejected"] for r in reports),
            "clip_seconds": sum(r["seconds"] for r in reports),
            "shard": MetadataValue.path(one["shard"])
            if one
            else ", ".join(r["shard"] for r in reports),
            "samples": md_table([s for r in reports for s in r["samples"]], 5),
            "reject_reasons": md_table([x for r in reports for x in r["reject_samples"]], 5),
        },
        data_version=DataVersion(one["version"]) if one else None,
    )
