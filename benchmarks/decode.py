"""Decode and ingest throughput of the PyAV data path beside today's ffmpeg-subprocess path
(the code at revision 4ebd30d), measured in the same run.

    .venv/bin/python benchmarks/decode.py [--clips 150] [--repeats 3] [--videos 2] [--quick]

1. Frame sampling, 8 frames per clip, from one embedded shard: today's iter_shard (one ffmpeg
   process per clip), the new iter_shard, a minimal PyAV loop (the floor), ClipStream with 1
   and 2 decode workers; the new frames must equal today's bit for bit.
2. Real-video ingest of 10 s testsrc2 videos (320x240, 1280x720) into 2 s windows of 8 frames
   at 224 px: today's ingest_source vs the new one.
3. Peak resident set (VmHWM) of ingesting a 60 s 1080p video, new path only.
Also the embedded corpus render + encode rate (the figure benchmarks/ingest.py used to print).

Every arm is a child process (this script with --child) that imports either this checkout or
`git archive 4ebd30d model_code`, with OMP_NUM_THREADS=1 and PyAV's thread_type="AUTO"; the
arms are interleaved over --repeats and the medians are reported. clips/cpu-s divides by the
user + system CPU time of the child and of the ffmpeg processes it waited for (per-core rate);
ClipStream's workers are not its children, so it gets wall-clock rates only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "4ebd30d"


# --- child side: one arm, one JSON line ------------------------------------------------------


def _cpu() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _status_mib(field: str) -> float:
    """VmHWM / VmRSS of this process (ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _minimal_pyav(tar_path: str, num: int) -> list[np.ndarray]:
    import av

    out = []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.name.endswith(".mp4"):
                continue
            with av.open(io.BytesIO(tar.extractfile(member).read())) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                frames = list(container.decode(stream))
            idx = np.linspace(0, len(frames) - 1, num).round().astype(int)
            out.append(np.stack([frames[i].to_ndarray(format="rgb24", threads=1) for i in idx]))
    return out


def child(spec: dict) -> dict:
    from model_code.data import corpus, shards
    from model_code.data.ingest import IngestConfig, ingest_source
    from model_code.data.manifest import VideoSource

    arm, frames, frames_out, import_s = spec["arm"], None, None, 0.0
    if arm in ("sample", "stream"):  # one-off per process, paid by every arm alike: timed apart
        t = time.perf_counter()
        import av
        import webdataset  # noqa: F401  (today's reader needs it; it imports torch)

        import_s = time.perf_counter() - t
    rss_at_import = _status_mib("VmRSS")
    start_wall, start_cpu = time.perf_counter(), _cpu()
    if arm == "render":
        specs = corpus.split_specs("corpus", corpus.CorpusConfig(), 0, spec["clips"])
        clips = shards.embedded_clips(specs, threads=spec["threads"])
        n = len(clips)
    elif arm == "sample":
        if spec["impl"] == "minimal":
            frames = _minimal_pyav(spec["tar"], 8)
        elif spec["impl"] == "today":
            frames = [f for _, f, _ in shards.iter_shard(spec["tar"], 8, split_by_worker=False)]
        else:
            frames = [f for _, f, _ in shards.iter_shard(spec["tar"], 8)]
        n = len(frames)
    elif arm == "stream":
        with shards.ClipStream([spec["tar"]], 8, workers=spec["workers"]) as stream:
            n = sum(1 for _ in stream)
    elif arm == "ingest":
        cfg = IngestConfig(clip_seconds=2.0, size=224, fps=4, max_clips_per_video=spec["max_clips"])
        n = frames_out = 0
        for path in spec["videos"]:
            clips, rejects = ingest_source(VideoSource(path), cfg)
            assert not rejects, rejects
            n += len(clips)
            frames_out += sum(c.meta["frames"] for c in clips)
    elif arm == "floor":  # decode every frame of the windows' span, convert and encode nothing
        import av

        n = 0
        for path in spec["videos"]:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if frame.time >= 2.0 * spec["max_clips"]:
                        break
            n += spec["max_clips"]
    wall, cpu = time.perf_counter() - start_wall, _cpu() - start_cpu
    if spec.get("dump") and frames is not None:
        np.save(spec["dump"], np.stack(frames))
    if arm == "render":
        shards.write_shard(spec["tar"], clips)
    return {
        "n": n,
        "wall": wall,
        "cpu": cpu,
        "hwm_mib": _status_mib("VmHWM"),
        "rss_at_import_mib": rss_at_import,
        "import_s": import_s,
        "frames_out": frames_out,
        "module": str(Path(shards.__file__).parents[2]),
    }


# --- parent side: set up, interleave, report -------------------------------------------------


def run_child(spec: dict, code: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "MKL_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=code,
    )
    if proc.returncode:
        raise RuntimeError(f"{spec['arm']} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["module"]) == code, f"imported {out['module']}, expected {code}"
    return out


def make_video(path: Path, size: str, seconds: int, fps: int, fast: bool = False) -> None:
    from model_code.data import video

    preset = ["-preset", "ultrafast"] if fast else []
    subprocess.run(
        [
            video.ffmpeg_binary(),
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate={fps}:duration={seconds}",
            "-c:v",
            "libx264",
            *preset,
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r["n"] / r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=150, help="clips in the embedded shard")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every arm")
    parser.add_argument("--videos", type=int, default=2, help="10 s videos per resolution")
    parser.add_argument(
        "--quick", action="store_true", help="30 clips, 1 repeat, 1 video, 20 s 1080p"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.quick:
        args.clips, args.repeats, args.videos = 30, 1, 1
    long_seconds = 20 if args.quick else 60

    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="vidistill-decode-"))
    try:
        today, new = tmp / "today", ROOT
        today.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BASELINE, "model_code"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(today, filter="data")
        shard = str(tmp / "corpus.tar")
        render = run_child({"arm": "render", "clips": args.clips, "threads": 2, "tar": shard}, new)

        t0 = time.perf_counter()
        videos: dict[str, list[str]] = {}
        for size in ("320x240", "1280x720"):
            make_video(tmp / f"{size}-0.mp4", size, 10, 25)
            for i in range(1, args.videos):  # copies: other paths, other source ids
                shutil.copy(tmp / f"{size}-0.mp4", tmp / f"{size}-{i}.mp4")
            videos[size] = [str(tmp / f"{size}-{i}.mp4") for i in range(args.videos)]
        make_video(tmp / "long.mp4", "1920x1080", long_seconds, 10, fast=True)
        print(
            f"# set-up: shard of {render['n']} clips, test videos generated in "
            f"{time.perf_counter() - t0:.0f} s; baseline {BASELINE} in {today}\n"
        )

        arms = {
            "sample/today": ({"arm": "sample", "impl": "today", "tar": shard}, today),
            "sample/new": ({"arm": "sample", "impl": "new", "tar": shard}, new),
            "sample/minimal": ({"arm": "sample", "impl": "minimal", "tar": shard}, new),
            "stream/1": ({"arm": "stream", "workers": 1, "tar": shard}, new),
            "stream/2": ({"arm": "stream", "workers": 2, "tar": shard}, new),
            "render/1": (
                {"arm": "render", "clips": args.clips, "threads": 1, "tar": str(tmp / "r.tar")},
                new,
            ),
            "render/2": (
                {"arm": "render", "clips": args.clips, "threads": 2, "tar": str(tmp / "r.tar")},
                new,
            ),
        }
        for size, paths in videos.items():
            for name, code in (("today", today), ("new", new), ("floor", new)):
                arms[f"ingest/{size}/{name}"] = (
                    {
                        "arm": "floor" if name == "floor" else "ingest",
                        "videos": paths,
                        "max_clips": 5,
                    },
                    code,
                )
        runs: dict[str, list[dict]] = {name: [] for name in arms}
        for r in range(args.repeats):
            for name, (spec, code) in arms.items():
                dump = {"dump": str(tmp / f"{name.split('/')[1]}.npy")} if r == 0 else {}
                runs[name].append(
                    run_child({**spec, **dump} if name.startswith("sample") else spec, code)
                )
        rss = run_child(
            {"arm": "ingest", "videos": [str(tmp / "long.mp4")], "max_clips": 1000}, new
        )

        frames = {k: np.load(tmp / f"{k}.npy") for k in ("today", "new", "minimal")}
        report(args, runs, rss, frames, long_seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args, runs: dict, rss: dict, frames: dict, long_seconds: int) -> None:
    wall = {k: med(v, "wall") for k, v in runs.items()}
    cpu = {k: med(v, "cpu") for k, v in runs.items()}

    def spread(key: str) -> str:
        rates = [r["n"] / r["cpu"] for r in runs[key]]
        return (
            f"{min(rates):.0f}-{max(rates):.0f}"
            if max(rates) >= 20
            else f"{min(rates):.1f}-{max(rates):.1f}"
        )

    print(
        f"1. frame sampling: {args.clips} clips x 8 frames from one embedded shard "
        f"(64x64, 16 frames, h264); medians of {args.repeats}"
    )
    head = (
        f"{'arm':<45}{'clips/s':>8}{'per core':>10}{'(range)':>10}{'x today':>9}{'x minimal':>11}"
    )
    print(head + "\n" + "-" * len(head))
    names = {
        "sample/today": f"today: iter_shard @{BASELINE} (ffmpeg/clip)",
        "sample/new": "new: shards.iter_shard (PyAV)",
        "sample/minimal": "minimal PyAV loop",
    }
    for key, label in names.items():
        print(
            f"{label:<45}{wall[key]:>8.1f}{cpu[key]:>10.1f}{spread(key):>10}"
            f"{cpu[key] / cpu['sample/today']:>9.2f}{cpu[key] / cpu['sample/minimal']:>11.2f}"
        )
    for w in (1, 2):
        key = f"stream/{w}"
        secs = statistics.median(r["wall"] for r in runs[key])
        print(
            f"{f'ClipStream workers={w} (wall {secs:.2f} s)':<45}{wall[key]:>8.1f}{'-':>10}"
            f"{'-':>10}{wall[key] / wall['sample/today']:>9.2f}{'-':>11}"
        )
    same = frames["new"].shape == frames["today"].shape and np.array_equal(
        frames["new"], frames["today"]
    )
    print(
        f"frames of new == today, bit for bit: {same} ({frames['new'].shape}); "
        f"minimal == new: {np.array_equal(frames['minimal'], frames['new'])}"
    )
    imports = statistics.median(r["import_s"] for r in runs["sample/new"])
    print(
        "per core = clips per CPU-second (child + its ffmpeg processes); ratios per core, "
        "ClipStream's wall clock.\nNot timed, once per process: import av + webdataset "
        f"(today's shard reader; webdataset imports torch) {imports:.2f} s.\n"
    )

    print(
        f"2. real-video ingest: {args.videos} x 10 s 25 fps testsrc2 per size -> 5 windows "
        f"of 2 s, 8 frames at 224 px each; medians of {args.repeats}"
    )
    head = (
        f"{'source':<10}{'arm':<27}{'windows/s':>10}{'per core':>10}{'(range)':>11}"
        f"{'x today':>9}{'(wall)':>8}"
    )
    print(head + "\n" + "-" * len(head))
    for size in ("320x240", "1280x720"):
        for name, label in (
            ("today", f"ingest_source @{BASELINE}"),
            ("new", "ingest_source (PyAV)"),
            ("floor", "PyAV decode only (floor)"),
        ):
            key, base = f"ingest/{size}/{name}", f"ingest/{size}/today"
            print(
                f"{size:<10}{label:<27}{wall[key]:>10.2f}{cpu[key]:>10.2f}{spread(key):>11}"
                f"{cpu[key] / cpu[base]:>9.2f}{wall[key] / wall[base]:>8.2f}"
            )
    print("floor: decode every frame of the 10 s, no conversion, no encode.\n")

    print(
        f"3. peak memory, new ingest of a {long_seconds} s 1920x1080 10 fps video "
        f"(all {rss['n']} windows)"
    )
    print(
        f"VmHWM {rss['hwm_mib']:.0f} MiB (VmRSS at start {rss['rss_at_import_mib']:.0f} MiB; "
        f"the ffmpeg encoders are other processes); {rss['wall']:.1f} s wall, "
        f"{rss['n'] / rss['wall']:.2f} windows/s\n"
    )

    print(
        f"embedded corpus render + h264 encode (shards.embedded_clips, {args.clips} clips): "
        + ", ".join(f"threads={t} {wall[f'render/{t}']:.1f} clips/s" for t in (1, 2))
        + "\n"
    )

    sample_today = cpu["sample/new"] / cpu["sample/today"]
    sample_floor = cpu["sample/minimal"] / cpu["sample/new"]
    floor_wall = wall["sample/minimal"] / wall["sample/new"]
    ingest_720 = cpu["ingest/1280x720/new"] / cpu["ingest/1280x720/today"]
    ingest_720_wall = wall["ingest/1280x720/new"] / wall["ingest/1280x720/today"]
    sample_wall = wall["sample/new"] / wall["sample/today"]
    targets = [
        (
            sample_floor <= 1.2,
            (
                f"sampling within 1.2x of the minimal PyAV loop: "
                f"{sample_floor:.2f}x ({floor_wall:.2f}x)"
            ),
        ),
        (
            sample_today >= 5,
            (f"sampling >= 5x today's clips/s: {sample_today:.1f}x ({sample_wall:.1f}x)"),
        ),
        (
            ingest_720 >= 3,
            (f"720p ingest >= 3x today's windows/s: {ingest_720:.1f}x ({ingest_720_wall:.1f}x)"),
        ),
        (rss["hwm_mib"] < 1024, f"peak RSS < 1 GB at 1080p: {rss['hwm_mib']:.0f} MiB"),
    ]
    print("targets (per core; wall clock in brackets)")
    for ok, text in targets:
        print(f"  [{'met' if ok else 'NOT MET'}] {text}")


if __name__ == "__main__":
    main()
