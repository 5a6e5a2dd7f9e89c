"""The path the UI takes, for tests: `dagster dev` (webserver + daemon) on a free port, and
partition backfills launched with the launchPartitionBackfill GraphQL mutation, through the
same code the demo uses (pipelines.local)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from pipelines.local import DAGSTER, PROJECT_ROOT, Webserver, wait_for_backfill
from pipelines.local import dagster_dev as _dagster_dev

ROOT = PROJECT_ROOT
__all__ = ["DAGSTER", "ROOT", "backfill", "dagster_dev"]


@contextlib.contextmanager
def dagster_dev(env: dict[str, str]) -> Iterator[Callable[[str, dict], dict]]:
    """Run `dagster dev` on the instance in env["DAGSTER_HOME"]; yield a GraphQL caller."""
    with _dagster_dev(env) as server:
        yield server.gql  # a bound method: its __self__ is the server (its URL)


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
    server: Webserver = gql.__self__
    status = wait_for_backfill(server, result["backfillId"], timeout_s=timeout_s)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
