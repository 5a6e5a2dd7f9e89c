"""Backfills of every partition through the path the UI takes: `dagster dev` (webserver +
daemon) and the launchPartitionBackfill GraphQL mutation: first the clip shards, then both
caption assets (tiny checkpoints trained for a few steps in between, from the CLI).
Slow: ~7.5 minutes on 2 cores."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tiny_runs import CAPTIONING, RUN_CONFIG

ROOT = Path(__file__).resolve().parents[1]
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status numPartitions } } }"""


TINY_CHECKPOINTS = {"ops": {name: RUN_CONFIG["ops"][name] for name in (
    "image_vlm", "video_caption_data", "visual_adapted_vlm", "video_vlm")}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_backfill_of_all_partitions_from_the_ui_path(tmp_path):
    from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDISTILL_DATA_ROOT": str(tmp_path / "data")}
    dagster = [sys.executable, "-m", "dagster"]
    subprocess.run([*dagster, "asset", "materialize", "-m", "pipelines.definitions", "--select",
                    "clip_shard_plan"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen(
        [*dagster, "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # dagster dev ignores SIGINT unless restored (STACK.md)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    url = f"http://127.0.0.1:{port}/graphql"

    def gql(query: str, variables: dict) -> dict:
        r = requests.post(url, json={"query": query, "variables": variables}, timeout=30)
        r.raise_for_status()
        return r.json()["data"]

    try:
        deadline = time.time() + 120
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if time.time() > deadline:
                    raise
                time.sleep(1)

        def backfill(assets: list[str], run_config: dict | None = None) -> None:
            params = {"assetSelection": [{"path": [a]} for a in assets], "allPartitions": True}
            if run_config:
                params["runConfigData"] = run_config
            launched = gql(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})
            result = launched["launchPartitionBackfill"]
            assert result["__typename"] == "LaunchBackfillSuccess", result
            deadline = time.time() + 900
            while time.time() < deadline:
                status = gql(BACKFILL_STATUS, {"id": result["backfillId"]})["partitionBackfillOrError"]
                if status["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED",
                                        "COMPLETED_FAILED", "CANCELED"):
                    break
                time.sleep(3)
            assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status

        backfill(["clip_shards"])
        subprocess.run([*dagster, "asset", "materialize", "-m", "pipelines.definitions",
                        "--select", ",".join([*TINY_CHECKPOINTS["ops"], "instruction_data"]),
                        "--config-json", json.dumps(TINY_CHECKPOINTS)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        backfill(["frame_captions", "pseudo_captions"], {"ops": {
            "frame_captions": CAPTIONING, "pseudo_captions": CAPTIONING}})
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    shards = sorted(p.name for p in (tmp_path / "data" / "clips").glob("*.tar"))
    assert shards == [f"embedded-{i:04d}.tar" for i in range(8)]

    from resources.catalog import Catalog

    catalog = Catalog(root=str(tmp_path / "data"))
    counts = catalog.query("SELECT captioner_version, count(*) AS n, count(DISTINCT partition) AS "
                           "p FROM captions GROUP BY 1 ORDER BY 1").to_dict("records")
    clips = catalog.query("SELECT count(*) AS n FROM clips")["n"].item()
    assert [(c["captioner_version"].split("-")[0], c["n"], c["p"]) for c in counts] == [
        ("image_vlm", clips, 8), ("video_vlm", clips, 8)]
