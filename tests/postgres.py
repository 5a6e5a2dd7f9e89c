"""A throwaway PostgreSQL server for tests, from the binaries installed on the machine
(initdb, pg_ctl): data in a temporary folder, listening on 127.0.0.1 at a free port, trust
authentication, stopped and removed afterwards. As root it runs as the `postgres` user
(PostgreSQL refuses to run as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(
    db: str = "dagster", user: str = "dagster", extra_dbs: tuple[str, ...] = ()
) -> Iterator[dict[str, str]]:
    """Start a server; yield the DAGSTER_PG_* environment for deploy/dagster.yaml (and
    create `extra_dbs` beside `db`, e.g. one for MLflow)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"PostgreSQL's {tool} is not on PATH: install PostgreSQL 15")
    folder = Path(tempfile.mkdtemp(prefix="vidistill-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)

    run("initdb", "-D", str(data), "-U", user, "-A", "trust", "--no-sync")
    run(
        "pg_ctl",
        "-D",
        str(data),
        "-l",
        str(folder / "server.log"),
        "-w",
        "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
        "start",
    )
    try:
        for name in (db, *extra_dbs):
            run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", user, name)
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": user,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": db,
        }
    finally:
        subprocess.run(
            [*as_user, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)
