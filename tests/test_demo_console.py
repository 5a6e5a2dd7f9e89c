"""The demo's terminal: one line a step and the name of the log file that has the rest."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    from pipelines import demo
    demo.PROGRESS_EVERY_S = 0.2
    demo.start_console()
    print("Dagster would say this")
    demo.Demo("main").step("clip_shard_plan", ["clip_shard_plan"])
""")


def test_the_demo_prints_a_line_a_step_and_keeps_dagsters_log_in_a_named_file(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIDISTILL_DATA_ROOT": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    log = tmp_path / "data" / "demo.log"
    assert lines[0] == f"[demo] Dagster's and the trainers' logs: {log}"
    assert lines[-1].startswith("[demo] clip_shard_plan: ")
    assert "-> " in lines[-1]  # where its output went
    assert all(line.startswith("[demo]") for line in lines)  # progress lines at most besides
    assert "DEBUG" not in done.stdout + done.stderr
    text = log.read_text()
    assert "Dagster would say this" in text and "DEBUG" in text  # the events, in the file


def test_a_broken_paper_progress_file_is_named_not_trusted(tmp_path):
    import pytest

    from pipelines.demo import _progress

    path = tmp_path / "paper_progress.json"
    assert _progress(path) == []
    path.write_text('["demo", "ladder captions"]')
    assert _progress(path) == ["demo", "ladder captions"]
    for broken in ('["demo", ', '{"demo": true}', "[1, 2]"):
        path.write_text(broken)
        with pytest.raises(SystemExit, match="paper_progress.json"):
            _progress(path)
