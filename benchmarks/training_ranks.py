"""Dual-encoder training on 1 rank vs N torchrun ranks, as the asset launches it.

    .venv/bin/python benchmarks/training_ranks.py [--ranks 2] [--repeats 3] [--steps 40]

Both arms run the same trainer program (`torchrun --standalone --nproc_per_node R -m
model_code.training.train_dual_encoder --job ...`) on the same job: embedded clips in a webdataset
shard, decoded once into memory, the same global batch. The cores are shared out: 1 rank gets
--threads torch threads, R ranks get threads/R each. Arms alternate (1, R, 1, R, ...); the table
gives medians of the program's wall time (torch import, decode and process-group start included) and
of the training loop's clips/s as rank 0 reports it."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_job(folder: Path, clips: int, steps: int, batch: int) -> Path:
    import pandas as pd

    from model_code.data import corpus, shards
    from model_code.training.job import DualEncoderJob

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, clips)
    shards.write_shard(folder / "clips.tar", shards.embedded_clips(specs))
    pd.DataFrame(
        {"key": [s.key for s in specs], "caption": [corpus.ground_truth_caption(s) for s in specs]}
    ).to_parquet(folder / "pairs.parquet")
    job = DualEncoderJob(
        config={"steps": steps, "batch_size": batch, "log_every": steps},
        pairs=str(folder / "pairs.parquet"),
        shards=[str(folder / "clips.tar")],
        out=str(folder / "out"),
    ).to_json()
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return path


def run(job: Path, ranks: int, threads: int) -> tuple[float, float]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(max(1, threads // ranks)),
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    t = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            "-m",
            "model_code.training.train_dual_encoder",
            "--job",
            str(job),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"step"')]
    return wall, steps[-1]["clips_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = make_job(Path(tmp), a.clips, a.steps, a.batch)
        results: dict[int, list[tuple[float, float]]] = {1: [], a.ranks: []}
        for _ in range(a.repeats):
            for ranks in (1, a.ranks):
                results[ranks].append(run(job, ranks, a.threads))
    print(
        f"{a.steps} steps, global batch {a.batch}, {a.clips} clips, {a.threads} threads "
        f"shared out, medians of {a.repeats}"
    )
    print("| ranks | wall s | clips/s (loop) |\n|---|---|---|")
    med = {
        r: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for r, v in results.items()
    }
    for ranks, (wall, rate) in med.items():
        print(f"| {ranks} | {wall:.1f} | {rate:.0f} |")
    print(
        f"ratio {a.ranks} ranks / 1 rank: wall {med[a.ranks][0] / med[1][0]:.2f}x, "
        f"clips/s {med[a.ranks][1] / med[1][1]:.2f}x"
    )


if __name__ == "__main__":
    main()
