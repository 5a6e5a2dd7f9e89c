"""The whole pipeline on the embedded default corpus, in order, through Dagster (so every run,
materialization and check is in the instance the UI shows), ending with the benchmark table.

    .venv/bin/python -m pipelines.demo     (DAGSTER_HOME set by .ci/demo)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from pipelines.definitions import defs

ASSETS = list(defs.assets)


def _materialize(instance, resources, names: list[str], partition_key: str | None = None) -> list[str]:
    """Materialize; a failed asset check is reported and the demo goes on (its outputs are
    written before the check runs), any other failure stops it."""
    result = materialize(ASSETS, selection=names, partition_key=partition_key, instance=instance,
                         resources=resources, raise_on_error=False)
    failed = [f"{c.asset_key.to_user_string()}[{partition_key}] {c.check_name}: "
              f"{c.description}" for c in result.get_asset_check_evaluations() if not c.passed]
    if not result.success and not failed:
        raise SystemExit(f"materializing {names} [{partition_key}] failed; see the run in the UI")
    for f in failed:
        print(f"[demo] check failed: {f}", flush=True)
    return failed


def _cli_backfill(instance, names: list[str], partitions: list[str]) -> list[str]:
    """What a user types to caption the whole corpus: one CLI backfill of every partition in a
    single run (one model load per captioner). Failed quality checks are reported, not fatal."""
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
           "--select", ",".join(names), "--partition-range", f"{partitions[0]}...{partitions[-1]}"]
    print(f"[demo] VIDISTILL_PARTITIONS_PER_RUN=0 {' '.join(cmd[2:])}", flush=True)
    started = time.time()
    done = subprocess.run(cmd, env={**os.environ, "VIDISTILL_PARTITIONS_PER_RUN": "0"},
                          capture_output=True, text=True, check=False)
    keys = [AssetCheckKey(AssetKey(n), "caption_quality") for n in names]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failed = []
    for key in keys:
        record = records.get(key)
        fresh = record is not None and record.event and record.create_timestamp >= started
        evaluation = record.event.asset_check_evaluation if fresh else None
        if evaluation is None:
            raise SystemExit(f"captioning backfill wrote no {key.to_user_string()} check:\n"
                             f"{done.stderr[-3000:]}")
        if not evaluation.passed:
            failed.append(f"{key.to_user_string()}: {evaluation.description}")
            print(f"[demo] check failed: {failed[-1]}", flush=True)
    if done.returncode and not failed:
        raise SystemExit(f"captioning backfill failed:\n{done.stderr[-3000:]}")
    return failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start-at", default="", help="skip the steps before the one whose "
                        "label starts with this asset name (they must be materialized)")
    args = parser.parse_args(argv)
    instance = DagsterInstance.get()
    resources = dict(defs.resources)
    timings: list[tuple[str, float]] = []
    failed_checks: list[str] = []
    skipping = bool(args.start_at)

    def step(label: str, names: list[str], partitions: list[str | None] = (None,),
             cli: bool = False) -> None:
        nonlocal skipping
        skipping = skipping and not label.startswith(args.start_at)
        if skipping:
            return
        start = time.perf_counter()
        if cli:
            failed_checks.extend(_cli_backfill(instance, names, partitions))
        for p in [] if cli else partitions:
            failed_checks.extend(_materialize(instance, resources, names, p))
        timings.append((label, time.perf_counter() - start))
        print(f"[demo] {label}: {timings[-1][1]:.1f}s", flush=True)

    total = time.perf_counter()
    step("clip_shard_plan", ["clip_shard_plan"])
    shards = instance.get_dynamic_partitions("clip_shards")
    step(f"clip_shards x{len(shards)}", ["clip_shards"], shards)
    step("image_vlm", ["image_vlm"])
    step("video_caption_data + retrieval_benchmark", ["video_caption_data", "retrieval_benchmark"])
    step("visual_adapted_vlm (stage 1)", ["visual_adapted_vlm"])
    step("instruction_data", ["instruction_data"])
    step("video_vlm (stage 2)", ["video_vlm"])
    step("captioner_eval", ["captioner_eval"])
    step(f"frame_captions + pseudo_captions x{len(shards)} (CLI backfill)",
         ["frame_captions", "pseudo_captions"], shards, cli=True)
    step("caption_statistics", ["caption_statistics"])
    sources = defs.resolve_assets_def("dual_encoder").partitions_def.get_partition_keys()
    for s in sources:
        step(f"dual_encoder + benchmark_scores [{s}]", ["dual_encoder", "benchmark_scores"], [s])
    step("ablation_table + video_index", ["ablation_table", "video_index"])
    wall = time.perf_counter() - total

    store = resources["store"]
    print("\n== captioner_eval (held-out clips) ==")
    _print_json_table(store.path("captioner_eval.json"))
    print("\n== caption statistics (corpus) ==")
    _print_json_table(store.path("caption_statistics.json"))
    print("\n== ablation table: dual encoder by caption source (held-out benchmark) ==")
    print(store.path("ablation_table.md").read_text())
    for f in failed_checks:
        print(f"failed check: {f}")
    print(f"\nwall time: {wall / 60:.1f} min; data root: {store.root}")


def _print_json_table(path) -> None:
    import json

    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.3f}".format):
        print(pd.DataFrame(json.loads(path.read_text())).to_string(index=False))


if __name__ == "__main__":
    main()
