"""The data-scaling curve: nested clip subsets; scaling_dual_encoder, one dual encoder per
(fraction, seed) partition trained (through the launcher) on exactly that fraction of the
pseudo-captioned clips; and scaling_curve, which scores the partitions Dagster records as
materialized against the alt-text baseline."""

import itertools
import json
import time

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInvalidConfigError,
    MultiPartitionKey,
    instance_for_test,
    materialize,
)
from tiny_runs import materialize_two_shards

from model_code.evaluation.scaling import curve_summary, nested_subset, plot_curve
from pipelines.definitions import defs, make_resources

ASSETS = list(defs.assets)
TINY = {"steps": 2, "batch_size": 6, "warmup_steps": 1, "log_every": 1, "num_workers": 0}
ALT_TEXT = AssetKey(["dual_encoder", "alt_text"])


def test_every_smaller_subset_lies_inside_every_larger_one_with_exact_sizes():
    keys = [f"clip-{i:04d}" for i in range(200)] * 3  # repeats: one clip, several captions
    subsets = {f: nested_subset(keys, f, salt="seed0") for f in (0.001, 0.05, 0.1, 0.25, 0.5, 1.0)}
    assert {f: len(s) for f, s in subsets.items()} == {
        0.001: 1,
        0.05: 10,
        0.1: 20,
        0.25: 50,
        0.5: 100,
        1.0: 200,
    }
    ordered = list(subsets.values())
    for small, large in itertools.pairwise(ordered):
        assert set(small) < set(large)
    assert len(set(subsets[1.0])) == 200
    assert nested_subset(reversed(keys), 0.1, salt="seed0") == subsets[0.1]  # order-free
    assert nested_subset(keys, 0.1, salt="seed1") != subsets[0.1]  # the salt draws others
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="fraction"):
            nested_subset(keys, bad)


def test_the_summary_and_plot_show_seeds_as_mean_and_spread(tmp_path):
    rows = [
        {
            "source": "pseudo_captions",
            "fraction": f,
            "clips": c,
            "seed": s,
            "metrics": {"t2v_R1": r + s},
        }
        for s in (0, 2)
        for f, c, r in ((0.5, 8, 3.0), (1.0, 16, 6.0))
    ]
    rows += [
        {"source": "alt_text", "fraction": 1.0, "clips": 16, "seed": 0, "metrics": {"t2v_R1": 1.0}}
    ]
    summary = curve_summary(rows, ["t2v_R1"])
    assert [(r["source"], r["clips"], r["seeds"], r["t2v_R1"]) for r in summary] == [
        ("pseudo_captions", 8, 2, 4.0),
        ("pseudo_captions", 16, 2, 7.0),
        ("alt_text", 16, 1, 1.0),
    ]
    assert summary[0]["t2v_R1_std"] == pytest.approx(2**0.5)
    path = plot_curve(rows, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temp file left behind


def test_the_partitions_are_the_papers_fractions_times_the_seeds():
    from assets.evidence import FRACTIONS, scaling_partitions

    fractions, seeds = (d.partitions_def for d in scaling_partitions.partitions_defs)
    assert fractions.get_partition_keys() == ["1pct", "5pct", "10pct", "25pct", "50pct", "100pct"]
    assert list(FRACTIONS.values()) == [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    assert seeds.name == "seeds"


@pytest.mark.parametrize(("config", "field"), [({"batch_size": 1}, "batch_size")])
def test_a_bad_config_value_is_refused_by_its_field_name(config, field):
    from pydantic import ValidationError

    from assets.evidence import ScalingDualEncoderConfig

    with pytest.raises(ValidationError, match=field):
        ScalingDualEncoderConfig(**config)


def test_the_seed_and_the_fraction_are_the_partition_not_config(tmp_path):
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("seeds", ["0"])
        for field, value in (("seed", 1), ("fractions", [0.5])):
            with pytest.raises(DagsterInvalidConfigError, match=field):
                materialize(
                    ASSETS,
                    selection=["scaling_dual_encoder"],
                    partition_key=MultiPartitionKey({"fraction": "50pct", "seed": "0"}),
                    instance=instance,
                    resources=make_resources(str(tmp_path)),
                    run_config={"ops": {"scaling_dual_encoder": {"config": {field: value}}}},
                )
    assert not (tmp_path / "checkpoints").exists()


def test_the_curve_names_what_to_materialize_when_no_partition_is(tmp_path):
    with instance_for_test() as instance:
        result = materialize(
            ASSETS,
            selection=["scaling_curve"],
            instance=instance,
            resources=make_resources(str(tmp_path)),
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "materialize scaling_dual_encoder" in str(failure.step_failure_data.error)


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """16 clips in two shards, the benchmark, two planted pseudo-captions per clip (by a
    stand-in video_vlm: only its lineage version names the captions) and seeds 0 and 1."""
    root = tmp_path_factory.mktemp("data")
    resources = make_resources(str(root))
    store, catalog = resources["store"], resources["catalog"]
    with instance_for_test() as instance:
        materialize_two_shards(instance, resources)
        instance.add_dynamic_partitions("seeds", ["0", "1"])
        store.write_bytes(
            store.checkpoint("video_vlm") / "lineage.json",
            json.dumps({"version": "0123abcd"}).encode(),
        )
        clips = catalog.query("SELECT key, partition, ground_truth FROM clips")
        for p, group in clips.groupby("partition"):
            rows = [
                {
                    "key": k,
                    "partition": p,
                    "caption": f"{truth} ({n})",
                    "sample": n,
                    "source": "pseudo_captions",
                    "captioner_version": "video_vlm-0123abcd",
                }
                for k, truth in zip(group["key"], group["ground_truth"], strict=True)
                for n in range(2)
            ]
            store.write_parquet(store.captions("video_vlm-0123abcd", p), pd.DataFrame(rows))
        yield resources, instance, clips


def _scaling(resources, instance, fraction: str, seed: str = "0", **kwargs):
    return materialize(
        ASSETS,
        selection=["scaling_dual_encoder"],
        partition_key=MultiPartitionKey({"fraction": fraction, "seed": seed}),
        instance=instance,
        resources=resources,
        run_config={"ops": {"scaling_dual_encoder": {"config": TINY}}},
        **kwargs,
    )


def _latest(instance, key, partition: str):
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return record.asset_materialization


def test_a_fraction_too_small_for_a_batch_fails_before_training(captioned):
    resources, instance, _ = captioned
    result = _scaling(resources, instance, "1pct", raise_on_error=False)  # 1 clip of 16
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "too few for a batch of 2" in str(failure.step_failure_data.error)
    assert not resources["store"].checkpoint("scaling/pseudo_captions-1pct-seed0").exists()


def test_each_partition_trains_its_fraction_and_the_curve_reads_exactly_those(captioned):
    resources, instance, clips = captioned
    store = resources["store"]
    start = time.monotonic()
    for fraction in ("25pct", "100pct"):
        assert _scaling(resources, instance, fraction).success
    assert materialize(
        ASSETS,
        selection=[ALT_TEXT],
        partition_key="0",
        instance=instance,
        resources=resources,
        run_config={"ops": {"dual_encoder__alt_text": {"config": TINY}}},
    ).success
    result = materialize(
        ASSETS, selection=["scaling_curve"], instance=instance, resources=resources
    )
    assert result.success
    print(f"scaling: {time.monotonic() - start:.1f} s for 3 trainings and the curve")

    # each partition: its own folder, a lineage of its fraction, its own data version
    versions = {}
    for fraction, share in (("25pct", 0.25), ("100pct", 1.0)):
        folder = store.checkpoint(f"scaling/pseudo_captions-{fraction}-seed0")
        lineage = json.loads((folder / "lineage.json").read_text())
        assert (
            lineage["data"]["fraction"] == share and lineage["data"]["source"] == "pseudo_captions"
        )
        assert lineage["training_config"]["seed"] == 0 and lineage["training_config"]["steps"] == 2
        materialization = _latest(instance, AssetKey("scaling_dual_encoder"), f"{fraction}|0")
        assert materialization.metadata["path"].value == str(folder)
        assert materialization.tags["dagster/data_version"] == lineage["version"]
        versions[fraction] = lineage["version"]
    assert versions["25pct"] != versions["100pct"]
    trained = pd.read_parquet(
        store.path("training_inputs", "scaling-pseudo_captions-25pct-seed0.parquet")
    )
    assert sorted(trained["key"].unique()) == sorted(nested_subset(clips["key"], 0.25, "seed0"))

    # the curve: exactly the materialized partitions (not the other fractions, not seed 1 nor
    # the 1pct that failed), then the baseline's seed
    (materialization,) = result.asset_materializations_for_node("scaling_curve")
    rows = json.loads(store.path("scaling_curve.json").read_text())
    assert [(r["source"], r["fraction"], r["seed"], r["clips"], r["pairs"]) for r in rows] == [
        ("pseudo_captions", 0.25, 0, 4, 8),
        ("pseudo_captions", 1.0, 0, 16, 32),
        ("alt_text", 1.0, 0, 16, 16),
    ]  # every caption of a chosen clip, and only those clips
    assert [r["batch_size"] for r in rows] == [4, 6, 6]  # 4 clips cannot fill a batch of 6
    assert [r["model_version"] for r in rows] == [
        versions["25pct"],
        versions["100pct"],
        json.loads((store.dual_encoder("alt_text", 0) / "lineage.json").read_text())["version"],
    ]
    for r in rows:
        assert 0 <= r["metrics"]["t2v_R1"] <= 100

    assert store.path("scaling_curve.png").read_bytes()[:4] == b"\x89PNG"
    table = store.path("scaling_curve.md").read_text()
    assert "| pseudo_captions | 25% | 4 | 1 | 4 |" in table
    assert "| alt_text | 100% | 16 | 1 | 6 |" in table
    meta = materialization.metadata
    assert meta["curve"].value == table
    assert meta["plot"].value == str(store.path("scaling_curve.png"))
    assert meta["runs"].value == 3
    # the UI's markdown allows data: images (rehype-sanitize's src protocols plus 'data')
    assert meta["plot_inline"].value.startswith("![t2v R@1 vs clips](data:image/png;base64,iVBOR")
    run = resources["tracking"].client().get_run(meta["mlflow_run_id"].value)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in resources["tracking"].client().list_artifacts(run.info.run_id)}
    assert {"scaling_curve.png", "scaling_curve.json", "scaling_curve.md"} <= artifacts

    # again: the curve trains nothing, it scores the same checkpoints the same way
    jobs = set(store.path("training_jobs").iterdir())
    again = materialize(ASSETS, selection=["scaling_curve"], instance=instance, resources=resources)
    assert again.success
    assert set(store.path("training_jobs").iterdir()) == jobs
    assert json.loads(store.path("scaling_curve.json").read_text()) == rows
