"""What the demo's backfill targets: the recipe's groups at seed 0 (with --paper, the paper's
group and seeds too), less what Dagster records as materialized."""

from dagster import AssetKey, AssetMaterialization, instance_for_test

from assets.partitions import PAPER_GROUP, PAPER_SEEDS, RECIPE_GROUPS
from pipelines.definitions import defs
from pipelines.local import missing_partitions, prepare_instance, target_partitions
from resources.sources import ClipSource


def _names(targets) -> dict:
    return {k.to_user_string(): v for k, v in targets.items()}


def test_the_demo_targets_the_recipe_at_seed_0_and_skips_what_is_materialized():
    with instance_for_test() as instance:
        added = prepare_instance(instance, ClipSource(corpus_clips=16, clips_per_shard=8))
        assert added == {"seeds": ["0"], "shards": ["embedded-0000", "embedded-0001"]}
        assert prepare_instance(instance, ClipSource(corpus_clips=16, clips_per_shard=8)) == {
            "seeds": [],
            "shards": [],
        }
        targets = _names(target_partitions(defs, instance, RECIPE_GROUPS, ("0",)))
        assert targets["clip_shards"] == ["embedded-0000", "embedded-0001"]
        assert targets["dual_encoder/pseudo_captions"] == ["0"]
        assert targets["video_vlm"] is None
        assert not any(n.startswith(("scaling", "adaptation_order", "teacher")) for n in targets)
        assert "dual_encoder/stage1_sampled" not in targets

        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=AssetKey("clip_shards"), partition="embedded-0000")
        )
        instance.report_runless_asset_event(AssetMaterialization(asset_key="video_vlm"))
        todo = _names(
            missing_partitions(instance, target_partitions(defs, instance, RECIPE_GROUPS, ("0",)))
        )
        assert todo["clip_shards"] == ["embedded-0001"] and "video_vlm" not in todo


def test_the_paper_run_adds_its_group_and_seeds():
    with instance_for_test() as instance:
        prepare_instance(instance, ClipSource(corpus_clips=16, clips_per_shard=8), PAPER_SEEDS)
        assert instance.get_dynamic_partitions("seeds") == list(PAPER_SEEDS)
        targets = _names(
            target_partitions(defs, instance, (*RECIPE_GROUPS, PAPER_GROUP), PAPER_SEEDS)
        )
        assert targets["dual_encoder/stage1_sampled"] == list(PAPER_SEEDS)
        assert targets["adaptation_order_vlm"] == ["language_then_vision", "joint"]
        scaling = [str(k) for k in targets["scaling_dual_encoder"]]
        assert len(scaling) == 6 * 3 and "1pct|2" in scaling
        assert targets["scaling_curve"] is None and targets["adaptation_order"] is None
