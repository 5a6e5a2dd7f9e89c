"""The asset graph's edges say exactly what each model was made from, and the groups keep the
paper's costly evidence out of the recipe's "Materialize all"."""

from dagster import AssetKey, SpecificPartitionsPartitionMapping

from assets.partitions import PAPER_GROUP, RECIPE_GROUPS, TEACHER_GROUP
from pipelines.definitions import defs

GRAPH = defs.resolve_asset_graph()


def upstream(name: str) -> set[str]:
    """Every asset `name` is made from, transitively."""
    seen, todo = set(), [AssetKey.from_user_string(name)]
    while todo:
        for parent in GRAPH.get(todo.pop()).parent_keys:
            if parent.to_user_string() not in seen:
                seen.add(parent.to_user_string())
                todo.append(parent)
    return seen


def test_each_dual_encoder_is_downstream_only_of_the_captions_it_trains_on():
    assert upstream("dual_encoder/alt_text") == {
        "clip_shards",
        "clip_shard_plan",
        "retrieval_benchmark",
    }
    assert "pseudo_captions" not in upstream("dual_encoder/frame_captions")
    assert "video_vlm" not in upstream("dual_encoder/frame_captions")
    pseudo = upstream("dual_encoder/pseudo_captions")
    assert {"pseudo_captions", "video_vlm", "clip_shards"} <= pseudo
    assert "frame_captions" not in pseudo and "pseudo_sampled" not in pseudo
    assert upstream("benchmark_scores/alt_text") == {
        "dual_encoder/alt_text",
        *upstream("dual_encoder/alt_text"),
    }


def test_every_trained_model_with_seeds_is_partitioned_by_seed():
    for name in (
        "dual_encoder/alt_text",
        "dual_encoder/pseudo_captions",
        "benchmark_scores/alt_text",
    ):
        assert GRAPH.get(AssetKey.from_user_string(name)).partitions_def.name == "seeds"


def test_the_search_index_reads_exactly_seed_0_of_the_pseudo_caption_encoder():
    key = AssetKey("video_index")
    encoder = AssetKey(["dual_encoder", "pseudo_captions"])
    assert encoder in GRAPH.get(key).parent_keys
    assert GRAPH.get_partition_mapping(key, encoder) == SpecificPartitionsPartitionMapping(["0"])
    assert not any(p.path[0] == "dual_encoder" and p != encoder for p in GRAPH.get(key).parent_keys)


def test_the_recipe_groups_hold_no_costly_evidence_and_no_outside_teacher():
    groups = {
        key.to_user_string(): GRAPH.get(key).group_name
        for key in GRAPH.get_all_asset_keys()
        if GRAPH.get(key).is_materializable
    }
    recipe = {name for name, group in groups.items() if group in RECIPE_GROUPS}
    for costly in (
        "scaling_dual_encoder",
        "scaling_curve",
        "adaptation_order_vlm",
        "adaptation_order",
        "stage1_sampled",
        "pseudo_sampled",
        "dual_encoder/stage1_captions",
    ):
        assert groups[costly] == PAPER_GROUP
    assert groups["teacher_captions"] == groups["dual_encoder/teacher_captions"] == TEACHER_GROUP
    assert {
        "clip_shards",
        "image_vlm",
        "video_vlm",
        "pseudo_captions",
        "frame_captions",
        "dual_encoder/alt_text",
        "dual_encoder/pseudo_captions",
        "benchmark_scores/ground_truth",
        "ablation_table",
        "video_index",
        "caption_statistics",
    } <= recipe
    # nothing in the recipe needs the evidence: "Materialize all" on the recipe never waits
    for name in recipe:
        assert not any(groups.get(u) in (PAPER_GROUP, TEACHER_GROUP) for u in upstream(name)) or (
            name in ("ablation_table", "caption_statistics")  # they summarize whatever exists
        )


def test_new_shards_are_cut_and_captioned_by_automation_and_the_sensors_start_on():
    from dagster import DefaultSensorStatus

    for name in ("clip_shards", "frame_captions", "pseudo_captions"):
        condition = GRAPH.get(AssetKey(name)).automation_condition
        assert condition is not None and condition.get_label() == "new shard"
    sensors = {s.name: s for s in defs.sensors}
    assert sensors["new_clip_shards"].default_status == DefaultSensorStatus.RUNNING
    assert sensors["shard_automation"].default_status == DefaultSensorStatus.RUNNING
    assert sensors["stale_captions"].default_status == DefaultSensorStatus.STOPPED
