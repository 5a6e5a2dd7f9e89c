"""The demo's terminal: one line a run and the name of the log file that has the rest."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipelines import demo
    demo.quiet(Path(sys.argv[1]))
    print("Dagster would say this")
    import subprocess
    subprocess.run([sys.executable, "-c", "print('a run worker would say this')"], check=True)
    demo.say("[demo] clip_shard_plan: 0.4s -> data/")
""")


def test_the_terminal_gets_the_demos_lines_and_the_log_file_the_rest(tmp_path):
    log = tmp_path / "data" / "demo.log"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log)],
        env=os.environ.copy(),
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["[demo] clip_shard_plan: 0.4s -> data/"]
    text = log.read_text()
    assert "Dagster would say this" in text and "a run worker would say this" in text


def test_a_run_is_named_by_its_assets_and_partitions():
    from dagster import AssetKey, DagsterRun

    from pipelines.demo import _label

    run = DagsterRun(
        job_name="__ASSET_JOB",
        asset_selection=frozenset(
            {AssetKey(["dual_encoder", "alt_text"]), AssetKey(["benchmark_scores", "alt_text"])}
        ),
        tags={"dagster/partition": "0"},
    )
    assert _label(run) == "benchmark_scores/alt_text + dual_encoder/alt_text [0]"
    ranged = DagsterRun(
        job_name="__ASSET_JOB",
        asset_selection=frozenset({AssetKey("pseudo_captions")}),
        tags={
            "dagster/asset_partition_range_start": "embedded-0000",
            "dagster/asset_partition_range_end": "embedded-0000",
        },
    )
    assert _label(ranged) == "pseudo_captions [embedded-0000]"
