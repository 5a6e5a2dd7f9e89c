"""The data-scaling curve: nested clip subsets, its launchpad config, and the asset training one
dual encoder per fraction (through the launcher) on exactly that fraction of the clips."""

import itertools
import json
import time

import pandas as pd
import pytest
from dagster import instance_for_test, materialize
from tiny_runs import materialize_two_shards

from model_code.scaling import curve_summary, nested_subset, plot_curve
from pipelines.definitions import defs, make_resources

ASSETS = list(defs.assets)
TINY = {"steps": 2, "batch_size": 6, "warmup_steps": 1, "log_every": 1, "num_workers": 0}


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


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"fractions": [0.5, 0.25]}, "fractions"),
        ({"fractions": [0.5, 0.5]}, "fractions"),
        ({"fractions": [0.0, 0.5]}, "fractions"),
        ({"fractions": [0.5, 1.5]}, "fractions"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [-1]}, "seeds"),
        ({"source": "web_text"}, "source"),
        ({"baseline": "web_text"}, "baseline"),
        ({"batch_size": 1}, "batch_size"),
    ],
)
def test_a_bad_config_value_is_refused_by_its_field_name(config, field):
    from pydantic import ValidationError

    from assets.evidence import ScalingCurveConfig

    with pytest.raises(ValidationError, match=field):
        ScalingCurveConfig(**config)


def test_the_launchpad_refuses_a_bad_fraction_before_training(tmp_path):
    result = materialize(
        ASSETS,
        selection=["scaling_curve"],
        resources=make_resources(str(tmp_path)),
        raise_on_error=False,
        run_config={"ops": {"scaling_curve": {"config": {"fractions": [1.0, 0.5]}}}},
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "fractions" in str(failure.step_failure_data.error)
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """16 clips in two shards, the benchmark, and two planted pseudo-captions per clip (by a
    stand-in video_vlm: only its lineage version names the captions)."""
    root = tmp_path_factory.mktemp("data")
    resources = make_resources(str(root))
    store, catalog = resources["store"], resources["catalog"]
    with instance_for_test() as instance:
        materialize_two_shards(instance, resources)
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


def test_the_curve_trains_each_fraction_on_exactly_its_nested_clips(captioned):
    resources, instance, clips = captioned
    store = resources["store"]
    config = {**TINY, "fractions": [0.25, 1.0], "seeds": [0]}
    start = time.monotonic()
    result = materialize(
        ASSETS,
        selection=["scaling_curve"],
        instance=instance,
        resources=resources,
        run_config={"ops": {"scaling_curve": {"config": config}}},
    )
    seconds = time.monotonic() - start
    assert result.success
    print(f"scaling_curve: {seconds:.1f} s for 3 trainings")
    (materialization,) = result.asset_materializations_for_node("scaling_curve")

    rows = json.loads(store.path("scaling_curve.json").read_text())
    assert [(r["source"], r["fraction"], r["clips"], r["pairs"]) for r in rows] == [
        ("pseudo_captions", 0.25, 4, 8),
        ("pseudo_captions", 1.0, 16, 32),
        ("alt_text", 1.0, 16, 16),
    ]  # every caption of a chosen clip, and only those clips
    assert [r["batch_size"] for r in rows] == [4, 6, 6]  # 4 clips cannot fill a batch of 6
    trained = pd.read_parquet(
        store.path("training_inputs", "scaling-pseudo_captions-25pct-seed0.parquet")
    )
    assert sorted(trained["key"].unique()) == sorted(nested_subset(clips["key"], 0.25, "seed0"))
    for r in rows:
        assert 0 <= r["metrics"]["t2v_R1"] <= 100
        lineage = json.loads(
            (
                store.checkpoint(f"scaling/{r['source']}-{r['fraction'] * 100:g}pct-seed0")
                / "lineage.json"
            ).read_text()
        )
        assert lineage["version"] == r["model_version"]
        assert lineage["training_config"]["steps"] == 2
        assert lineage["data"]["fraction"] == r["fraction"]

    assert store.path("scaling_curve.png").read_bytes()[:4] == b"\x89PNG"
    table = store.path("scaling_curve.md").read_text()
    assert "| pseudo_captions | 25% | 4 | 1 | 4 |" in table
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

    # again, unchanged: every checkpoint's lineage matches, so none is trained again
    jobs = set(store.path("training_jobs").iterdir())
    again = materialize(
        ASSETS,
        selection=["scaling_curve"],
        instance=instance,
        resources=resources,
        run_config={"ops": {"scaling_curve": {"config": config}}},
    )
    assert again.success
    assert set(store.path("training_jobs").iterdir()) == jobs
    assert json.loads(store.path("scaling_curve.json").read_text()) == rows
