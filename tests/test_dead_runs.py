"""A run killed with `kill -9` must not keep the `gpu` pool: launched as the UI launches it
(`dagster dev`, the run launcher), its run worker is killed mid-step; run monitoring ends the run
and frees its slot, nothing is published, and the next run of the asset succeeds."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from dagster_ui import DAGSTER, ROOT, dagster_dev

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


def _wait(what: str, check, timeout_s: float = 180):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.mark.slow
def test_a_killed_run_frees_its_gpu_slot_and_the_next_run_succeeds(tmp_path, monkeypatch):
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

        doomed = _launch(gql, SLOW)
        _wait("the first run to hold the gpu slot", lambda: doomed in gpu().active_run_ids)
        pid = _wait("its run worker", lambda: executing_pid(instance, doomed))
        os.kill(pid, signal.SIGKILL)
        _wait(
            "run monitoring to end the killed run",
            lambda: status(doomed) in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED),
        )
        _wait("the gpu slot to be free again", lambda: not gpu().active_run_ids, timeout_s=120)
        assert instance.get_latest_materialization_event(AssetKey("image_vlm")) is None
        assert not (data / "checkpoints" / "image_vlm").exists()  # nothing half-published

        after = _launch(gql, QUICK)
        final = _wait(
            "the next run to finish",
            lambda: (
                status(after)
                if status(after) in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
                else None
            ),
            timeout_s=300,
        )
        assert final == DagsterRunStatus.SUCCESS
    assert (data / "checkpoints" / "image_vlm" / "lineage.json").exists()


@pytest.mark.slow
def test_a_killed_cli_run_is_ended_and_its_slot_freed_by_one_command(tmp_path, monkeypatch):
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
        finally:
            cli.kill()  # kill -9: nothing in the CLI process gets to clean up
            cli.wait()
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
