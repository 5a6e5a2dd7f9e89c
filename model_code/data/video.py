"""Video I/O: probe, decode, and cut source videos into windows in one pass in-process with
PyAV (which bundles FFmpeg's libraries); encode clips with an ffmpeg process (ffmpeg-python).

Frames are decoded in the process that needs them, and only the frames kept are converted to
RGB. Decoding and conversion run on one thread per call: PyAV's defaults start thread pools per
clip and per frame (thousands of threads, 2-3x the CPU time on small clips); parallelism comes
from decode workers instead. The ffmpeg binary comes from config, PATH, or the static build of
the `imageio-ffmpeg` wheel, so a fresh machine needs no apt step.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_code.runtime import settings


class VideoError(Exception):
    """A video that cannot be used; the message is the reject reason."""


@functools.lru_cache(maxsize=8)
def ffmpeg_binary(configured: str | None = None) -> str:
    """Config first, then PATH, then the binary bundled with imageio-ffmpeg."""
    configured = configured or settings.FFMPEG.get()
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


@contextlib.contextmanager
def open_video(data: bytes | str | Path):
    """(container, video stream) of a file or of mp4 bytes, decoded on one thread (parallelism
    comes from decode workers, one clip or source each); VideoError with the reason when it
    cannot be opened or has no video stream."""
    import av

    if not isinstance(data, bytes):
        path = Path(data)
        if not path.exists():
            raise VideoError(f"missing file: {path}")
        if path.stat().st_size == 0:
            raise VideoError("empty file (0 bytes)")
    try:
        container = av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data))
    except (av.FFmpegError, UnicodeError) as e:
        raise VideoError(f"unreadable container (corrupt or not a video): {e}") from None
    with container:
        if not container.streams.video:
            raise VideoError("no video stream (audio-only or data file)")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # half the CPU of frame threads on small clips
        yield container, stream


def probe(path: str | Path) -> VideoInfo:
    """Duration, fps, size and codec from the container, without decoding. A stream whose
    container records no duration (a raw elementary stream, some captures) is timed by
    counting its packets (demuxing only) at the stream's frame rate."""
    try:
        with open_video(path) as (container, stream):
            rate = stream.guessed_rate or stream.average_rate
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            else:
                packets = sum(p.size > 0 for p in container.demux(stream))
                duration = packets / float(rate) if rate else 0.0
            ctx = stream.codec_context
            info = VideoInfo(
                duration,
                float(rate) if rate else 0.0,
                ctx.width,
                ctx.height,
                has_video=True,
                codec=ctx.name,
            )
    except VideoError as e:
        if str(e).startswith("no video stream"):
            return VideoInfo(0.0, 0.0, 0, 0, has_video=False, codec=None)
        raise
    return info


def _frames(container, stream) -> Iterator:
    """Decoded frames in order; a decoding error mid-stream ends the clip with VideoError."""
    import av

    try:
        yield from container.decode(stream)
    except av.FFmpegError as e:
        raise VideoError(f"decode failed: {e}") from None


def _rgb(frame, width: int | None = None, height: int | None = None) -> np.ndarray:
    return frame.to_ndarray(
        format="rgb24", width=width, height=height, interpolation="BICUBIC", threads=1
    )


def decode_frames(data: bytes | str | Path) -> np.ndarray:
    """All frames of a video (bytes or a path) as uint8 [T, H, W, 3]. For short clips: a long
    source video belongs to decode_windows, which never holds it whole."""
    with open_video(data) as (container, stream):
        frames = [_rgb(f) for f in _frames(container, stream)]
    if not frames:
        raise VideoError("no decodable frames")
    return np.stack(frames)


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
) -> np.ndarray:
    """`num` frames spread evenly over the clip, or the frames at `times` (seconds, needs fps),
    as uint8 [num, H, W, 3]. Every frame is decoded (h264 needs them) but only the kept ones
    are converted to RGB. Short clips repeat frames rather than fail."""
    if times is not None and not fps:
        raise ValueError("sampling at times needs the clip's fps")
    with open_video(data) as (container, stream):
        frames = _frames(container, stream)
        if times is not None:
            order = sorted(set(times))  # past the last frame, the last frame holds
            origin = stream.start_time or 0
            shown = list(_frames_at(frames, order, stream, origin, 0.5 / fps, float("inf")))
            picked = dict(zip(order, shown))
            chosen = [picked.get(t) for t in times]
        else:
            decoded = list(frames)  # YUV frames; converted below when kept
            chosen = [decoded[i] for i in sample_indices(len(decoded), num or len(decoded))]
        if not chosen or chosen[0] is None:
            raise VideoError("no decodable frames")
        converted = {id(f): _rgb(f) for f in chosen}
        return np.stack([converted[id(f)] for f in chosen])


def fit_size(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(w, h, x, y): the scaled size that fits size x size keeping the aspect ratio, and where
    it sits, centred, as ffmpeg's `scale=size:size:force_original_aspect_ratio=decrease` then
    `pad=size:size:(ow-iw)/2:(oh-ih)/2` place it (pad offsets even, for 4:2:0 chroma)."""
    if width >= height:
        w, h = size, max(1, round(height * size / width))
    else:
        w, h = max(1, round(width * size / height)), size
    return w, h, (size - w) // 2 & ~1, (size - h) // 2 & ~1


def decode_windows(
    path: str | Path, windows: list[tuple[float, float]], size: int, fps: int
) -> Iterator[tuple[int, np.ndarray]]:
    """One sequential decoding pass over a source video, cut into `windows` ([start, end) in
    seconds, in time order): (window index, uint8 [n, size, size, 3]) at `fps`, each frame
    scaled to fit size x size keeping the aspect ratio and padded black (centred), as ffmpeg's
    fps + scale + pad filters do. Only kept frames are converted, straight to the small size,
    and only the current window is held: memory stays small whatever the source's size and
    length. Decoding starts at the keyframe before the first window and stops after the last."""
    ticks = [
        (i, s + k / fps)
        for i, (s, e) in enumerate(windows)
        for k in range(max(0, round((e - s) * fps)))
    ]
    if not ticks:
        return
    with open_video(path) as (container, stream):
        w, h, x0, y0 = fit_size(stream.codec_context.width, stream.codec_context.height, size)
        origin = stream.start_time or 0  # times count from the stream's first frame, as -ss does
        if ticks[0][1] > 0:
            target = origin + int(ticks[0][1] / stream.time_base)
            container.seek(target, stream=stream, backward=True)
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        shown = _frames_at(
            _frames(container, stream),
            [t for _, t in ticks],
            stream,
            origin,
            half=0.5 / fps,
            frame_seconds=1.0 / rate,
        )
        last: tuple = (None, None)

        def small(frame) -> np.ndarray:
            nonlocal last
            if last[0] is not frame:  # a frame held over several ticks is converted once
                out = np.zeros((size, size, 3), np.uint8)
                out[y0 : y0 + h, x0 : x0 + w] = _rgb(frame, w, h)
                last = (frame, out)
            return last[1]

        pairs = zip((i for i, _ in ticks), shown)  # stops where the video does
        for window, group in itertools.groupby(pairs, key=lambda pair: pair[0]):
            yield window, np.stack([small(frame) for _, frame in group])


def _frames_at(
    frames: Iterator, times: list[float], stream, origin: int, half: float, frame_seconds: float
) -> Iterator:
    """The frame on screen at each of `times` (ascending, seconds from the stream's `origin`
    pts), as ffmpeg's fps filter picks it: the last frame that starts before the time plus half
    an output frame. Past the last frame of the video it holds for one frame duration. Frames
    without a timestamp (raw streams) are timed by their index at the stream's frame rate."""
    t, previous = 0, None
    rate = float(stream.guessed_rate or stream.average_rate or 1.0 / frame_seconds)

    def seconds(frame, index: int) -> float:
        if frame.pts is None:
            return index / rate
        return float((frame.pts - origin) * stream.time_base)

    for index, frame in enumerate(frames):
        start = seconds(frame, index)
        while t < len(times) and start > times[t] + half:
            yield previous if previous is not None else frame
            t += 1
        if t == len(times):
            return
        previous = frame
    if previous is not None:
        end = seconds(previous, index) + frame_seconds
        while t < len(times) and times[t] < end - 1e-6:
            yield previous
            t += 1


def encode_frames(frames: np.ndarray, fps: int, crf: int = 18, ffmpeg: str | None = None) -> bytes:
    """uint8 [T, H, W, 3] -> h264 mp4 bytes (yuv420p, faststart so it decodes from a pipe), by
    one ffmpeg process (ffmpeg-python). Not PyAV's encoder: its libx264 gave different bytes
    for the same frames from one call to the next here, and shards must be byte-identical on
    rerun."""
    import ffmpeg as ff

    t, h, w, _ = frames.shape
    try:
        out, _ = (
            ff.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
            .output(
                "pipe:",
                format="mp4",
                vcodec="libx264",
                pix_fmt="yuv420p",
                crf=crf,
                preset="veryfast",
                movflags="frag_keyframe+empty_moov+faststart",
                g=t,
                **{"x264-params": "log-level=error"},
            )
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .run(
                cmd=ffmpeg_binary(ffmpeg),
                input=np.ascontiguousarray(frames).tobytes(),
                capture_stdout=True,
                capture_stderr=True,
            )
        )
    except ff.Error as e:
        raise VideoError(f"encode failed: {_last_line(e.stderr)}") from None
    return out


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode(errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else "unknown ffmpeg error"


def shot_changes(
    path: str | Path,
    threshold: float = 0.3,
    ffmpeg: str | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> list[float]:
    """Times (seconds) where a new shot starts, by ffmpeg's scene-change score (`select
    gt(scene, threshold)` + `showinfo`, one ffmpeg process through ffmpeg-python), within
    [start, end) when given."""
    import re

    import ffmpeg as ff

    options = {"ss": start} if start else {}
    if end is not None:
        options["to"] = end
    try:
        _, err = (
            ff.input(str(path), **options)
            .video.filter("select", f"gt(scene,{threshold})")
            .filter("showinfo")
            .output("-", format="null")
            .global_args("-hide_banner", "-nostdin")
            .run(cmd=ffmpeg_binary(ffmpeg), capture_stdout=True, capture_stderr=True)
        )
    except ff.Error as e:
        raise VideoError(f"shot detection failed: {_last_line(e.stderr)}") from None
    # with -ss before -i, timestamps restart at 0: shift them back to the source's clock
    times = sorted(start + float(t) for t in re.findall(rb"pts_time:\s*([0-9.]+)", err))
    return [t for t in times if t > start]
