"""An off-the-shelf video VLM (a tiny random Qwen2-VL built from its real config classes) as
the `teacher_captions` source: batched like the distilled captioner, same files, same checks,
its own captioner version, and a source the dual encoder can train on."""

import numpy as np
import pandas as pd
import pytest
from dagster import instance_for_test
from tiny_runs import caption_partition, dual_encoder_op

from model_code.data import corpus, shards
from model_code.models.teacher import QwenTeacher, build_tiny_teacher, save_teacher

PERMISSIVE = {
    "batch_size": 3,
    "max_new_tokens": 4,
    "decode_workers": 0,
    "max_empty_rate": 1.0,
    "max_degenerate_rate": 1.0,
    "max_duplicate_rate": 1.0,
    "min_vocab_size": 0,
}


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2_vl")
    save_teacher(
        build_tiny_teacher(["a red circle moves left", "a blue square stays still"]), folder
    )
    return folder


def test_teacher_captions_batched_equal_one_by_one_and_survive_save_and_load(teacher_folder):
    from model_code.inference.captioning import load_captioner

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 3)
    clips = np.stack([corpus.render_clip(s)[[0, 5, 10, 15]] for s in specs])
    teacher = load_captioner(teacher_folder, device="cpu")
    assert isinstance(teacher, QwenTeacher)
    assert type(teacher.model).__name__ == "Qwen2VLForConditionalGeneration"
    batched = teacher.caption(clips, max_new_tokens=5)
    assert batched == [teacher.caption(clips[i : i + 1], max_new_tokens=5)[0] for i in range(3)]
    assert len(set(batched)) > 1  # the frames reach the model: clips differ, captions differ


def test_teacher_captions_partition_and_a_dual_encoder_source(teacher_folder, tmp_path):
    from assets.retrieval import training_pairs
    from pipelines.definitions import make_resources
    from resources.caption_sources import teacher_version

    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    good = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 5))
    shards.write_shard(store.shard("p0"), good)
    config = {**PERMISSIVE, "teacher_path": str(teacher_folder)}
    with instance_for_test() as instance:
        result = caption_partition(instance, resources, "teacher_captions", config)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert [c.check_name for c in checks] == ["caption_quality"] and checks[0].passed
        missing = caption_partition(
            instance, resources, "teacher_captions", PERMISSIVE, raise_on_error=False
        )
        assert not missing.success
    version = teacher_version(str(teacher_folder))
    df = pd.read_parquet(store.captions(f"teacher_captions-{version}", "p0"))
    assert sorted(df["key"]) == sorted(c.key for c in good)
    assert set(df["captioner_version"]) == {version} and version.startswith("teacher-")
    store.write_parquet(
        store.path("clip_index", "p0.parquet"),
        pd.DataFrame(
            [{"key": c.key, "partition": "p0", "alt_text": c.meta["alt_text"]} for c in good]
        ),
    )
    pairs = training_pairs("teacher_captions", resources["catalog"], store)
    assert sorted(pairs["key"]) == sorted(c.key for c in good)
    assert set(pairs["version"]) == {version}


def test_a_shard_that_fails_the_blocking_caption_check_is_not_trained_on(teacher_folder, tmp_path):
    """The caption check is what keeps bad captions out of training, and it blocks only the run
    it ran in: a dual encoder launched later must refuse a partition whose check failed. A shard
    of one video repeated (identical captions) fails thresholds that a shard of 12 different
    clips passes; once re-captioned from good clips, it no longer blocks."""
    from dagster import materialize

    from assets.captions import failed_quality_checks
    from assets.retrieval import training_pairs
    from pipelines.definitions import defs, make_resources

    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    clips = shards.embedded_clips(corpus.split_specs("corpus", corpus.CorpusConfig(), 0, 24))
    good, other = clips[:12], clips[12:]
    shards.write_shard(store.shard("p0"), good)
    repeated = [shards.Clip(c.key, other[0].mp4, c.meta) for c in other]  # a stuck source
    shards.write_shard(store.shard("p1"), repeated)
    config = {**PERMISSIVE, "max_duplicate_rate": 0.9, "teacher_path": str(teacher_folder)}
    with instance_for_test() as instance:
        assert caption_partition(instance, resources, "teacher_captions", config, "p0").success
        bad = caption_partition(
            instance, resources, "teacher_captions", config, "p1", raise_on_error=False
        )
        (check,) = bad.get_asset_check_evaluations()
        assert not check.passed and "duplicate_rate 0.92 > 0.9" in check.description
        pairs = training_pairs("teacher_captions", resources["catalog"], store)
        assert set(pairs["partition"]) == {"p0", "p1"}  # the bad captions are in the catalog

        instance.add_dynamic_partitions("seeds", ["0"])
        op = dual_encoder_op("teacher_captions")
        refused = materialize(
            list(defs.assets),
            selection=["dual_encoder/teacher_captions"],
            partition_key="0",
            instance=instance,
            resources=resources,
            run_config={"ops": {op: {"config": {"steps": 2, "batch_size": 8}}}},
            raise_on_error=False,
        )
        assert not refused.success
        (failure,) = refused.get_step_failure_events()
        message = failure.step_failure_data.error.cause.message
        assert "failed its caption_quality check on 1 partition(s): p1: duplicate_rate" in message
        assert "p0" not in message
        assert not store.path("training_jobs").exists()  # nothing was launched

        shards.write_shard(store.shard("p1"), other)
        assert caption_partition(instance, resources, "teacher_captions", config, "p1").success
        assert failed_quality_checks(instance, "teacher_captions", ["p0", "p1"]) == {}
