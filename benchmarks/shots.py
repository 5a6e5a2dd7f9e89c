"""Ingest with `split: fixed` vs `split: shots` on the same videos.

    .venv/bin/python benchmarks/shots.py [--videos 4] [--repeats 3]

Each video is 4 scenes of 3 s (320x240, 25 fps, different colours with moving noise). Both arms
cut 2 s clips at 8 fps, 64 px, one source at a time (threads=1); shots first runs ffmpeg's
scene-change filter over the source. The arms alternate (fixed, shots, fixed, ...); the table
gives medians of clips per second of wall time and per CPU-second (this process and its ffmpeg
children), with OMP and thread settings fixed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_videos(folder: Path, n: int) -> list[Path]:
    from model_code.data import video

    ff = video.ffmpeg_binary()
    colours = ["red", "lime", "blue", "white", "yellow", "navy"]
    paths = []
    for v in range(n):
        parts = []
        for s in range(4):
            part = folder / f"v{v}-s{s}.mp4"
            colour = colours[(v + s) % len(colours)]
            subprocess.run(
                [
                    ff,
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                    f"color=c={colour}:size=320x240:rate=25:duration=3",
                    "-vf",
                    "noise=alls=12:allf=t",
                    "-c:v",
                    "libx264",
                    "-pix_fmt",
                    "yuv420p",
                    str(part),
                ],
                check=True,
            )
            parts.append(part)
        listing = folder / f"v{v}.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in parts))
        out = folder / f"v{v}.mp4"
        subprocess.run(
            [
                ff,
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
                str(listing),
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                str(out),
            ],
            check=True,
        )
        paths.append(out)
    return paths


def cpu() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(paths: list[Path], split: str) -> tuple[float, float, int]:
    from model_code.data.ingest import IngestConfig, ingest
    from model_code.data.manifest import VideoSource

    cfg = IngestConfig(clip_seconds=2.0, size=64, fps=8, split=split, max_clips_per_video=32)
    sources = [VideoSource(str(p)) for p in paths]
    t, c = time.perf_counter(), cpu()
    clips, rejects = ingest(sources, cfg, threads=1)
    wall, used = time.perf_counter() - t, cpu() - c
    assert not rejects, rejects
    return len(clips) / wall, len(clips) / used, len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_videos(Path(tmp), a.videos)
        results: dict[str, list] = {"fixed": [], "shots": []}
        for _ in range(a.repeats):
            for split, rows in results.items():
                rows.append(run(paths, split))
    print(f"{a.videos} videos x 12 s (4 scenes), 2 s clips, medians of {a.repeats}")
    print("| split | clips | clips/s | clips per CPU-second |\n|---|---|---|---|")
    med = {}
    for split, rows in results.items():
        med[split] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
        print(f"| {split} | {rows[0][2]} | {med[split][0]:.1f} | {med[split][1]:.1f} |")
    print(
        f"ratio shots / fixed: clips/s {med['shots'][0] / med['fixed'][0]:.2f}x, "
        f"per CPU-second {med['shots'][1] / med['fixed'][1]:.2f}x"
    )


if __name__ == "__main__":
    main()
