"""End the runs whose process died without telling the instance, and free their pool slots.

    DAGSTER_HOME=... python -m pipelines.free_dead_runs [--dry-run]

A run launched by the UI, a sensor or a backfill is watched by run monitoring (dagster.yaml:
`run_monitoring`, `free_slots_after_run_end_seconds`). A run started in the foreground by
`dagster asset materialize` is not: killed with `kill -9`, it stays STARTED and keeps its `gpu`
slot for good. This command finds the started runs whose steps ran in a process of this machine
that no longer exists (the pid in the run's "Executing steps in process" event), marks them
failed and frees their concurrency slots. Run it on the machine that ran them.
"""

from __future__ import annotations

import argparse
import re
import socket

from model_code.runtime.processes import alive

# the in-process executor's and the multiprocess executor's engine events
_EXECUTING = re.compile(
    r"Executing steps (?:in process|using multiprocess executor: parent process) \(pid: (\d+)\)"
)


def executing_pid(instance, run_id: str) -> int | None:
    """The pid of the process that executes the run's steps, from its engine event."""
    for record in instance.all_logs(run_id):
        match = _EXECUTING.search(record.message or "")
        if match:
            return int(match.group(1))
    return None


def dead_runs(instance) -> list[tuple[str, int]]:
    """(run id, pid) of the started runs whose executing process on this machine is gone."""
    from dagster import DagsterRunStatus, RunsFilter

    found = []
    running = instance.get_runs(
        RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
    )
    for run in running:
        pid = executing_pid(instance, run.run_id)
        if pid is not None and not alive(pid):
            found.append((run.run_id, pid))
    return found


def free_dead_runs(instance, dry_run: bool = False) -> list[str]:
    """Mark each dead run failed and free its concurrency slots; return their ids."""
    freed = []
    for run_id, pid in dead_runs(instance):
        if not dry_run:
            run = instance.get_run_by_id(run_id)
            instance.report_run_failed(
                run,
                f"its process (pid {pid} on {socket.gethostname()}) "
                "is gone: ended by pipelines.free_dead_runs",
            )
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        freed.append(run_id)
    return freed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    args = parser.parse_args(argv)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        freed = free_dead_runs(instance, args.dry_run)
    verb = "would end" if args.dry_run else "ended"
    print(
        f"{verb} {len(freed)} dead run(s) and freed their slots"
        + "".join(f"\n  {run_id}" for run_id in freed)
    )


if __name__ == "__main__":
    main()
