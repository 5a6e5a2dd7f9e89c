"""The whole pipeline on the embedded default corpus through Dagster (so every run,
materialization and check is in the instance the UI shows), ending with the benchmark table.

    .venv/bin/python -m pipelines.demo     (DAGSTER_HOME set by .ci/demo)

The main lane runs the VLM chain in this process. The branches that do not wait for it (the
alt-text and ground-truth dual encoders; the per-frame baseline once image_vlm exists) run
meanwhile in a second process (`--lane second`), as a second worker of a Dagster executor
would; the tiny models train on one core each. The corpus is captioned by the command a user
types: a CLI backfill of every partition in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from assets.partitions import CAPTION_SOURCES
from pipelines.definitions import PROJECT_ROOT, defs

ASSETS = list(defs.assets)
CONSOLE = sys.stdout  # the terminal; Dagster's and the trainers' output go to the log file
PROGRESS_EVERY_S = 30.0
OUTPUTS: list[str] = []  # the paths the current step's materializations reported
RUNS: list[str] = []  # and its Dagster runs


def store_path(name: str):
    return defs.resources["store"].path(name)


def say(*parts) -> None:
    """A line for the person at the terminal."""
    print(*parts, file=CONSOLE, flush=True)


def start_console(verbose: bool = False, console_fd: int = -1) -> None:
    """The terminal gets one line a step; the rest goes to <data root>/demo.log (named first),
    unless `verbose`. A second lane writes its lines to the main lane's terminal (console_fd)."""
    global CONSOLE
    if console_fd >= 0:  # the second lane: its stdout/stderr are the main lane's log already
        CONSOLE = os.fdopen(console_fd, "w", buffering=1)
    elif not verbose:
        log = defs.resources["store"].path("demo.log")
        say(f"[demo] Dagster's and the trainers' logs: {log}")
        quiet(log)


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


SCORED = ["dual_encoder", "benchmark_scores"]
SECOND_LANE_SOURCES = ("alt_text", "ground_truth")


def _materialize(
    instance,
    resources,
    names: list[str],
    partition_key: str | None = None,
    run_config: dict | None = None,
) -> list[str]:
    """Materialize; a failed asset check is reported and the demo goes on (its outputs are
    written before the check runs), any other failure stops it."""
    result = materialize(
        ASSETS,
        selection=names,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config=run_config,
    )
    failed = [
        f"{c.asset_key.to_user_string()}[{partition_key}] {c.check_name}: {c.description}"
        for c in result.get_asset_check_evaluations()
        if not c.passed
    ]
    for event in result.get_asset_materialization_events():
        path = event.materialization.metadata.get("path")
        if path is not None:
            OUTPUTS.append(str(path.value))
    RUNS.append(result.run_id)
    if not result.success and not failed:
        raise SystemExit(f"materializing {names} [{partition_key}] failed; see the run in the UI")
    for f in failed:
        say(f"[demo] check failed: {f}")
    return failed


def _cli_backfill(instance, names: list[str], partitions: list[str]) -> list[str]:
    """Caption every partition as a user would: `dagster asset materialize` over the range in a
    single run (one model load per captioner). Failed quality checks are reported, not fatal."""
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "pipelines.definitions",
        "--select",
        ",".join(names),
        "--partition-range",
        f"{partitions[0]}...{partitions[-1]}",
    ]
    say(f"[demo] VIDISTILL_PARTITIONS_PER_RUN=0 {' '.join(cmd[2:])}")
    started = time.time()
    done = subprocess.run(
        cmd,
        env={**os.environ, "VIDISTILL_PARTITIONS_PER_RUN": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    keys = [AssetCheckKey(AssetKey(n), "caption_quality") for n in names]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failed = []
    for key in keys:
        record = records.get(key)
        fresh = record is not None and record.event and record.create_timestamp >= started
        evaluation = record.event.asset_check_evaluation if fresh else None
        if evaluation is None:
            raise SystemExit(
                f"captioning backfill wrote no {key.to_user_string()} check:\n{done.stderr[-3000:]}"
            )
        if not evaluation.passed:
            failed.append(f"{key.to_user_string()}: {evaluation.description}")
            say(f"[demo] check failed: {failed[-1]}")
    if done.returncode and not failed:
        raise SystemExit(f"materializing {names} {partitions} failed:\n{done.stderr[-3000:]}")
    return failed


class Demo:
    def __init__(self, lane: str):
        self.lane = lane
        self.instance = DagsterInstance.get()
        self.resources = dict(defs.resources)
        self.failed_checks: list[str] = []

    def shards(self) -> list[str]:
        return self.instance.get_dynamic_partitions("clip_shards")

    def step(
        self,
        label: str,
        names: list[str],
        partitions: list[str | None] = (None,),
        cli: bool = False,
        run_config: dict | None = None,
    ) -> None:
        start = time.perf_counter()
        lane = "" if self.lane == "main" else " (lane 2)"
        done = threading.Event()

        def progress() -> None:  # a line now and then, so a long step is seen to run
            while not done.wait(PROGRESS_EVERY_S):
                say(f"[demo]   ... {label}{lane}: {time.perf_counter() - start:.0f}s")

        ticker = threading.Thread(target=progress, daemon=True)
        ticker.start()
        OUTPUTS.clear()
        RUNS.clear()
        try:
            self._run(names, partitions, cli, run_config)
        finally:
            done.set()
        where = _common_folder(OUTPUTS) or (f"run {RUNS[-1][:8]} in the Dagster UI" if RUNS else "")
        say(
            f"[demo] {label}{lane}: {time.perf_counter() - start:.1f}s"
            + (f" -> {where}" if where else "")
        )

    def _run(self, names, partitions, cli, run_config) -> None:
        if cli:
            self.failed_checks.extend(_cli_backfill(self.instance, names, partitions))
        else:
            for p in partitions:
                self.failed_checks.extend(
                    _materialize(self.instance, self.resources, names, p, run_config)
                )


def _common_folder(paths: list[str]) -> str:
    """Where a step's outputs went: their one path, or the folder they share."""
    if not paths:
        return ""
    if len(set(paths)) == 1:
        return paths[0]
    return os.path.commonpath(paths)


def second_lane(demo: Demo, image_ready) -> None:
    """The branches that do not wait for the VLM chain; frame captions once image_ready()."""
    for source in SECOND_LANE_SOURCES:
        demo.step(f"dual_encoder + benchmark_scores [{source}]", SCORED, [source])
    if not image_ready():
        raise SystemExit("the main lane stopped before image_vlm")
    shards = demo.shards()
    demo.step(f"frame_captions x{len(shards)}", ["frame_captions"], shards)
    demo.step("dual_encoder + benchmark_scores [frame_captions]", SCORED, ["frame_captions"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--start-at",
        default="",
        help="skip the steps before the one whose "
        "label starts with this asset name (they must be materialized); "
        "resumes in one lane",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="after the demo, the paper's "
        "evidence: the caption ladder with 3 seeds, the scaling curve and the "
        "adaptation-order ablation (hours on 2 cores); a rerun resumes after "
        "the last step that finished",
    )
    parser.add_argument(
        "--lane", default="main", choices=("main", "second"), help=argparse.SUPPRESS
    )
    parser.add_argument("--report", default="", help=argparse.SUPPRESS)
    parser.add_argument("--console-fd", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Dagster's event log on the terminal too, instead of only in <data root>/demo.log",
    )
    args = parser.parse_args(argv)
    start_console(args.verbose, args.console_fd)
    import torch

    if args.lane == "second":  # waits for a line on stdin: image_vlm is materialized
        torch.set_num_threads(1)
        demo = Demo("second")
        second_lane(demo, lambda: bool(sys.stdin.readline()))
        with open(args.report, "w") as f:
            json.dump(demo.failed_checks, f)
        return

    demo = Demo("main")
    try:
        if args.paper:
            return paper(demo, args.start_at)
        run_demo(demo, args.start_at)
    except SystemExit as stop:  # the reason on the terminal too, not only in the log
        if isinstance(stop.code, str):
            say(f"[demo] stopped: {stop.code.splitlines()[0]}")
        raise


def run_demo(demo: Demo, start_at: str = "") -> None:
    """The default demo: the whole graph once, one seed, then its tables."""
    import torch

    total = time.perf_counter()
    labels = [
        "clip_shard_plan",
        "clip_shards",
        "video_caption_data",
        "image_vlm",
        "second lane",
        "adapted_encoder",
        "instruction_data",
        "instruction_tuned_lm",
        "captioner_eval",
        "pseudo_captions",
        "dual_encoder [pseudo_captions]",
        "caption_statistics",
        "ablation_table",
    ]
    start = 0
    if start_at:
        start = next((i for i, x in enumerate(labels) if x.startswith(start_at)), None)
        if start is None:
            raise SystemExit(f"--start-at {start_at!r} matches none of {labels}")
    todo = set(labels[start:])
    lane = None
    if "clip_shard_plan" in todo:
        demo.step("clip_shard_plan", ["clip_shard_plan"])
    if "clip_shards" in todo:
        demo.step(f"clip_shards x{len(demo.shards())}", ["clip_shards"], demo.shards())
    if "video_caption_data" in todo:
        demo.step(
            "video_caption_data + retrieval_benchmark",
            ["video_caption_data", "retrieval_benchmark"],
        )
    if "image_vlm" in todo:  # the second lane runs beside it, one core each
        report = demo.resources["store"].path("demo_second_lane.json")
        report.unlink(missing_ok=True)
        console = CONSOLE.fileno()
        lane = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.demo",
                "--lane",
                "second",
                "--report",
                str(report),
                "--console-fd",
                str(console),
            ],
            stdin=subprocess.PIPE,
            text=True,
            pass_fds=(console,),
            cwd=PROJECT_ROOT,  # the same code, so the same data root, as this process
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        demo.step("image_vlm", ["image_vlm"])
        try:
            lane.stdin.write("image_vlm\n")
            lane.stdin.close()
        except BrokenPipeError:  # it stopped already: said below
            pass
    elif "second lane" in todo:
        second_lane(demo, lambda: True)
    if "adapted_encoder" in todo:
        demo.step(
            "adapted_encoder (stage 1) + visual_adapted_vlm",
            ["adapted_encoder", "visual_adapted_vlm"],
        )
    if "instruction_data" in todo:
        demo.step("instruction_data", ["instruction_data"])
    if "instruction_tuned_lm" in todo:
        demo.step(
            "instruction_tuned_lm (stage 2) + video_vlm", ["instruction_tuned_lm", "video_vlm"]
        )
    if lane is not None:  # both cores for what follows
        if lane.wait() != 0 or not report.exists():
            raise SystemExit(
                f"the second lane failed; see its runs in the UI and {store_path('demo.log')}"
            )
        demo.failed_checks.extend(json.loads(report.read_text()))
        torch.set_num_threads(threads)
    if "captioner_eval" in todo:
        demo.step("captioner_eval", ["captioner_eval"])
    if "pseudo_captions" in todo:
        shards = demo.shards()
        demo.step(
            f"pseudo_captions x{len(shards)} (CLI backfill)", ["pseudo_captions"], shards, cli=True
        )
    if "dual_encoder [pseudo_captions]" in todo:
        demo.step("dual_encoder + benchmark_scores [pseudo_captions]", SCORED, ["pseudo_captions"])
    if "caption_statistics" in todo:
        demo.step("caption_statistics", ["caption_statistics"])
    demo.step("ablation_table + video_index", ["ablation_table", "video_index"])
    wall = time.perf_counter() - total

    store = demo.resources["store"]
    say("\n== captioner_eval (held-out clips) ==")
    say(store.path("captioner_eval.md").read_text())
    say("\n== caption statistics (corpus) ==")
    _print_json_table(store.path("caption_statistics.json"))
    say("\n== ablation table: dual encoder by caption source (held-out benchmark) ==")
    say(store.path("ablation_table.md").read_text())
    for f in demo.failed_checks:
        say(f"failed check: {f}")
    say(f"\nwall time: {wall / 60:.1f} min; data root: {store.root}")
    look_next(store)


def look_next(store) -> None:
    """Where to look at the results."""
    say(
        "\nLook next:\n"
        "  vidistill ui        # the Dagster UI: assets, runs, lineage (http://localhost:3000)\n"
        "  vidistill mlflow    # the MLflow UI: curves, tables, plots (http://localhost:5000)\n"
        "  vidistill serve     # the search page (http://127.0.0.1:8080)\n"
        f"  (.venv/bin/vidistill; the full log: {store.path('demo.log')})"
    )


# every caption source but the teacher's (it needs an outside checkpoint), in ladder order
LADDER = tuple(source for source in CAPTION_SOURCES if source != "teacher_captions")
PAPER_SEEDS = (0, 1, 2)
PAPER_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)  # 1%: the paper's "matches all alt-text"


def paper_steps(demo: Demo) -> list[tuple[str, callable]]:
    """The --paper run after the demo, step by step: (label, run)."""

    def scored(source: str, seed: int):
        config = {
            "ops": {
                "dual_encoder": {"config": {"seed": seed}},
                "benchmark_scores": {"config": {"seed": seed}},
            }
        }
        return lambda: demo.step(
            f"dual_encoder + benchmark_scores [{source}] seed {seed}",
            SCORED,
            [source],
            run_config=config,
        )

    steps = [
        (
            "ladder captions",
            lambda: demo.step(
                "stage1_captions + stage1_sampled + pseudo_sampled (CLI backfill)",
                ["stage1_captions", "stage1_sampled", "pseudo_sampled"],
                demo.shards(),
                cli=True,
            ),
        )
    ]
    demo_trained = {"pseudo_captions", *SECOND_LANE_SOURCES, "frame_captions"}  # seed 0
    steps += [
        (f"ladder {source} seed {seed}", scored(source, seed))
        for seed in PAPER_SEEDS
        for source in LADDER
        if seed or source not in demo_trained
    ]
    steps += [
        ("caption_statistics", lambda: demo.step("caption_statistics", ["caption_statistics"])),
        ("ablation_table", lambda: demo.step("ablation_table", ["ablation_table"])),
        (
            "scaling_curve",
            lambda: demo.step(
                "scaling_curve",
                ["scaling_curve"],
                run_config={
                    "ops": {
                        "scaling_curve": {
                            "config": {
                                "fractions": list(PAPER_FRACTIONS),
                                "seeds": list(PAPER_SEEDS),
                            }
                        }
                    }
                },
            ),
        ),
        ("adaptation_order", lambda: demo.step("adaptation_order", ["adaptation_order"])),
    ]
    return steps


def _progress(path) -> list[str]:
    """The --paper steps finished before: paper_progress.json's list of labels (none if absent);
    a file that is not such a list stops the run with its name, rather than being trusted."""
    if not path.exists():
        return []
    try:
        done = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise SystemExit(f"{path} is not JSON ({error}): delete it to start the paper run again")
    if not isinstance(done, list) or not all(isinstance(x, str) for x in done):
        raise SystemExit(f"{path} is not a list of step labels: delete it to start again")
    return done


def paper(demo: Demo, start_at: str = "") -> None:
    """The demo, then the paper's evidence; each finished step is recorded in
    paper_progress.json under the data root, so a rerun resumes after the last one (delete the
    file to start again). Prints the ladder, the curve and the order tables at the end."""
    store = demo.resources["store"]
    progress = store.path("paper_progress.json")
    done = _progress(progress)
    total = time.perf_counter()
    for label, run in [("demo", lambda: run_demo(demo, start_at)), *paper_steps(demo)]:
        if label in done:
            say(f"[paper] {label}: done before")
            continue
        run()
        done.append(label)
        store.write_bytes(progress, json.dumps(done).encode())
    say(f"\n== caption ladder: dual encoder by caption source, {len(PAPER_SEEDS)} seeds ==")
    say(store.path("ablation_table.md").read_text())
    say("\n== captioners: captioning and video QA (held-out clips) ==")
    say(store.path("captioner_eval.md").read_text())
    say("\n== data scaling: t2v R@1 against pseudo-captioned clips ==")
    say(store.path("scaling_curve.md").read_text())
    say(f"plot: {store.path('scaling_curve.png')}")
    say("\n== adaptation order (held-out clips) ==")
    say(store.path("adaptation_order.md").read_text())
    for f in demo.failed_checks:
        say(f"failed check: {f}")
    say(f"\npaper wall time this run: {(time.perf_counter() - total) / 60:.1f} min")
    look_next(store)


def _print_json_table(path) -> None:
    import pandas as pd

    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        say(pd.DataFrame(json.loads(path.read_text())).to_string(index=False))


if __name__ == "__main__":
    main()
