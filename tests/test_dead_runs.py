"""A run killed with `kill -9` must not keep the `gpu` pool: launched as the UI launches it
(`dagster dev`, the run launcher), a short training is killed (run worker, step process,
torchrun and rank, as a crashed machine would) while it writes its checkpoint; run monitoring
ends the run and frees its slot, the checkpoint folder is absent or whole (never half-written),
and the next run of the asset publishes a whole one and removes the staging folder left behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster_ui import DAGSTER, ROOT, dagster_dev

from model_code.models.lineage import folder_hash, read_lineage
from pipelines.free_dead_runs import executing_pid

LAUNCH = """
mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""

SLOW = {"steps": 5000, "text_steps": 5000, "image_examples": 64}  # far longer than the test
QUICK = {"steps": 2, "text_steps": 2, "image_examples": 8, "batch_size": 4}


def _launch(gql, config: dict) -> str:
    params = {
        "selector": {
            "repositoryLocationName": "pipelines.definitions",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["image_vlm"]}],
        },
        "runConfigData": {"ops": {"image_vlm": {"config": config}}},
    }
    result = gql(LAUNCH, {"params": params})["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def _wait(what: str, check, timeout_s: float = 180, every_s: float = 1):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = (Path("/proc") / entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _writing(checkpoints: Path, name: str) -> list[str]:
    """The entries of `checkpoints` that are `name`'s folder or a staging folder of it."""
    try:
        return [e for e in os.listdir(checkpoints) if name in e]
    except FileNotFoundError:
        return []


def _assert_whole(folder: Path) -> dict:
    """A published checkpoint: its lineage names the weights it holds, and the last file the
    trainer writes into it (the training curves) is there; returns the lineage."""
    files = sorted(os.listdir(folder))
    assert "lineage.json" in files, f"{folder} is half-written: it holds only {files}"
    lineage = read_lineage(folder)
    assert lineage["version"] == folder_hash(folder), f"{folder}: weights are not the lineage's"
    assert (folder / "training_curves.png").exists(), f"{folder} lacks its training curves"
    return lineage


@pytest.mark.slow
def test_a_run_killed_while_publishing_leaves_no_half_checkpoint_and_frees_its_slot(
    tmp_path, monkeypatch
):
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDISTILL_DATA_ROOT": str(data)}
    subprocess.run(
        [*DAGSTER, "instance", "concurrency", "set", "gpu", "1"],
        env=env,
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance, dagster_dev(env) as gql:

        def status(run_id: str):
            return instance.get_run_by_id(run_id).status

        def gpu():
            return instance.event_log_storage.get_concurrency_info("gpu")

        doomed = _launch(gql, QUICK)  # short enough to publish, unless killed
        _wait("the first run to hold the gpu slot", lambda: doomed in gpu().active_run_ids)
        worker = _wait("its run worker", lambda: executing_pid(instance, doomed))
        rank = _wait(
            "its training rank",
            lambda: [
                p
                for p in _descendants(worker)
                if "model_code.training.train_vlm" in _cmdline(p)
                and "torch.distributed.run" not in _cmdline(p)
            ],
            every_s=0.2,
        )
        tree = [worker, *_descendants(worker)]
        checkpoints = data / "checkpoints"
        caught = _wait(
            "the training to start writing its checkpoint",
            lambda: _writing(checkpoints, "image_vlm"),
            timeout_s=240,
            every_s=0.001,
        )
        for pid in [*rank, *reversed(tree)]:  # the writer first, then the rest, as a crash
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait(
            "run monitoring to end the killed run",
            lambda: status(doomed) in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED),
        )
        _wait("the gpu slot to be free again", lambda: not gpu().active_run_ids, timeout_s=120)
        assert instance.get_latest_materialization_event(AssetKey("image_vlm")) is None
        if (checkpoints / "image_vlm").exists():  # published before the kill: whole, not half
            _assert_whole(checkpoints / "image_vlm")
        left = [e for e in _writing(checkpoints, "image_vlm") if e != "image_vlm"]
        # the kill came while the checkpoint was being written, not after it was published
        assert left, f"killed after the publish (saw {caught}): the test proved nothing"

        after = _launch(gql, QUICK)
        ended = _wait(
            "the next run to finish",
            lambda: (
                status(after)
                if status(after) in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
                else None
            ),
            timeout_s=300,
        )
        assert ended == DagsterRunStatus.SUCCESS
        published = instance.get_latest_materialization_event(AssetKey("image_vlm"))
    # the rerun publishes a whole folder and removes the staging folder the killed run left
    lineage = _assert_whole(checkpoints / "image_vlm")
    assert _writing(checkpoints, "image_vlm") == ["image_vlm"]
    metadata = published.asset_materialization.metadata
    assert metadata["version"].value == lineage["version"]


@pytest.mark.slow
def test_a_killed_cli_run_stops_its_trainer_and_one_command_ends_it_and_frees_its_slot(
    tmp_path, monkeypatch
):
    from dagster import DagsterInstance, DagsterRunStatus

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDISTILL_DATA_ROOT": str(tmp_path / "data")}
    subprocess.run(
        [*DAGSTER, "instance", "concurrency", "set", "gpu", "1"],
        env=env,
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    cli = subprocess.Popen(
        [
            *DAGSTER,
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "image_vlm",
            "--config-json",
            json.dumps({"ops": {"image_vlm": {"config": SLOW}}}),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with DagsterInstance.get() as instance:

        def gpu():
            return instance.event_log_storage.get_concurrency_info("gpu")

        try:
            (run_id,) = _wait("the CLI run to hold the gpu slot", lambda: gpu().active_run_ids)
            _wait(
                "its training rank",
                lambda: any(
                    "model_code.training.train_vlm" in _cmdline(p) for p in _descendants(cli.pid)
                ),
                every_s=0.2,
            )
            trainers = [p for p in _descendants(cli.pid) if "model_code." in _cmdline(p)]
            steps = {
                _parent(p) for p in trainers if "model_code.runtime.with_parent" in _cmdline(p)
            }
            below = [*steps, *trainers]  # the step process, torchrun and the rank
        finally:
            cli.kill()  # kill -9: nothing in the CLI process gets to clean up
            cli.wait()
        # what it started stops with it: no trainer goes on using the device of a dead run
        _wait(
            "the step process, torchrun and the rank to stop with the killed run",
            lambda: not [p for p in below if _cmdline(p)],
            timeout_s=60,
        )
        time.sleep(2)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED
        assert gpu().active_run_ids == {run_id}  # stuck: no monitor watches a foreground run

        free = [sys.executable, "-m", "pipelines.free_dead_runs"]
        listed = subprocess.run(
            [*free, "--dry-run"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout
        assert run_id in listed and gpu().active_run_ids == {run_id}
        ended = subprocess.run(
            free, cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout
        assert run_id in ended
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
        assert not gpu().active_run_ids


def test_a_run_whose_process_is_a_zombie_is_ended():
    """A killed run worker whose parent died too is a zombie until init reaps it (~2 s here):
    free_dead_runs must count it dead, or a demo rerun finds the old runs alive, leaves them
    STARTED and its backfill queues behind them for good."""
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun

    from pipelines.free_dead_runs import free_dead_runs

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.time() < deadline, "the killed child never became a zombie"
        time.sleep(0.05)
    try:
        with DagsterInstance.ephemeral() as instance:
            run = instance.add_run(
                DagsterRun(
                    job_name="__ASSET_JOB", run_id="dead0000", status=DagsterRunStatus.STARTED
                )
            )
            instance.report_engine_event(f"Executing steps in process (pid: {worker.pid})", run)
            alive = instance.add_run(
                DagsterRun(
                    job_name="__ASSET_JOB", run_id="live0000", status=DagsterRunStatus.STARTED
                )
            )
            instance.report_engine_event(f"Executing steps in process (pid: {os.getpid()})", alive)
            assert free_dead_runs(instance) == ["dead0000"]
            assert instance.get_run_by_id("dead0000").status == DagsterRunStatus.FAILURE
            assert instance.get_run_by_id("live0000").status == DagsterRunStatus.STARTED
    finally:
        worker.wait()
