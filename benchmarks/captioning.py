"""Captioning throughput: batched vs one clip at a time (model only), and a whole caption
partition through Dagster vs the same calls as a plain script (end to end, from the shard).

    python benchmarks/captioning.py [--checkpoint DIR] [--clips 64] [--batch-size 32]
    python benchmarks/captioning.py --partition [--clips 150] [--repeats 3] [--checkpoint DIR]

Each mode runs in its own fresh process (same clips, same model, same generation settings),
so its peak memory is its own: on GPU torch.cuda.max_memory_allocated, on CPU the growth of
the process's peak resident set over what it held once the model was loaded and warmed up.
Without --checkpoint it times the untrained default-size tiny VLM: generation cost hardly
depends on the weights except through caption length, so each row also gives the mean number
of generated words (both modes are capped by --max-new-tokens).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(args: argparse.Namespace) -> dict:
    """Caption args.clips benchmark clips in one mode; the figures as a dict."""
    import torch

    from model_code.data.corpus import CorpusConfig, ground_truth_caption, render_clip, split_specs
    from model_code.data.instructions import pretraining_texts
    from model_code.inference.captioning import caption_batches
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm
    from model_code.models.video_vlm import VideoVLM

    torch.manual_seed(0)
    specs = split_specs("benchmark", CorpusConfig(), 0, args.clips)
    frames = np.linspace(0, specs[0].frames - 1, 8).round().astype(int)
    clips = np.stack([render_clip(s)[frames] for s in specs])
    keys = [s.key for s in specs]
    if args.checkpoint:
        vlm = VideoVLM.from_pretrained(args.checkpoint, device=args.device)
    else:
        texts = pretraining_texts(
            [{"key": s.key, "caption": ground_truth_caption(s)} for s in specs]
        )
        vlm = build_tiny_image_vlm(texts, TinyVLMConfig()).to(args.device)
    size = args.batch_size if args.mode == "batched" else 1
    gen = {"max_new_tokens": args.max_new_tokens}
    vlm.caption(clips[:size], **gen)  # warm-up: lazy init, allocator, kernels
    cuda = vlm.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _current_rss_mib()
    t0 = time.perf_counter()
    chunks = ((keys[i : i + size], clips[i : i + size]) for i in range(0, len(clips), size))
    captions = [c for _, c in caption_batches(vlm, chunks, **gen)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mib() - base
    return {
        "mode": args.mode,
        "batch_size": size,
        "clips": len(clips),
        "seconds": seconds,
        "clips_per_s": len(clips) / seconds,
        "peak_mib": peak,
        "memory": "cuda allocated" if cuda else "RSS growth",
        "device": str(vlm.device),
        "threads": torch.get_num_threads(),
        "tokens_per_frame": vlm.visual_tokens_per_frame,
        "mean_words": float(np.mean([len(c.split()) for c in captions])),
        "captions": captions,
    }


# --- a caption partition: Dagster vs a plain script ------------------------------------------

PARTITION = "bench-0000"
PERMISSIVE = {
    "max_degenerate_rate": 1.0,
    "max_duplicate_rate": 1.0,
    "max_empty_rate": 1.0,
    "min_vocab_size": 0,
}  # an untrained model's captions must not fail the run


def _partition_setup(root: Path, clips: int, checkpoint: str) -> None:
    """A shard of `clips` embedded clips and a video_vlm checkpoint under the data root."""
    import shutil

    from model_code.data import corpus, shards
    from model_code.models.lineage import write_lineage

    specs = corpus.split_specs("corpus", _corpus(clips), 0, clips)
    shards.write_shard(root / "clips" / f"{PARTITION}.tar", shards.embedded_clips(specs))
    folder = root / "checkpoints" / "video_vlm"
    if checkpoint:
        shutil.copytree(checkpoint, folder)
        return
    import torch

    from model_code.data.instructions import pretraining_texts
    from model_code.models.tiny_vlm import TinyVLMConfig, build_tiny_image_vlm

    torch.manual_seed(0)
    texts = pretraining_texts(
        [{"key": s.key, "caption": corpus.ground_truth_caption(s)} for s in specs[:64]]
    )
    build_tiny_image_vlm(texts, TinyVLMConfig()).save_pretrained(folder)
    write_lineage(folder, kind="benchmark")


def _corpus(clips: int):
    from model_code.data import corpus

    config = corpus.CorpusConfig()
    config.split_sizes["corpus"] = max(clips, config.split_sizes["corpus"])
    return config


def _plain_script(root: Path, batch_size: int) -> dict:
    """The asset's calls without Dagster: caption the shard, write its Parquet file."""
    t0 = time.perf_counter()
    import pandas as pd

    from model_code.inference.captioning import CaptionRun, caption_shards
    from model_code.runtime.files import atomic_write_bytes

    run = CaptionRun()
    n = 0
    for result in caption_shards(
        root / "checkpoints" / "video_vlm",
        [root / "clips" / f"{PARTITION}.tar"],
        "clip",
        batch_size,
        run=run,
        max_new_tokens=24,
    ):
        df = pd.DataFrame(result.captions, columns=["key", "sample", "caption"])
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(root / "plain" / f"{PARTITION}.parquet", buf.getvalue())
        n += len(df)
        wait, generate = result.wait_s, result.generate_s
    return {
        "clips": n,
        "load_s": run.load_s,
        "first_batch_wait_s": run.first_batch_wait_s,
        "wait_share": wait / max(wait + generate, 1e-9),
        "generate_s": generate,
        "inner_s": time.perf_counter() - t0,
    }


def _dagster_timeline(home: Path) -> dict:
    """Seconds between the run's milestones, from the instance's event log."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    with DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        events = {}
        for record in instance.all_logs(run.run_id):
            if record.dagster_event and record.dagster_event.event_type not in events:
                events[record.dagster_event.event_type] = record.timestamp
        materialization = instance.get_latest_materialization_event(AssetKey("pseudo_captions"))
        meta = materialization.asset_materialization.metadata
    t = {
        k: events.get(getattr(DagsterEventType, k))
        for k in ("RUN_START", "STEP_START", "STEP_SUCCESS", "RUN_SUCCESS")
    }
    return {
        "run_start_to_step_start_s": t["STEP_START"] - t["RUN_START"],
        "step_s": t["STEP_SUCCESS"] - t["STEP_START"],
        "step_success_to_run_success_s": t["RUN_SUCCESS"] - t["STEP_SUCCESS"],
        "run_s": t["RUN_SUCCESS"] - t["RUN_START"],
        "model_load_s": meta["model_load_s"].value,
        "first_batch_wait_s": meta["first_batch_wait_s"].value,
        "wait_share": meta["frame_wait_share"].value,
        "decode_workers": meta["decode_workers"].value,
    }


def partition_benchmark(args: argparse.Namespace) -> None:
    """Interleave: Dagster CLI run of one pseudo_captions partition, then the plain script."""
    import statistics
    import tempfile

    import yaml

    work = Path(tempfile.mkdtemp(prefix="vidistill-bench-"))
    root, home = work / "data", work / "dagster_home"
    home.mkdir(parents=True)
    env = {
        **os.environ,
        "VIDISTILL_DATA_ROOT": str(root),
        "DAGSTER_HOME": str(home),
        "OMP_NUM_THREADS": str(args.threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--setup",
            str(root),
            "--clips",
            str(args.clips),
            "--checkpoint",
            args.checkpoint,
        ],
        env=env,
        check=True,
    )
    register = (
        "from dagster import DagsterInstance; DagsterInstance.get()"
        f".add_dynamic_partitions('clip_shards', ['{PARTITION}'])"
    )
    subprocess.run([sys.executable, "-c", register], env=env, check=True)
    config = work / "run.yaml"
    run_config = {
        "ops": {"pseudo_captions": {"config": {"batch_size": args.batch_size, **PERMISSIVE}}}
    }
    config.write_text(yaml.safe_dump(run_config))
    dagster = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "pipelines.definitions",
        "--select",
        "pseudo_captions",
        "--partition",
        PARTITION,
        "-c",
        str(config),
    ]
    plain = [sys.executable, __file__, "--plain", str(root), "--batch-size", str(args.batch_size)]
    rows: dict[str, list[dict]] = {"dagster": [], "plain": []}
    for _ in range(args.repeats):
        for arm, cmd in (("dagster", dagster), ("plain", plain)):
            t0 = time.perf_counter()
            out = subprocess.run(
                cmd,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).resolve().parents[1],
            )
            wall = time.perf_counter() - t0
            if out.returncode:
                raise SystemExit(f"{arm} failed:\n{out.stderr[-3000:]}")
            row = {"wall_s": wall}
            if arm == "plain":
                row.update(json.loads(out.stdout.strip().splitlines()[-1]))
            else:
                row.update(
                    json.loads(
                        subprocess.run(
                            [sys.executable, __file__, "--timeline", str(home)],
                            env=env,
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        .stdout.strip()
                        .splitlines()[-1]
                    )
                )
            rows[arm].append(row)
            print(json.dumps({"arm": arm, **row}), flush=True)

    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[arm])

    d, p = med("dagster", "wall_s"), med("plain", "wall_s")
    print(
        f"\none caption partition of {args.clips} clips, batch {args.batch_size}, "
        f"{args.threads} torch thread(s), medians of {args.repeats} interleaved runs"
    )
    print(f"{'path':<44}{'wall s':>8}{'clips/s':>9}{'ratio':>7}")
    print(f"{'plain script (same calls)':<44}{p:>8.1f}{args.clips / p:>9.1f}{1.0:>7.2f}")
    print(f"{'dagster asset materialize (CLI)':<44}{d:>8.1f}{args.clips / d:>9.1f}{d / p:>7.2f}")
    print(
        "where the Dagster run's time goes (s): CLI start to run start "
        f"{d - med('dagster', 'run_s'):.1f}, run start to step start "
        f"{med('dagster', 'run_start_to_step_start_s'):.1f}, step "
        f"{med('dagster', 'step_s'):.1f} (model load {med('dagster', 'model_load_s'):.1f}), "
        f"step success to run success {med('dagster', 'step_success_to_run_success_s'):.1f}"
    )
    print(
        f"frame wait after the first batch: dagster {med('dagster', 'wait_share'):.1%}, plain "
        f"{med('plain', 'wait_share'):.1%} of the caption loop; first batch waited "
        f"{med('dagster', 'first_batch_wait_s'):.2f}s / {med('plain', 'first_batch_wait_s'):.2f}s "
        f"after the model loaded; decode workers {rows['dagster'][0]['decode_workers']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", choices=("batched", "one-by-one"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--partition",
        action="store_true",
        help="one caption partition end to end: Dagster CLI vs plain script",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    parser.add_argument("--timeline", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.setup:
        return _partition_setup(Path(args.setup), args.clips, args.checkpoint)
    if args.plain:
        return print(json.dumps(_plain_script(Path(args.plain), args.batch_size)))
    if args.timeline:
        return print(json.dumps(_dagster_timeline(Path(args.timeline))))
    if args.partition:
        return partition_benchmark(args)
    if args.mode:  # child: one mode, one JSON line
        print(json.dumps(run_mode(args)))
        return

    results = []
    for mode in ("one-by-one", "batched"):
        cmd = [
            sys.executable,
            __file__,
            "--mode",
            mode,
            "--clips",
            str(args.clips),
            "--batch-size",
            str(args.batch_size),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--device",
            args.device,
            "--checkpoint",
            args.checkpoint,
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    first = results[0]
    print(
        f"device={first['device']} torch_threads={first['threads']} clips={first['clips']} "
        f"tokens/frame={first['tokens_per_frame']} "
        f"checkpoint={args.checkpoint or 'untrained tiny default'}"
    )
    print(
        f"{'mode':<12}{'batch':>6}{'clips/s':>10}{'seconds':>10}"
        f"{'peak MiB (' + first['memory'] + ')':>28}{'mean words':>12}"
    )
    for r in results:
        print(
            f"{r['mode']:<12}{r['batch_size']:>6}{r['clips_per_s']:>10.1f}{r['seconds']:>10.2f}"
            f"{r['peak_mib']:>28.1f}{r['mean_words']:>12.1f}"
        )
    same = sum(a == b for a, b in zip(results[0]["captions"], results[1]["captions"], strict=True))
    print(
        f"speed-up {results[1]['clips_per_s'] / results[0]['clips_per_s']:.1f}x; "
        f"identical captions in both modes: {same}/{first['clips']}"
    )


if __name__ == "__main__":
    main()
