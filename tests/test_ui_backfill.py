"""A backfill of every clip-shard partition through the path the UI takes: `dagster dev`
(webserver + daemon) and the launchPartitionBackfill GraphQL mutation. Slow: ~2 minutes."""

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

ROOT = Path(__file__).resolve().parents[1]
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status numPartitions } } }"""


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
        launched = gql(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": {
            "assetSelection": [{"path": ["clip_shards"]}], "allPartitions": True}})
        result = launched["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        deadline = time.time() + 600
        while time.time() < deadline:
            status = gql(BACKFILL_STATUS, {"id": result["backfillId"]})["partitionBackfillOrError"]
            if status["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED", "COMPLETED_FAILED",
                                    "CANCELED"):
                break
            time.sleep(3)
        assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    shards = sorted(p.name for p in (tmp_path / "data" / "clips").glob("*.tar"))
    assert shards == [f"embedded-{i:04d}.tar" for i in range(8)]
