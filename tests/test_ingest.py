import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_code.data import video
from model_code.data.ingest import IngestConfig, clip_windows, ingest, ingest_source
from model_code.data.manifest import VideoSource, read_manifest


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        [video.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True
    )


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Good videos in several containers/codecs, and bad inputs of every common kind.
    Returns the folder and {file name: expected outcome ('clips' or a reject reason fragment)}."""
    d = tmp_path_factory.mktemp("mixed")
    src = "testsrc2=size=96x72:rate=10:duration=3"
    _ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "a.mp4"))
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        src,
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        "200k",
        "-deadline",
        "realtime",
        str(d / "b.webm"),
    )
    _ffmpeg("-f", "lavfi", "-i", src, "-c:v", "mpeg4", str(d / "c.avi"))
    _ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "d.mkv"))
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=33x17:rate=8:duration=2",
        "-c:v",
        "mpeg4",
        str(d / "odd size.avi"),
    )
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        src,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(d / "vidéo été 1.mp4"),
    )
    (d / "zero.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes((d / "a.mp4").read_bytes()[:3000])
    (d / "random.mp4").write_bytes(np.random.default_rng(1).bytes(20000))
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=2",
        "-c:a",
        "aac",
        str(d / "audio_only.mp4"),
    )
    (d / "notes.mp4").write_text("this is a text file, not a video\n")
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=10:duration=0.1",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(d / "one_frame.mp4"),
    )
    expected = {
        "a.mp4": "clips",
        "b.webm": "clips",
        "c.avi": "clips",
        "d.mkv": "clips",
        "odd size.avi": "clips",
        "vidéo été 1.mp4": "clips",
        "zero.mp4": "empty",
        "truncated.mp4": "",
        "random.mp4": "",
        "audio_only.mp4": "no video stream",
        "notes.mp4": "",
        "one_frame.mp4": "too short",
        "missing.mp4": "missing",
    }
    return d, expected


def test_ingest_of_mixed_folder_keeps_good_videos_and_rejects_bad_ones(mixed_folder, tmp_path):
    folder, expected = mixed_folder
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"path": str(folder / name), "alt_text": f"alt {name}"} for name in expected]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    sources = read_manifest(manifest)
    assert len(sources) == len(expected)

    cfg = IngestConfig(clip_seconds=1.0, size=64, fps=8)
    clips, rejects = ingest(sources, cfg)

    used = {Path(c.meta["source"]).name for c in clips}
    rejected = {Path(r["source"]).name: r["reason"] for r in rejects}
    assert used == {n for n, e in expected.items() if e == "clips"}
    for name, outcome in expected.items():
        if outcome != "clips":
            assert name in rejected, name
            assert outcome in rejected[name], (name, rejected[name])
            assert rejected[name]
    assert len(used) + len(set(rejected) - used) == len(sources)  # counts conserve
    for c in clips:
        frames = video.decode_frames(c.mp4)
        assert frames.shape[1:] == (64, 64, 3) and len(frames) >= cfg.min_frames
        assert c.meta["alt_text"] == f"alt {Path(c.meta['source']).name}"
    # a 3 s video cut into 1 s clips gives 3 clips
    assert sum(Path(c.meta["source"]).name == "a.mp4" for c in clips) == 3


def test_folder_source_finds_videos_in_name_order(mixed_folder):
    folder, _ = mixed_folder
    names = [Path(s.path).name for s in read_manifest(folder)]
    assert names == sorted(names) and "a.mp4" in names and "b.webm" in names


def test_manifest_csv_paths_are_relative_to_the_manifest(mixed_folder, tmp_path):
    folder, _ = mixed_folder
    pd.DataFrame({"path": ["a.mp4"], "start": [0.5], "end": [2.5]}).to_csv(
        folder / "m.csv", index=False
    )
    (source,) = read_manifest(folder / "m.csv")
    assert source.path == str(folder / "a.mp4") and (source.start, source.end) == (0.5, 2.5)
    clips, rejects = ingest_source(source, IngestConfig(clip_seconds=1.0))
    assert [c.meta["start"] for c in clips] == [0.5, 1.5] and not rejects
    with pytest.raises(ValueError, match="no 'path' column"):
        pd.DataFrame({"file": ["a.mp4"]}).to_csv(tmp_path / "bad.csv", index=False)
        read_manifest(tmp_path / "bad.csv")


def _numbered_video(path: Path, seconds: float, fps: int, size: str = "160x96") -> None:
    """Source frame i shows its own index: top half grey (i % 10) * 25, bottom (i // 10) * 25."""
    w, h = map(int, size.split("x"))
    n = int(seconds * fps)
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, : h // 2] = (i % 10) * 25
        frames[i, h // 2 :] = (i // 10) % 10 * 25
    path.write_bytes(video.encode_frames(frames, fps, crf=1))


def _shown_index(frame: np.ndarray) -> int:
    top, bottom = frame[16:28, 24:40].mean(), frame[34:46, 24:40].mean()  # 64x38 at y=12
    return round(float(top) / 25) + 10 * round(float(bottom) / 25)


def test_one_pass_ingest_cuts_todays_windows_with_the_frames_at_their_times(tmp_path):
    src = tmp_path / "numbered.mp4"
    _numbered_video(src, seconds=7.0, fps=10)
    cfg = IngestConfig(clip_seconds=2.0, size=64, fps=8)
    source = VideoSource(str(src), start=0.6, end=6.5)
    clips, rejects = ingest_source(source, cfg)
    expected = clip_windows(video.probe(src), source, cfg)
    assert not rejects
    assert [(c.meta["start"], c.meta["end"]) for c in clips] == expected
    assert expected == [(0.6, 2.6), (2.6, 4.6), (4.6, 6.5)]
    for clip in clips:
        frames = video.decode_frames(clip.mp4)
        assert (
            len(frames) == clip.meta["frames"] == round((clip.meta["end"] - clip.meta["start"]) * 8)
        )
        for k, frame in enumerate(frames):
            t = clip.meta["start"] + k / 8
            # the source frame on screen at t (to half an output frame), as ffmpeg's fps filter
            assert abs(_shown_index(frame) - t * 10) <= 0.5 / 8 * 10 + 1, (clip.key, k)
        assert frames[:, :12].max() < 30  # 160x96 fits as 64x38: black bars above and below


def test_ingest_of_a_long_720p_video_holds_a_few_windows_not_the_video(tmp_path):
    import sys

    src = tmp_path / "long.mp4"
    subprocess.run(
        [
            video.ffmpeg_binary(),
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=10:duration=60",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(src),
        ],
        check=True,
    )
    script = (
        "import sys\n"
        "from model_code.data.ingest import IngestConfig, ingest_source\n"
        "from model_code.data.manifest import VideoSource\n"
        "cfg = IngestConfig(clip_seconds=2.0, max_clips_per_video=30)\n"
        "clips, rejects = ingest_source(VideoSource(sys.argv[1]), cfg)\n"
        "assert len(clips) == 30 and not rejects, (len(clips), rejects)\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(src)], capture_output=True, text=True, check=True
    )
    peak_mib = int(out.stdout.split()[-1]) // 1024  # VmHWM: this process's own peak, in kB
    # 600 frames of 1280x720 RGB would be 1.6 GiB; a few 64x64 windows are nothing
    assert peak_mib < 400, peak_mib
