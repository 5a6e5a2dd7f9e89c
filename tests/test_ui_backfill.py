"""Backfills of every partition through the path the UI takes: `dagster dev` (webserver +
daemon) and the launchPartitionBackfill GraphQL mutation: first the clip shards, then both
caption assets (tiny checkpoints trained for a few steps in between, from the CLI).
Slow: ~7.5 minutes on 2 cores."""

import json
import os
import shutil
import subprocess

import pytest
from dagster_ui import DAGSTER, ROOT, backfill, dagster_dev
from tiny_runs import CAPTIONING, RUN_CONFIG

TINY_CHECKPOINTS = {
    "ops": {
        name: RUN_CONFIG["ops"][name]
        for name in ("image_vlm", "video_caption_data", "adapted_encoder", "instruction_tuned_lm")
    }
}


@pytest.mark.slow
def test_backfill_of_all_partitions_from_the_ui_path(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDISTILL_DATA_ROOT": str(tmp_path / "data")}
    subprocess.run(
        [
            *DAGSTER,
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "clip_shard_plan",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    with dagster_dev(env) as gql:
        backfill(gql, ["clip_shards"])
        subprocess.run(
            [
                *DAGSTER,
                "asset",
                "materialize",
                "-m",
                "pipelines.definitions",
                "--select",
                ",".join([*TINY_CHECKPOINTS["ops"], "instruction_data", "video_vlm"]),
                "--config-json",
                json.dumps(TINY_CHECKPOINTS),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        backfill(
            gql,
            ["frame_captions", "pseudo_captions"],
            {"ops": {"frame_captions": CAPTIONING, "pseudo_captions": CAPTIONING}},
        )
    shards = sorted(p.name for p in (tmp_path / "data" / "clips").glob("*.tar"))
    assert shards == [f"embedded-{i:04d}.tar" for i in range(8)]

    from resources.catalog import Catalog

    catalog = Catalog(root=str(tmp_path / "data"))
    counts = catalog.query(
        "SELECT captioner_version, count(*) AS n, count(DISTINCT partition) AS "
        "p FROM captions GROUP BY 1 ORDER BY 1"
    ).to_dict("records")
    clips = catalog.query("SELECT count(*) AS n FROM clips")["n"].item()
    assert [(c["captioner_version"].split("-")[0], c["n"], c["p"]) for c in counts] == [
        ("image_vlm", clips, 8),
        ("video_vlm", clips, 8),
    ]
