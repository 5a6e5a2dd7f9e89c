"""`vidistill demo` as a user runs it, with tiny settings on a fresh instance: one backfill
that Dagster schedules, the tables at the end, and after `kill -9` a rerun that launches runs
only for what Dagster has not recorded as materialized. Slow: ~10 minutes on 2 cores."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import tiny_environment

ROOT = Path(__file__).resolve().parents[1]


def _materialized(instance) -> set[tuple[str, str | None]]:
    """(asset, partition) of every materialization the instance records."""
    from pipelines.definitions import defs

    done = set()
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if graph.get(key).partitions_def is None:
            if instance.get_latest_materialization_event(key) is not None:
                done.add((key.to_user_string(), None))
        else:
            done |= {(key.to_user_string(), p) for p in instance.get_materialized_partitions(key)}
    return done


def _targets(run) -> set[tuple[str, str | None]]:
    partition = run.tags.get("dagster/partition") or run.tags.get(
        "dagster/asset_partition_range_start"
    )
    return {(k.to_user_string(), partition) for k in run.asset_selection or []}


@pytest.mark.slow
def test_a_demo_killed_mid_way_reruns_only_what_is_missing(tmp_path, monkeypatch):
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    env = tiny_environment(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    demo = [sys.executable, "-m", "pipelines.cli", "demo"]
    first = subprocess.Popen(demo, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # kill it once the VLM chain is under way and some of the graph is materialized
    deadline = time.time() + 900
    killed_at: set = set()
    while time.time() < deadline and first.poll() is None:
        time.sleep(2)
        if not (Path(env["DAGSTER_HOME"]) / "dagster.yaml").exists():
            continue
        with DagsterInstance.get() as instance:
            if instance.get_latest_materialization_event(AssetKey("image_vlm")) is not None:
                killed_at = _materialized(instance)
                break
    assert first.poll() is None, "the demo ended before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(5)  # its dagster dev stops with it (SIGINT on its parent's death)
    assert {("image_vlm", None), ("clip_shard_plan", None)} <= killed_at

    with DagsterInstance.get() as instance:
        before = {r.run_id for r in instance.get_runs()}
        done_before = _materialized(instance)  # runs that were finishing may have added some
    second = subprocess.run(
        demo, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    lines = second.stdout.splitlines()
    assert any("are materialized already" in line for line in lines)
    assert any(line.startswith("[demo] backfill ") for line in lines)
    assert any(line.startswith("machine: ") and "GFLOP/s" in line for line in lines)
    assert "== ablation table" in second.stdout and "| pseudo_captions | 1 |" in second.stdout

    with DagsterInstance.get() as instance:
        new_runs = [r for r in instance.get_runs() if r.run_id not in before]
        assert new_runs and all(r.status == DagsterRunStatus.SUCCESS for r in new_runs)
        relaunched = set().union(*(_targets(r) for r in new_runs)) & done_before
        assert not relaunched, f"the rerun launched what was materialized: {relaunched}"
        # and the whole recipe is there now
        everything = _materialized(instance)
    for name in ("video_vlm", "caption_statistics", "ablation_table", "video_index"):
        assert (name, None) in everything
    for name in ("dual_encoder/alt_text", "dual_encoder/pseudo_captions"):
        assert (name, "0") in everything

    # a third run has nothing left to do and launches nothing
    third = subprocess.run(
        demo, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert "launching the rest (0)" in third.stdout
    with DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == len(before) + len(new_runs)
