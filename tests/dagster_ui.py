"""The path the UI takes, for tests: `dagster dev` (webserver + daemon) on a free port, and
partition backfills launched with the launchPartitionBackfill GraphQL mutation."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = [sys.executable, "-m", "dagster"]
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status numPartitions } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dagster_dev(env: dict[str, str]) -> Iterator[Callable[[str, dict], dict]]:
    """Run `dagster dev` on the instance in env["DAGSTER_HOME"]; yield a GraphQL caller."""
    port = free_port()
    server = subprocess.Popen(
        [*DAGSTER, "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # dagster dev ignores SIGINT unless restored (STACK.md)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    url = f"http://127.0.0.1:{port}"

    def gql(query: str, variables: dict) -> dict:
        r = requests.post(
            f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        r.raise_for_status()
        return r.json()["data"]

    try:
        deadline = time.time() + 120
        while True:
            try:
                requests.get(f"{url}/server_info", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield gql
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def backfill(
    gql, assets: list[str], run_config: dict | None = None, timeout_s: float = 900
) -> None:
    """Backfill every partition of `assets`, as the UI's Materialize -> all partitions does;
    wait for the daemon to finish it and assert that it succeeded."""
    from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

    params = {"assetSelection": [{"path": [a]} for a in assets], "allPartitions": True}
    if run_config:
        params["runConfigData"] = run_config
    launched = gql(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = gql(BACKFILL_STATUS, {"id": result["backfillId"]})["partitionBackfillOrError"]
        if status["status"] in (
            "COMPLETED",
            "COMPLETED_SUCCESS",
            "FAILED",
            "COMPLETED_FAILED",
            "CANCELED",
        ):
            break
        time.sleep(3)
    assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status
