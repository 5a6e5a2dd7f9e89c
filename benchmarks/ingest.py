"""Corpus generation and ingest throughput (clips/s), with the single-thread baseline beside
the threaded path in the same run.

    .venv/bin/python benchmarks/ingest.py [--clips 150] [--videos 6]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from model_code import corpus, shards, video


def _rate(fn, n_items) -> tuple[float, int]:
    start = time.perf_counter()
    out = fn()
    return n_items(out) / (time.perf_counter() - start), n_items(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=150)
    parser.add_argument("--videos", type=int, default=6, help="10 s source videos to ingest")
    args = parser.parse_args()

    specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, args.clips)
    print(f"{'path':<44}{'clips/s':>10}{'clips':>8}")
    for threads in (1, 2):
        rate, n = _rate(lambda t=threads: shards.embedded_clips(specs, threads=t), len)
        print(f"{'embedded corpus: render + h264, threads=' + str(threads):<44}{rate:>10.1f}{n:>8}")

    with tempfile.TemporaryDirectory() as d:
        for i in range(args.videos):
            subprocess.run([video.ffmpeg_binary(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            "testsrc2=size=320x240:rate=25:duration=10", "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", str(Path(d) / f"v{i}.mp4")], check=True)
        sources = shards.read_manifest(d)
        cfg = shards.IngestConfig(clip_seconds=2.0, max_clips_per_video=5)
        for threads in (1, 2):
            rate, n = _rate(lambda t=threads: shards.ingest(sources, cfg, threads=t)[0], len)
            print(f"{'ingest 320x240 mp4 -> 64x64 clips, threads=' + str(threads):<44}{rate:>10.1f}{n:>8}")

    tar = Path(tempfile.mkdtemp()) / "s.tar"
    shards.write_shard(tar, shards.embedded_clips(specs))
    rate, n = _rate(lambda: list(shards.iter_shard(tar, 8)), len)
    print(f"{'decode 8 frames/clip from a shard':<44}{rate:>10.1f}{n:>8}")
    shards._FRAMES_CACHE.clear()
    rate, n = _rate(lambda: shards.frames_by_key([tar], 8, threads=2), len)
    print(f"{'decode 8 frames/clip, 2 threads':<44}{rate:>10.1f}{n:>8}")


if __name__ == "__main__":
    main()
