import io
import json
import tarfile

import pandas as pd
from dagster import instance_for_test, materialize

from assets.captions import CaptioningConfig, caption_quality
from model_code import corpus, shards
from pipelines.definitions import defs, make_resources

PERMISSIVE = {"batch_size": 4, "max_new_tokens": 4, "decode_workers": 0, "max_empty_rate": 1.0,
              "max_degenerate_rate": 1.0, "max_duplicate_rate": 1.0, "min_vocab_size": 0}


def _tiny_video_vlm(folder) -> None:
    from model_code.lineage import write_lineage
    from model_code.vlm import TinyVLMConfig, build_tiny_image_vlm

    config = TinyVLMConfig(vision_hidden=32, vision_layers=1, text_hidden=16, text_layers=1,
                           vision_heads=2, text_heads=2, num_frames=4)
    vlm = build_tiny_image_vlm(["a red circle moves left"], config)
    vlm.save_pretrained(folder)
    write_lineage(folder, kind="video_vlm")


def test_a_corrupted_clip_becomes_a_reject_and_the_partition_succeeds(tmp_path):
    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    good = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 5))
    store.shard("p0").parent.mkdir(parents=True)
    with tarfile.open(store.shard("p0"), "w") as tar:
        for clip in good[:3] + [shards.Clip("broken", b"\x00\x00\x00\x18ftypmp42" + bytes(999),
                                            {**good[3].meta, "key": "broken"})] + good[3:]:
            for ext, data in (("mp4", clip.mp4), ("json", json.dumps(clip.meta).encode())):
                info = tarfile.TarInfo(f"{clip.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    _tiny_video_vlm(store.checkpoint("video_vlm"))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("clip_shards", ["p0"])
        result = materialize(list(defs.assets), selection=["pseudo_captions"], partition_key="p0",
                             instance=instance, resources=resources,
                             run_config={"ops": {"pseudo_captions": {"config": PERMISSIVE}}})
        assert result.success
    (captions,) = store.path("captions").glob("video_vlm-*/p0.parquet")
    df = pd.read_parquet(captions)
    assert sorted(df["key"]) == sorted(c.key for c in good)
    assert set(df.columns) >= {"key", "caption", "captioner_version", "prompt", "partition",
                               "generation"}
    (rejects,) = store.path("caption_rejects").glob("video_vlm-*/p0.parquet")
    rejected = pd.read_parquet(rejects)
    assert rejected["key"].tolist() == ["broken"] and rejected["reason"].str.len().min() > 0


def test_caption_quality_check_fails_on_a_degenerate_partition():
    config = CaptioningConfig()
    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 40)
    healthy = caption_quality([corpus.ground_truth_caption(s) for s in specs], config)
    assert healthy.passed
    degenerate = ["a red red red red red red red"] * 30 + [""] * 5 + ["a blue square"] * 5
    result = caption_quality(degenerate, config)
    assert not result.passed
    assert "degenerate_rate" in result.description and "empty_rate" in result.description
    assert not caption_quality(["a red circle"] * 40, config).passed  # all duplicates


def test_one_run_captions_a_range_of_partitions(tmp_path):
    """What the CLI's --partition-range and a single-run backfill do: one run, two shards."""
    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    clips = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 6))
    shards.write_shard(store.shard("p0"), clips[:3])
    shards.write_shard(store.shard("p1"), clips[3:])
    _tiny_video_vlm(store.checkpoint("video_vlm"))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("clip_shards", ["p0", "p1"])
        result = materialize(list(defs.assets), selection=["pseudo_captions"], instance=instance,
                             resources=resources,
                             tags={"dagster/asset_partition_range_start": "p0",
                                   "dagster/asset_partition_range_end": "p1"},
                             run_config={"ops": {"pseudo_captions": {"config": PERMISSIVE}}})
        assert result.success
    (folder,) = store.path("captions").glob("video_vlm-*")
    assert sorted(p.name for p in folder.iterdir()) == ["p0.parquet", "p1.parquet"]
    (materialization,) = result.asset_materializations_for_node("pseudo_captions")[:1]
    assert materialization.metadata["path"].value == str(folder)
