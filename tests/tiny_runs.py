"""Tiny settings for tests: the run config for materializing the asset graph (a few training
steps, a dozen clips) and the smallest dual encoder worth training."""

# build_dual_encoder's sizes for a model that trains in well under a second a step on one thread
TINY_DUAL_ENCODER = {
    "image_size": 16,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
    "temporal_layers": 1,
    "temporal_heads": 2,
    "projection_dim": 16,
}

# TinyVLMConfig's sizes for a VLM that captions a handful of clips in well under a second
TINY_VLM = {
    "vision_hidden": 32,
    "vision_layers": 1,
    "text_hidden": 16,
    "text_layers": 1,
    "vision_heads": 2,
    "text_heads": 2,
    "num_frames": 4,
}

FEW = {"steps": 3, "batch_size": 4}


def dual_encoder_op(source: str) -> str:
    """The op (run-config) name of the asset dual_encoder/<source>."""
    return f"dual_encoder__{source}"


RUN_CONFIG = {
    "ops": {
        "image_vlm": {"config": {**FEW, "image_examples": 24}},
        "video_caption_data": {"config": {"clips": 12}},
        "adapted_encoder": {"config": FEW},
        "instruction_tuned_lm": {"config": FEW},
        "retrieval_benchmark": {"config": {"clips": 10}},
        **{
            dual_encoder_op(source): {"config": {"steps": 2, "batch_size": 8}}
            for source in ("alt_text", "frame_captions", "pseudo_captions", "ground_truth")
        },
    }
}
# checkpoints this briefly trained write poor captions: the quality thresholds are off here
CAPTIONING = {
    "config": {
        "batch_size": 8,
        "max_new_tokens": 6,
        "decode_workers": 0,
        "max_empty_rate": 1.0,
        "max_degenerate_rate": 1.0,
        "max_duplicate_rate": 1.0,
        "min_vocab_size": 0,
    }
}


def materialize_two_shards(
    instance, resources: dict, clips: int = 16, per_shard: int = 8, benchmark_clips: int = 10
) -> None:
    """The corpus a dual encoder reads, on a tiny scale: `clips` embedded clips in shards of
    `per_shard` (plan, shards, catalog) and the benchmark of `benchmark_clips` clips."""
    from dagster import materialize

    from pipelines.definitions import defs
    from resources.sources import ClipSource

    assets = list(defs.assets)
    resources["clip_source"] = ClipSource(corpus_clips=clips, clips_per_shard=per_shard)
    assert materialize(
        assets, selection=["clip_shard_plan"], instance=instance, resources=resources
    ).success
    for p in instance.get_dynamic_partitions("clip_shards"):
        assert materialize(
            assets,
            selection=["clip_shards"],
            partition_key=p,
            instance=instance,
            resources=resources,
        ).success
    config = {"ops": {"retrieval_benchmark": {"config": {"clips": benchmark_clips}}}}
    assert materialize(
        assets,
        selection=["retrieval_benchmark"],
        instance=instance,
        resources=resources,
        run_config=config,
    ).success


def caption_partition(
    instance, resources: dict, asset: str, config: dict, partition: str = "p0", **kwargs
):
    """Materialize one clip-shard partition of a caption asset with `config` (the partition is
    registered first); the ExecuteInProcessResult."""
    from dagster import materialize

    from pipelines.definitions import defs

    if partition not in instance.get_dynamic_partitions("clip_shards"):
        instance.add_dynamic_partitions("clip_shards", [partition])
    return materialize(
        list(defs.assets),
        selection=[asset],
        partition_key=partition,
        instance=instance,
        resources=resources,
        run_config={"ops": {asset: {"config": config}}},
        **kwargs,
    )


def tiny_config_defaults() -> dict:
    """The tiny run config as $VIDISTILL_CONFIG_DEFAULTS gives it (config class -> defaults):
    what a launch without run config takes, the UI's "Materialize all" and the demo included."""
    ops = RUN_CONFIG["ops"]
    return {
        "ImageVLMConfig": ops["image_vlm"]["config"],
        "VideoCaptionDataConfig": ops["video_caption_data"]["config"],
        "VisualAdaptationConfig": ops["adapted_encoder"]["config"],
        "LanguageAdaptationConfig": ops["instruction_tuned_lm"]["config"],
        "RetrievalBenchmarkConfig": ops["retrieval_benchmark"]["config"],
        "DualEncoderLaunchConfig": {"steps": 2, "batch_size": 8},
        "CaptioningConfig": CAPTIONING["config"],
        "SampledCaptioningConfig": {**CAPTIONING["config"], "captions_per_clip": 2},
    }


def tiny_environment(tmp_path, **extra: str) -> dict[str, str]:
    """The environment of a fresh instance and data root under tmp_path that runs the whole
    graph with tiny settings: 16 embedded clips in 2 shards, the tiny config defaults."""
    import json
    import os

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    defaults = tmp_path / "tiny_defaults.json"
    defaults.write_text(json.dumps(tiny_config_defaults()))
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VIDISTILL_DATA_ROOT": str(tmp_path / "data"),
        "VIDISTILL_CONFIG_DEFAULTS": str(defaults),
        "VIDISTILL_CORPUS_CLIPS": "16",
        "VIDISTILL_CLIPS_PER_SHARD": "8",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
