"""The production instance (deploy/dagster.yaml) on a throwaway PostgreSQL server: a backfill
of the 8 embedded shards as 8 runs, 4 at once, through the daemon's run queue; its runs,
events and schedule tables are in PostgreSQL, not in a SQLite fallback under DAGSTER_HOME."""

import os
import shutil
import subprocess
import time

import pytest
from dagster_ui import DAGSTER, ROOT, backfill, dagster_dev
from postgres import postgres_server


def _unwrapped(storage, part: str):
    """The storage class doing the work: DagsterInstance may hold a Legacy*Storage that
    wraps a whole DagsterStorage, whose `part` (run_storage, ...) is the real one."""
    inner = getattr(storage, "_storage", None)
    return getattr(inner, part) if inner is not None else storage


def _in_server(pg: dict[str, str], run_ids: list[str]) -> dict[str, object]:
    """What the PostgreSQL server itself holds: which of Dagster's tables exist, and which
    of `run_ids` its `runs` and `event_logs` tables know."""
    import psycopg2

    with (
        psycopg2.connect(
            host=pg["DAGSTER_PG_HOST"],
            port=pg["DAGSTER_PG_PORT"],
            user=pg["DAGSTER_PG_USER"],
            dbname=pg["DAGSTER_PG_DB"],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {name for (name,) in cur.fetchall()}
        found: dict[str, object] = {"tables": tables}
        for table in ("runs", "event_logs"):
            if table in tables:
                cur.execute(
                    f"SELECT DISTINCT run_id FROM {table} WHERE run_id = ANY(%s)", (run_ids,)
                )
                found[table] = {run_id for (run_id,) in cur.fetchall()}
        return found


@pytest.mark.slow
def test_a_multi_run_backfill_on_postgres_runs_four_at_once_and_loses_nothing(
    tmp_path, monkeypatch
):
    from dagster import DagsterInstance, DagsterRunStatus

    from resources.catalog import Catalog
    from resources.tracking import MlflowTracking

    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with postgres_server(extra_dbs=("mlflow",)) as pg:
        env = {
            **os.environ,
            **pg,
            "DAGSTER_HOME": str(home),
            "VIDISTILL_DATA_ROOT": str(data),
            "DAGSTER_MAX_CONCURRENT_RUNS": "4",
            "VIDISTILL_PARTITIONS_PER_RUN": "1",
        }
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
        started = time.time()
        with dagster_dev(env) as gql:
            backfill(gql, ["clip_shards"], timeout_s=600)
        print(f"8-partition backfill on PostgreSQL, 4 runs at once: {time.time() - started:.1f}s")
        for name, value in pg.items():
            monkeypatch.setenv(name, value)
        with DagsterInstance.from_config(str(home)) as instance:
            records = [
                r
                for r in instance.get_run_records()
                if "clip_shards" in str(r.dagster_run.asset_selection)
            ]
            storages = {
                "run_storage": type(_unwrapped(instance.run_storage, "run_storage")),
                "event_log_storage": type(
                    _unwrapped(instance.event_log_storage, "event_log_storage")
                ),
                "schedule_storage": type(_unwrapped(instance.schedule_storage, "schedule_storage")),
            }
        run_ids = [r.dagster_run.run_id for r in records]
        server = _in_server(pg, run_ids)
        # MLflow's backend store on the same server, in its own database
        tracking = MlflowTracking(
            root=str(data),
            tracking_uri=(
                f"postgresql://{pg['DAGSTER_PG_USER']}@127.0.0.1:{pg['DAGSTER_PG_PORT']}/mlflow"
            ),
        )
        with tracking.run("on-postgres", params={"lr": 0.1}) as run:
            run.log_metrics({"loss": 1.5}, 1)
        logged = tracking.client().get_run(run.run_id).data
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    assert storages == {
        "run_storage": PostgresRunStorage,
        "event_log_storage": PostgresEventLogStorage,
        "schedule_storage": PostgresScheduleStorage,
    }
    # the server holds the runs and their events, and the schedule storage's tables
    assert {"runs", "event_logs", "instigators", "job_ticks"} <= server["tables"], server
    assert server["runs"] == server["event_logs"] == set(run_ids)
    assert len(records) == 8
    assert {r.dagster_run.status for r in records} == {DagsterRunStatus.SUCCESS}
    spans = [(r.start_time, r.end_time) for r in records]
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert 2 <= overlap <= 4  # runs overlapped, never more than the queue allows
    counts = (
        Catalog(root=str(data))
        .query(
            "SELECT count(*) AS rows, count(DISTINCT key) AS keys, count(DISTINCT partition) AS "
            "partitions FROM clips"
        )
        .to_dict("records")[0]
    )
    assert counts == {"rows": 1200, "keys": 1200, "partitions": 8}
    assert logged.metrics == {"loss": 1.5} and logged.params == {"lr": "0.1"}
