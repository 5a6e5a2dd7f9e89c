"""`vidistill demo`: the recipe on the embedded default corpus, scheduled by Dagster itself.

It prepares the instance (seed 0 and the corpus's shards registered), starts `dagster dev`
(webserver + daemon) and launches one asset backfill of everything in the recipe's groups that
Dagster has no materialization of, as the UI's "Materialize all" does; the run queue and the
`gpu` pool decide what runs side by side. Then it prints the tables. A rerun after Ctrl-C or
`kill -9` launches only what is still missing. `--paper` is the same over the paper's evidence
(the ladder's other rungs, the scaling subsets and the order ablation) and seeds 0, 1 and 2.

    vidistill demo [--paper] [--verbose]        (bash .ci/demo sets the project up first)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time

CONSOLE = sys.stdout  # the terminal; Dagster's and the trainers' output go to the log file
PROGRESS_EVERY_S = 30.0
DEMO_TAG = "vidistill/demo"


def say(*parts) -> None:
    """A line for the person at the terminal."""
    print(*parts, file=CONSOLE, flush=True)


def quiet(log_path) -> None:
    """From here on this process's stdout and stderr (file descriptors 1 and 2, so child
    processes too) go to `log_path`; `say` keeps writing to the terminal."""
    global CONSOLE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    CONSOLE = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)


def run_threads(instance) -> int:
    """Torch threads for each run: the cores shared by the runs the queue lets run at once
    (two 1-thread processes beat one 2-thread process on these small models: every step on
    2 threads took 18.8 min against 14.3, docs/benchmarks.md, "Where the demo's time goes")."""
    runs = instance.get_concurrency_config().run_queue_config.max_concurrent_runs or 1
    return max(1, (os.cpu_count() or 1) // max(1, runs))


def stop_leftovers(instance) -> list[str]:
    """Runs of an earlier demo that still run after it was killed (their workers outlive the
    `dagster dev` that launched them): their process group, the killed demo's `dagster dev`
    and what it started, is killed, so free_dead_runs then marks them failed and frees their
    slots. Nothing else is touched: only runs this project's demo launched."""
    import signal

    from dagster import DagsterRunStatus, RunsFilter

    from model_code.runtime.processes import alive
    from pipelines.free_dead_runs import executing_pid

    stopped, pids = [], []
    running = [
        r
        for r in instance.get_runs(
            RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
        )
        if DEMO_TAG in r.tags
    ]
    for run in running:
        pid = executing_pid(instance, run.run_id)
        if pid is None or not alive(pid):
            continue
        group = os.getpgid(pid)
        if group != os.getpgid(0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            stopped.append(run.run_id)
            pids.append(pid)
    deadline = time.time() + 30.0  # killed: gone (or zombies) before free_dead_runs looks
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    return stopped


def cancel_earlier_demos(instance) -> list[str]:
    """Backfills of an earlier demo that never ended (its process was killed): canceled before
    the daemon starts, so it does not resume them beside the new one."""
    from dagster._core.execution.backfill import BulkActionStatus

    canceled = []
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        if DEMO_TAG in backfill.tags:
            instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELED))
            canceled.append(backfill.backfill_id)
    return canceled


def _label(run) -> str:
    """`assets [partition]` of a run, for its line on the terminal."""
    assets = sorted(k.to_user_string() for k in (run.asset_selection or []))
    start = run.tags.get("dagster/asset_partition_range_start")
    end = run.tags.get("dagster/asset_partition_range_end")
    partition = run.tags.get("dagster/partition") or (
        start if start == end else f"{start}...{end}" if start else ""
    )
    return " + ".join(assets) + (f" [{partition}]" if partition else "")


def _output(instance, run) -> str:
    """Where the run's first materialization says its output went (its `path` metadata)."""
    from dagster import DagsterEventType

    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        path = entry.asset_materialization.metadata.get("path")
        if path is not None:
            return str(path.value)
    return ""


def follow(instance, backfill_id: str, stop: threading.Event) -> dict:
    """Until `stop`: a line per run of the backfill as it ends (what, how long, where its
    output went), and every PROGRESS_EVERY_S a line with what is running."""
    from dagster import DagsterRunStatus, RunsFilter

    seen: set[str] = set()
    counts = {"success": 0, "failure": 0}
    start = last = time.time()
    ended = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    while not stop.wait(2.0):
        records = instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))
        running = []
        for record in records:
            run = record.dagster_run
            if run.status in ended and run.run_id not in seen:
                seen.add(run.run_id)
                took = (record.end_time or time.time()) - (
                    record.start_time or record.create_timestamp.timestamp()
                )
                ok = run.status == DagsterRunStatus.SUCCESS
                counts["success" if ok else "failure"] += 1
                where = _output(instance, run) if ok else f"FAILED: see run {run.run_id[:8]}"
                say(f"[demo] {_label(run)}: {took:.1f}s" + (f" -> {where}" if where else ""))
            elif run.status == DagsterRunStatus.STARTED:
                running.append(_label(run))
        if time.time() - last >= PROGRESS_EVERY_S:
            last = time.time()
            say(
                f"[demo]   ... {time.time() - start:.0f}s: {len(seen)} runs done, running: "
                + (", ".join(running) or "none (queued or between steps)")
            )
    return counts


def materialize_missing(defs, instance, groups, seeds, title: str, log) -> dict:
    """Launch one backfill of what `groups` lack (at `seeds`) and follow it to its end."""
    from pipelines.local import (
        dagster_dev,
        launch_backfill,
        missing_partitions,
        target_partitions,
        wait_for_backfill,
    )

    targets = target_partitions(defs, instance, groups, seeds)
    todo = missing_partitions(instance, targets)
    count = lambda d: sum(1 if p is None else len(p) for p in d.values())
    say(
        f"[demo] {count(targets) - count(todo)} of {count(targets)} asset partitions in "
        f"{', '.join(groups)} are materialized already; launching the rest ({count(todo)})"
    )
    if not todo:
        return {"status": "NOTHING_TO_DO", "success": 0, "failure": 0}
    canceled = cancel_earlier_demos(instance)
    if canceled:
        say(f"[demo] canceled the unfinished backfill(s) of an earlier demo: {', '.join(canceled)}")
    env = {**os.environ, "OMP_NUM_THREADS": str(run_threads(instance))}
    with dagster_dev(env, log=log) as server:
        backfill_id = launch_backfill(server, todo, title=title, tags={DEMO_TAG: title})
        say(f"[demo] backfill {backfill_id}: {server.url}/runs/b/{backfill_id} while it runs")
        stop = threading.Event()
        counts: dict = {}
        follower = threading.Thread(
            target=lambda: counts.update(follow(instance, backfill_id, stop)), daemon=True
        )
        follower.start()
        try:
            status = wait_for_backfill(server, backfill_id)
        finally:
            time.sleep(2.5)  # the follower's last look at the runs
            stop.set()
            follower.join()
    return {"status": status, "backfill": backfill_id, **counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vidistill demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's evidence too: the ladder's other rungs, the scaling subsets and "
        "the adaptation-order ablation, over seeds 0, 1 and 2 (hours on 2 cores)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Dagster's output on the terminal too, instead of only in <data root>/demo.log",
    )
    args = parser.parse_args(argv)

    from dagster import DagsterInstance

    from assets.partitions import (
        DEFAULT_SEEDS,
        PAPER_GROUP,
        PAPER_SEEDS,
        RECIPE_GROUPS,
        TEACHER_GROUP,
    )
    from model_code.runtime import settings
    from model_code.runtime.environment import machine_line, machine_summary
    from pipelines.definitions import defs
    from pipelines.free_dead_runs import free_dead_runs
    from pipelines.local import prepare_home, prepare_instance

    store = defs.resources["store"]
    log = store.report("demo.log")
    if not args.verbose:
        say(f"[demo] Dagster's and the trainers' logs: {log}")
        quiet(log)
    total = time.perf_counter()
    prepare_home()
    instance = DagsterInstance.get()
    machine = machine_summary(run_threads(instance))  # before anything else loads the cores
    seeds = PAPER_SEEDS if args.paper else DEFAULT_SEEDS
    groups = RECIPE_GROUPS
    if args.paper:
        groups += (PAPER_GROUP,) + ((TEACHER_GROUP,) if settings.TEACHER.is_set() else ())
    added = prepare_instance(instance, defs.resources["clip_source"], seeds)
    if added["shards"] or added["seeds"]:
        say(
            f"[demo] registered {len(added['shards'])} shard and {len(added['seeds'])} seed "
            "partitions"
        )
    stopped = stop_leftovers(instance)
    if stopped:
        say(f"[demo] stopped {len(stopped)} run(s) an earlier, killed demo left running")
    freed = free_dead_runs(instance)
    if freed:
        say(f"[demo] marked {len(freed)} run(s) of a killed process failed: {', '.join(freed)}")
    result = materialize_missing(
        defs,
        instance,
        groups,
        seeds,
        "vidistill demo --paper" if args.paper else "vidistill demo",
        log,
    )
    wall = time.perf_counter() - total
    if result["status"] not in ("COMPLETED_SUCCESS", "COMPLETED", "NOTHING_TO_DO"):
        say(
            f"[demo] stopped: backfill {result.get('backfill')} ended {result['status']} "
            f"({result.get('failure', 0)} failed runs); see them in `vidistill ui` and {log}"
        )
        raise SystemExit(1)
    print_tables(store, args.paper)
    say(
        f"\nmachine: {machine_line(machine)}\n"
        f"wall time: {wall / 60:.1f} min, {result.get('success', 0)} runs; data root: {store.root}"
    )
    look_next(store)


def print_tables(store, paper: bool) -> None:
    say("\n== captioner_eval (held-out clips) ==")
    say(store.report("captioner_eval.md").read_text())
    say("\n== caption statistics (corpus) ==")
    _print_json_table(store.report("caption_statistics.json"))
    say("\n== ablation table: dual encoder by caption source (held-out benchmark) ==")
    say(store.report("ablation_table.md").read_text())
    if paper:
        say("\n== data scaling: t2v R@1 against pseudo-captioned clips ==")
        say(store.report("scaling_curve.md").read_text())
        say(f"plot: {store.report('scaling_curve.png')}")
        say("\n== adaptation order (held-out clips) ==")
        say(store.report("adaptation_order.md").read_text())
    say(
        "\nSingle-seed figures move with the machine (its CPU's kernels change the training "
        "numerics): compare sources over seeds (vidistill demo --paper), as docs/results.md's "
        "reference table does."
    )


def look_next(store) -> None:
    """Where to look at the results."""
    say(
        "\nLook next:\n"
        "  vidistill ui        # the Dagster UI: assets, runs, lineage (http://localhost:3000)\n"
        "  vidistill mlflow    # the MLflow UI: curves, tables, plots (http://localhost:5000)\n"
        "  vidistill serve     # the search page (http://127.0.0.1:8080)\n"
        f"  (.venv/bin/vidistill; the full log: {store.report('demo.log')})"
    )


def _print_json_table(path) -> None:
    import pandas as pd

    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        say(pd.DataFrame(json.loads(path.read_text())).to_string(index=False))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
