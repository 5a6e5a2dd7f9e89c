"""Dagster on this machine, as a user runs it: `dagster dev` (webserver + daemon) on the
project's instance, and asset backfills launched through the webserver's GraphQL API exactly as
the UI's "Materialize all" launches them; the daemon, the run queue and the `gpu` pool decide
what runs side by side. The demo and the UI tests drive Dagster through this module."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model_code.runtime import settings
from model_code.runtime.with_parent import stop_with_parent

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAGSTER = [sys.executable, "-m", "dagster"]
BACKFILL_DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status numPartitions }
  ... on PythonError { message } } }"""
CANCEL_BACKFILL = """
mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }"""


def prepare_home(home: str | Path | None = None) -> Path:
    """A DAGSTER_HOME to run on: created if new, with the project's dagster.yaml (run queue,
    pools, run monitoring) unless it has its own."""
    import shutil

    home = home or settings.DAGSTER_HOME.get()
    if not home:
        raise ValueError("set $DAGSTER_HOME: the folder of the Dagster instance to run on")
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def prepare_instance(instance, clip_source, seeds: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """What a backfill needs to exist before it is launched (an asset backfill targets the
    partitions registered at its launch): seed "0" and `seeds` in `seeds`, and a `clip_shards`
    partition for every shard of the source. Idempotent; returns what it added."""
    from assets.corpus import register_new_partitions
    from assets.partitions import DEFAULT_SEEDS, seed_partitions

    wanted = list(dict.fromkeys([*DEFAULT_SEEDS, *seeds]))
    have = set(instance.get_dynamic_partitions(seed_partitions.name))
    new_seeds = [s for s in wanted if s not in have]
    if new_seeds:
        instance.add_dynamic_partitions(seed_partitions.name, new_seeds)
    return {"seeds": new_seeds, "shards": register_new_partitions(instance, clip_source.plan())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Webserver:
    """A running `dagster dev`: its URL and a GraphQL caller."""

    url: str

    def gql(self, query: str, variables: dict | None = None) -> dict:
        import requests

        r = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        r.raise_for_status()
        answer = r.json()
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL error: {answer['errors']}")
        return answer["data"]


def _stops_with_its_parent() -> None:
    """In the child before exec: SIGINT restored, and on Linux sent to it when the process
    that started it dies (a demo killed with `kill -9` takes its `dagster dev` with it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    stop_with_parent(signal.SIGINT)


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[Webserver]:
    """`command` (a Dagster webserver on `port`: `dagster dev`, `vidistill ui`) until the block
    ends; its output goes to `log` (or nowhere). Started in its own session with SIGINT
    restored (dagster dev ignores SIGINT otherwise) and stopped with SIGINT, so its daemon and
    code server stop with it; SIGKILL after 60 s."""
    import requests

    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    server = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env or os.environ.copy(),
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_stops_with_its_parent,  # noqa: PLW1509
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                requests.get(f"{url}/server_info", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"{' '.join(command[1:4])} did not start (see {log or 'its output'})"
                    ) from None
                time.sleep(1)
        yield Webserver(url)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if log:
            out.close()


def dagster_dev(
    env: dict[str, str] | None = None, port: int = 0, log: Path | None = None
) -> contextlib.AbstractContextManager[Webserver]:
    """`dagster dev` (webserver + daemon + code server) on the instance in env's DAGSTER_HOME,
    on `port` (a free one by default), as a `server_process`."""
    port = port or free_port()
    command = [*DAGSTER, "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]
    return server_process(command, port, env=env, log=log)


def target_partitions(
    defs, instance, groups: tuple[str, ...], seeds: tuple[str, ...]
) -> dict[object, list[str] | None]:
    """{asset key: its partitions to materialize (None: unpartitioned)} for every asset of
    `groups`: every registered shard, the given seeds (and for assets with a seed dimension,
    those seeds only), every key of a static dimension."""
    from dagster import DynamicPartitionsDefinition, MultiPartitionsDefinition

    from assets.partitions import seed_partitions

    graph = defs.resolve_asset_graph()
    out: dict[object, list[str] | None] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable or node.group_name not in groups:
            continue
        pdef = node.partitions_def
        if pdef is None:
            out[key] = None
        elif isinstance(pdef, DynamicPartitionsDefinition) and pdef.name == seed_partitions.name:
            out[key] = list(seeds)
        elif isinstance(pdef, MultiPartitionsDefinition):
            keys = pdef.get_partition_keys(dynamic_partitions_store=instance)
            seed_dims = [
                d.name
                for d in pdef.partitions_defs
                if getattr(d.partitions_def, "name", None) == seed_partitions.name
            ]
            out[key] = [k for k in keys if all(k.keys_by_dimension[d] in seeds for d in seed_dims)]
        else:
            out[key] = list(pdef.get_partition_keys(dynamic_partitions_store=instance))
    return out


def missing_partitions(instance, targets: dict) -> dict[object, list[str] | None]:
    """The part of `targets` that Dagster has no materialization of."""
    out = {}
    for key, partitions in targets.items():
        if partitions is None:
            if instance.get_latest_materialization_event(key) is None:
                out[key] = None
            continue
        done = instance.get_materialized_partitions(key)
        todo = [p for p in partitions if p not in done]
        if todo:
            out[key] = todo
    return out


def launch_backfill(
    server: Webserver, partitions: dict, title: str, tags: dict[str, str] | None = None
) -> str:
    """An asset backfill of exactly these (asset key -> partitions) through the webserver, as
    the UI launches one; returns its id."""
    selectors = [
        {
            "assetKey": {"path": list(key.path)},
            "partitions": None
            if keys is None
            else {"ranges": [{"start": str(k), "end": str(k)} for k in keys]},
        }
        for key, keys in partitions.items()
    ]
    params = {
        "partitionsByAssets": selectors,
        "title": title,
        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
    }
    from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

    result = server.gql(LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})[
        "launchPartitionBackfill"
    ]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the backfill was not launched: {result}")
    return result["backfillId"]


def backfill_status(server: Webserver, backfill_id: str) -> str:
    answer = server.gql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if answer["__typename"] != "PartitionBackfill":
        raise RuntimeError(f"backfill {backfill_id}: {answer}")
    return answer["status"]


def cancel_backfill(server: Webserver, backfill_id: str) -> None:
    server.gql(CANCEL_BACKFILL, {"id": backfill_id})


def wait_for_backfill(
    server: Webserver, backfill_id: str, timeout_s: float = 24 * 3600, poll_s: float = 3.0
) -> str:
    """Poll until the backfill ends; its final status."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = backfill_status(server, backfill_id)
        if status in BACKFILL_DONE:
            return status
        time.sleep(poll_s)
    raise TimeoutError(f"backfill {backfill_id} still running after {timeout_s:.0f}s")
