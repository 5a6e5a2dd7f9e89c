from dagster import instance_for_test, materialize

from assets.corpus import clip_shard_plan, clip_shards
from pipelines.definitions import defs, make_resources
from resources.sources import ClipSource


def test_definitions_load_with_the_whole_graph():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"clip_shard_plan", "clip_shards"} <= keys
    defs.resolve_implicit_global_asset_job_def()


def _resources(tmp_path) -> dict:
    resources = make_resources(str(tmp_path / "data"))
    resources["clip_source"] = ClipSource(corpus_clips=25, clips_per_shard=10)
    return resources


def test_materializing_a_partition_writes_the_shard_and_the_catalog_sees_it(tmp_path):
    resources = _resources(tmp_path)
    with instance_for_test() as instance:
        assert materialize([clip_shard_plan], instance=instance, resources=resources).success
        partitions = instance.get_dynamic_partitions("clip_shards")
        assert partitions == ["embedded-0000", "embedded-0001", "embedded-0002"]

        result = materialize(
            [clip_shards],
            partition_key="embedded-0002",
            instance=instance,
            resources=resources,
            selection=[clip_shards],
        )
        assert result.success
        shard = resources["store"].shard("embedded-0002")
        first_bytes = shard.read_bytes()
        meta = result.asset_materializations_for_node("clip_shards")[0].metadata
        assert meta["clips"].value == 5 and meta["rejects"].value == 0

        rows = resources["catalog"].query("SELECT partition, count(*) n FROM clips GROUP BY 1")
        assert rows.to_dict("records") == [{"partition": "embedded-0002", "n": 5}]

        # a rerun replaces exactly that partition with the same shard
        assert materialize(
            [clip_shards], partition_key="embedded-0002", instance=instance, resources=resources
        ).success
        assert shard.read_bytes() == first_bytes
        assert int(resources["catalog"].query("SELECT count(*) n FROM clips")["n"][0]) == 5


def test_replanning_keeps_existing_partitions_and_adds_new_ones(tmp_path):
    resources = _resources(tmp_path)
    with instance_for_test() as instance:
        materialize([clip_shard_plan], instance=instance, resources=resources)
        resources["clip_source"] = ClipSource(corpus_clips=45, clips_per_shard=10)
        result = materialize([clip_shard_plan], instance=instance, resources=resources)
        assert (
            result.asset_materializations_for_node("clip_shard_plan")[0]
            .metadata["new_partitions"]
            .value
            == 2
        )
        assert len(instance.get_dynamic_partitions("clip_shards")) == 5


def test_sensor_registers_new_shards_for_the_automation_to_materialize(tmp_path):
    from dagster import build_sensor_context

    from pipelines.sensors import new_clip_shards

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("clip_shards", ["embedded-0000"])
        context = build_sensor_context(
            instance=instance,
            resources={"clip_source": ClipSource(corpus_clips=25, clips_per_shard=10)},
        )
        result = new_clip_shards(context)
        assert not result.run_requests  # the automation conditions run them (NEW_SHARDS)
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["embedded-0001", "embedded-0002"]
        instance.add_dynamic_partitions("clip_shards", list(request.partition_keys))
        assert "no new shards" in new_clip_shards(context).skip_message
