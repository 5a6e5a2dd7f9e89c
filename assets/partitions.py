"""Partitions shared by every per-shard and per-source asset."""

from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

clip_partitions = DynamicPartitionsDefinition(name="clip_shards")
"""One partition per webdataset clip shard; registered as shards appear in the source."""

CAPTION_SOURCES = ("alt_text", "frame_captions", "pseudo_captions", "ground_truth")
caption_source_partitions = StaticPartitionsDefinition(list(CAPTION_SOURCES))
"""Which captions a dual encoder is trained on; ground_truth is the ceiling."""
