"""Video I/O through ffmpeg-python: probe, cut/scale/resample/encode clips, sample frames.

The ffmpeg binary is resolved from config, then PATH, then the static build bundled by the
`imageio-ffmpeg` wheel, so a fresh machine needs no apt step. There is no ffprobe in that
build: probing reads ffmpeg's own stream report.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(Exception):
    """A video that cannot be used; the message is the reject reason."""


@functools.lru_cache(maxsize=8)
def ffmpeg_binary(configured: str | None = None) -> str:
    """Config first, then PATH, then the binary bundled with imageio-ffmpeg."""
    configured = configured or os.environ.get("VIDISTILL_FFMPEG")
    if configured:
        if not Path(configured).exists() and not shutil.which(configured):
            raise FileNotFoundError(f"configured ffmpeg binary {configured!r} not found")
        return configured
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    fps: float
    width: int
    height: int
    has_video: bool
    codec: str | None


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?Video:\s*(\w+).*?,\s*(\d{1,5})x(\d{1,5})")
_FPS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:fps|tbr)")


def probe(path: str | Path, ffmpeg: str | None = None) -> VideoInfo:
    """Duration, fps, size and codec from ffmpeg's stream report (works without ffprobe)."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"missing file: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    proc = subprocess.run(
        [ffmpeg_binary(ffmpeg), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True, text=True, errors="replace", timeout=60, check=False,
    )
    report = proc.stderr
    if "Invalid data found" in report or "moov atom not found" in report:
        raise VideoError("unreadable container (corrupt or not a video)")
    m = _DURATION.search(report)
    duration = float(m.group(1)) * 3600 + float(m.group(2)) * 60 + float(m.group(3)) if m else 0.0
    v = _VIDEO.search(report)
    if not v:
        if "Stream #" in report:
            return VideoInfo(duration, 0.0, 0, 0, has_video=False, codec=None)
        raise VideoError("unreadable container (no streams)")
    line = report[v.start(): report.find("\n", v.start())]
    f = _FPS.search(line)
    return VideoInfo(
        duration=duration,
        fps=float(f.group(1)) if f else 0.0,
        width=int(v.group(2)),
        height=int(v.group(3)),
        has_video=True,
        codec=v.group(1),
    )


def encode_frames(frames: np.ndarray, fps: int, crf: int = 18, ffmpeg: str | None = None) -> bytes:
    """uint8 [T, H, W, 3] -> h264 mp4 bytes (yuv420p, faststart so it decodes from a pipe)."""
    import ffmpeg as ff

    t, h, w, _ = frames.shape
    out, _ = (
        ff.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
        .output("pipe:", format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                preset="veryfast", movflags="frag_keyframe+empty_moov+faststart", g=t,
                **{"x264-params": "log-level=error"})
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
        .run(cmd=ffmpeg_binary(ffmpeg), input=np.ascontiguousarray(frames).tobytes(),
             capture_stdout=True, capture_stderr=True)
    )
    return out


def transcode_clip(
    path: str | Path,
    start: float,
    end: float,
    size: int,
    fps: int,
    crf: int = 20,
    ffmpeg: str | None = None,
) -> bytes:
    """Cut [start, end), resample to `fps`, scale to fit size x size keeping aspect (pad the
    rest), encode h264 mp4. Returns the mp4 bytes; raises VideoError with the reason."""
    import ffmpeg as ff

    stream = (
        ff.input(str(path), ss=max(0.0, start), t=max(0.0, end - start))
        .video.filter("fps", fps=fps)
        .filter("scale", size, size, force_original_aspect_ratio="decrease")
        .filter("pad", size, size, "(ow-iw)/2", "(oh-ih)/2")
        .filter("setsar", 1)
    )
    try:
        out, _ = (
            stream.output("pipe:", format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                          preset="veryfast", an=None,
                          movflags="frag_keyframe+empty_moov+faststart",
                          **{"x264-params": "log-level=error"})
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .run(cmd=ffmpeg_binary(ffmpeg), capture_stdout=True, capture_stderr=True)
        )
    except ff.Error as e:
        raise VideoError(f"transcode failed: {_last_line(e.stderr)}") from None
    if not out:
        raise VideoError("transcode produced no frames")
    return out


def decode_frames(
    data: bytes | str | Path, ffmpeg: str | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """All frames of a video (bytes or a path) as uint8 [T, H, W, 3]. Pass `size` (w, h) when
    known (shards record it) to skip probing."""
    import ffmpeg as ff

    source = "pipe:" if isinstance(data, bytes) else str(data)
    w, h = size or _size_of(data, ffmpeg)
    try:
        out, _ = (
            ff.input(source)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .run(cmd=ffmpeg_binary(ffmpeg), input=data if isinstance(data, bytes) else None,
                 capture_stdout=True, capture_stderr=True)
        )
    except ff.Error as e:
        raise VideoError(f"decode failed: {_last_line(e.stderr)}") from None
    n = len(out) // (w * h * 3)
    if n == 0:
        raise VideoError("no decodable frames")
    return np.frombuffer(out[: n * w * h * 3], np.uint8).reshape(n, h, w, 3)


def sample_indices(total: int, num: int) -> np.ndarray:
    """`num` frame indices spread evenly over `total` frames, first and last included."""
    if total <= 0:
        raise VideoError("no frames to sample")
    return np.linspace(0, total - 1, num).round().astype(int)


def sample_frames(
    data: bytes | str | Path,
    num: int | None = None,
    times: list[float] | None = None,
    fps: float | None = None,
    ffmpeg: str | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """`num` frames spread evenly over the clip, or the frames at `times` (seconds, needs fps),
    as uint8 [num, H, W, 3]. Short clips repeat frames rather than fail."""
    frames = decode_frames(data, ffmpeg, size)
    if times is not None:
        if not fps:
            raise ValueError("sampling at times needs the clip's fps")
        idx = np.clip(np.round(np.asarray(times) * fps).astype(int), 0, len(frames) - 1)
    else:
        idx = sample_indices(len(frames), num or len(frames))
    return frames[idx]


def _size_of(data: bytes | str | Path, ffmpeg: str | None) -> tuple[int, int]:
    if isinstance(data, bytes):
        proc = subprocess.run(
            [ffmpeg_binary(ffmpeg), "-hide_banner", "-nostdin", "-i", "pipe:"],
            input=data[: 1 << 20], capture_output=True, timeout=60, check=False,
        )
        report = proc.stderr.decode(errors="replace")
    else:
        info = probe(data, ffmpeg)
        if not info.has_video:
            raise VideoError("no video stream")
        return info.width, info.height
    v = _VIDEO.search(report)
    if not v:
        raise VideoError("no video stream")
    return int(v.group(2)), int(v.group(3))


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode(errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else "unknown ffmpeg error"
