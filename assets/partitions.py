"""Partitions shared by every per-shard and per-source asset."""

import os

from dagster import BackfillPolicy, DynamicPartitionsDefinition, StaticPartitionsDefinition

clip_partitions = DynamicPartitionsDefinition(name="clip_shards")
"""One partition per webdataset clip shard; registered as shards appear in the source."""

CAPTION_SOURCES = (
    "alt_text",
    "frame_captions",
    "stage1_captions",
    "stage1_sampled",
    "pseudo_captions",
    "pseudo_sampled",
    "teacher_captions",
    "ground_truth",
)
caption_source_partitions = StaticPartitionsDefinition(list(CAPTION_SOURCES))
"""Which captions a dual encoder is trained on, in the order of the paper's ladder: alt-text,
per-frame captions, + visual adaptation (stage 1), + several sampled captions, + language
adaptation (stage 2), both; then an off-the-shelf teacher, and ground_truth as the ceiling."""


def shard_backfill_policy() -> BackfillPolicy:
    """How a backfill of per-shard assets is cut into runs: $VIDISTILL_PARTITIONS_PER_RUN
    partitions a run (default 1), or 0 for one run over the whole range (what the CLI's
    `--partition-range` needs). One a run: per-partition metadata, data versions and retries,
    and runs spread over many machines. Many a run: process start-up and model loading are
    paid once, but a failure reruns the range and metadata is summed over it."""
    n = int(os.environ.get("VIDISTILL_PARTITIONS_PER_RUN", "1"))
    return BackfillPolicy.single_run() if n == 0 else BackfillPolicy.multi_run(n)
