"""The ablation table's spread over seeds, from planted score rows, against hand-computed
figures."""

import math

import pandas as pd
from dagster import AssetKey, AssetMaterialization, instance_for_test, materialize

from pipelines.definitions import defs, make_resources

PLANTED = [  # (source, seed, scored_at, t2v_R1)
    ("alt_text", 0, "2026-01-01T00:00:00Z", 50.0),  # an older score of seed 0: superseded
    ("alt_text", 0, "2026-01-02T00:00:00Z", 1.0),
    ("alt_text", 1, "2026-01-02T00:00:00Z", 2.0),
    ("alt_text", 2, "2026-01-02T00:00:00Z", 6.0),
    ("pseudo_captions", 0, "2026-01-02T00:00:00Z", 4.0),
    ("pseudo_captions", 1, "2026-01-02T00:00:00Z", 6.0),
    ("ground_truth", 0, "2026-01-02T00:00:00Z", 30.0),
]


def test_ablation_table_gives_mean_and_spread_over_seeds(tmp_path):
    from model_code.evaluation.heldout import seed_summary

    resources = make_resources(str(tmp_path / "data"))
    store = resources["store"]
    for i, (source, seed, at, r1) in enumerate(PLANTED):
        store.write_parquet(
            store.path("scores", f"{source}-{i}.parquet"),
            pd.DataFrame(
                [
                    {
                        "source": source,
                        "seed": seed,
                        "scored_at": at,
                        "protocol": "embedded",
                        "t2v_R1": r1,
                        "v2t_R1": r1 / 2,
                    }
                ]
            ),
        )
    summary = seed_summary(
        resources["catalog"].query("SELECT * FROM scores"),
        ["t2v_R1", "v2t_R1"],
        ["alt_text", "pseudo_captions", "ground_truth"],
    )
    rows = {r["source"]: r for r in summary.to_dict("records")}
    assert list(summary["source"]) == ["alt_text", "pseudo_captions", "ground_truth"]
    assert rows["alt_text"]["seeds"] == 3 and rows["alt_text"]["t2v_R1"] == 3.0
    assert math.isclose(rows["alt_text"]["t2v_R1_std"], math.sqrt(7))  # (4 + 1 + 9) / 2
    assert rows["pseudo_captions"]["t2v_R1"] == 5.0
    assert math.isclose(rows["pseudo_captions"]["t2v_R1_std"], math.sqrt(2))
    assert rows["ground_truth"]["seeds"] == 1 and rows["ground_truth"]["t2v_R1_std"] == 0.0
    # |5 - 3| <= max(sqrt 7, sqrt 2): within a standard deviation; |30 - 5| is not
    assert list(summary["t2v_R1_within_1sd_of_previous"]) == [False, True, False]

    # the asset reads the latest materialization of each benchmark_scores/<source> partition
    # from Dagster's records (the score files above are not what it reads)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("seeds", ["0", "1", "2"])
        for source, seed, _, r1 in PLANTED:  # in order: seed 0's second score supersedes
            instance.report_runless_asset_event(
                AssetMaterialization(
                    asset_key=AssetKey(["benchmark_scores", source]),
                    partition=str(seed),
                    metadata={
                        "model_version": f"{source}-{seed}",
                        "protocol": "embedded",
                        "t2v_R1": r1,
                        "v2t_R1": r1 / 2,
                    },
                )
            )
        store.write_parquet(  # a stray score file: not a materialization, not in the table
            store.path("scores", "frame_captions-seed0.parquet"),
            pd.DataFrame([{"source": "frame_captions", "seed": 0, "t2v_R1": 99.0}]),
        )
        result = materialize(
            list(defs.assets), selection=["ablation_table"], resources=resources, instance=instance
        )
    assert result.success
    table = store.path("ablation_table.md").read_text()
    assert "frame_captions" not in table
    assert "| alt_text | 3 | embedded | 3.0 ± 2.6 |" in table
    assert "| pseudo_captions | 2 | embedded | 5.0 ± 1.4 |" in table
    assert table.splitlines()[3].endswith("| yes |")
