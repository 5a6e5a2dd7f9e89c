import io
import json
import tarfile

import numpy as np
import pandas as pd
from dagster import instance_for_test, materialize
from tiny_runs import TINY_VLM, caption_partition

from assets.captions import CaptioningConfig, caption_quality
from model_code.data import corpus, shards
from pipelines.definitions import defs, make_resources

PERMISSIVE = {
    "batch_size": 4,
    "max_new_tokens": 4,
    "decode_workers": 0,
    "max_empty_rate": 1.0,
    "max_degenerate_rate": 1.0,
    "max_duplicate_rate": 1.0,
    "min_vocab_size": 0,
}


def _tiny_video_vlm(folder) -> None:
    from model_code.models.lineage import write_lineage
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm

    config = TinyVLMConfig(**TINY_VLM)
    vlm = build_tiny_image_vlm(["a red circle moves left"], config)
    vlm.save_pretrained(folder)
    write_lineage(folder, kind="video_vlm")


def test_a_corrupted_clip_becomes_a_reject_and_the_partition_succeeds(tmp_path):
    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    good = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 5))
    store.shard("p0").parent.mkdir(parents=True)
    with tarfile.open(store.shard("p0"), "w") as tar:
        for clip in (
            good[:3]
            + [
                shards.Clip(
                    "broken",
                    b"\x00\x00\x00\x18ftypmp42" + bytes(999),
                    {**good[3].meta, "key": "broken"},
                )
            ]
            + good[3:]
        ):
            for ext, data in (("mp4", clip.mp4), ("json", json.dumps(clip.meta).encode())):
                info = tarfile.TarInfo(f"{clip.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    _tiny_video_vlm(store.checkpoint("video_vlm"))
    with instance_for_test() as instance:
        result = caption_partition(instance, resources, "pseudo_captions", PERMISSIVE)
        assert result.success
    (captions,) = store.path("captions").glob("pseudo_captions-video_vlm-*/p0.parquet")
    df = pd.read_parquet(captions)
    assert sorted(df["key"]) == sorted(c.key for c in good)
    assert set(df.columns) >= {
        "key",
        "sample",
        "caption",
        "source",
        "captioner_version",
        "prompt",
        "partition",
        "generation",
    }
    assert set(df["sample"]) == {0} and set(df["source"]) == {"pseudo_captions"}
    (rejects,) = store.path("caption_rejects").glob("pseudo_captions-video_vlm-*/p0.parquet")
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
        result = materialize(
            list(defs.assets),
            selection=["pseudo_captions"],
            instance=instance,
            resources=resources,
            tags={
                "dagster/asset_partition_range_start": "p0",
                "dagster/asset_partition_range_end": "p1",
            },
            run_config={"ops": {"pseudo_captions": {"config": PERMISSIVE}}},
        )
        assert result.success
    (folder,) = store.path("captions").glob("pseudo_captions-video_vlm-*")
    assert sorted(p.name for p in folder.iterdir()) == ["p0.parquet", "p1.parquet"]
    (materialization,) = result.asset_materializations_for_node("pseudo_captions")[:1]
    assert materialization.metadata["path"].value == str(folder)


def test_k_sampled_captions_a_clip_are_k_rows_reproducible_by_seed(tmp_path):
    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    clips = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 4))
    shards.write_shard(store.shard("p0"), clips)
    _tiny_video_vlm(store.checkpoint("video_vlm"))
    sampled = {**PERMISSIVE, "captions_per_clip": 3, "max_new_tokens": 6, "seed": 7}

    def caption(config: dict) -> pd.DataFrame:
        with instance_for_test() as instance:
            assert caption_partition(instance, resources, "pseudo_sampled", config).success
        (path,) = store.path("captions").glob("pseudo_sampled-video_vlm-*/p0.parquet")
        return pd.read_parquet(path)

    first = caption(sampled)
    assert len(first) == 3 * len(clips)
    assert first.groupby("key")["sample"].apply(sorted).tolist() == [[0, 1, 2]] * len(clips)
    assert set(first["source"]) == {"pseudo_sampled"}
    assert first.groupby("key")["caption"].nunique().max() > 1  # samples differ
    assert caption(sampled)[["key", "sample", "caption"]].equals(
        first[["key", "sample", "caption"]]
    )
    other = caption({**sampled, "seed": 8})
    assert not other["caption"].equals(first["caption"])


def test_one_greedy_sample_is_the_greedy_caption_and_k_needs_sampling():
    import numpy as np
    import pytest
    from pydantic import ValidationError

    from model_code.inference.captioning import sample_captions
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm

    vlm = build_tiny_image_vlm(
        ["a red circle moves left"],
        TinyVLMConfig(**TINY_VLM),
    )
    clips = np.random.default_rng(0).integers(0, 255, (3, 4, 64, 64, 3), dtype=np.uint8)
    greedy = vlm.caption(clips, max_new_tokens=6)
    assert vlm.caption_samples(clips, 1, max_new_tokens=6) == [greedy]
    assert vlm.caption_samples(clips, 2, max_new_tokens=6) == [greedy, greedy]
    drawn = vlm.caption_samples(clips, 2, max_new_tokens=6, do_sample=True, seed=3)
    assert drawn == vlm.caption_samples(clips, 2, max_new_tokens=6, do_sample=True, seed=3)

    class OneAtATime:  # a captioner without caption_samples gets the same seeds, one call each
        def caption(self, clips, repeats=1, **generation):
            return vlm.caption(clips, repeats=repeats, **generation)

    assert (
        sample_captions(OneAtATime(), clips, 2, max_new_tokens=6, do_sample=True, seed=3) == drawn
    )
    with pytest.raises(ValidationError, match="captions_per_clip"):
        CaptioningConfig(captions_per_clip=3)


def test_the_per_frame_baseline_sees_each_clips_middle_frame_only():
    from model_code.inference.captioning import middle_frame

    clips = (
        np.zeros((2, 8, 4, 4, 3), dtype=np.uint8)
        + np.arange(8, dtype=np.uint8)[None, :, None, None, None]
    )
    still = middle_frame(clips)
    assert still.shape == (2, 1, 4, 4, 3) and (still == 4).all()
