"""Ingest real videos into clips: each source probed, cut into windows (fixed, or inside the
shots TransNetV2 finds) and encoded in one pass; each clip's index row and each input's
account (used or rejected, never both, never neither).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from model_code.data import video
from model_code.data.manifest import VideoSource
from model_code.data.shards import Clip, Reject, decode_workers


@dataclass
class IngestConfig:
    clip_seconds: float = 2.0
    size: int = 64
    fps: int = 8
    min_frames: int = 4
    max_clips_per_video: int = 8
    ffmpeg: str | None = None
    split: str = "fixed"  # fixed windows, or "shots": cut at shot changes first
    min_clip_seconds: float = 0.5  # shots: a shorter piece of a shot is dropped
    shot_threshold: float = 0.3  # shots: ffmpeg's scene-change score that starts a new shot

    def __post_init__(self):
        checks = {
            "clip_seconds": self.clip_seconds > 0,
            "fps": self.fps >= 1,
            "size": self.size >= 16 and self.size % 2 == 0,
            "min_frames": self.min_frames >= 1,
            "max_clips_per_video": self.max_clips_per_video >= 1,
            "split": self.split in ("fixed", "shots"),
            "min_clip_seconds": self.min_clip_seconds > 0,
            "shot_threshold": 0 < self.shot_threshold < 1,
        }
        allowed = {
            "clip_seconds": "> 0",
            "fps": ">= 1",
            "size": "even and >= 16",
            "min_frames": ">= 1",
            "max_clips_per_video": ">= 1",
            "split": "'fixed' or 'shots'",
            "min_clip_seconds": "> 0",
            "shot_threshold": "within (0, 1)",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"IngestConfig.{name} must be {allowed[name]}, not {getattr(self, name)!r}"
                )


def source_id(source: VideoSource) -> str:
    """A stable id for a source row; clip keys derive from it, so keys survive reruns."""
    h = hashlib.sha256(f"{source.path}|{source.start}|{source.end}".encode()).hexdigest()[:12]
    return f"v{h}"


def clip_windows(
    info: video.VideoInfo, source: VideoSource, cfg: IngestConfig
) -> list[tuple[float, float]]:
    """The fixed windows of a source's span."""
    return [
        w for w, _ in shot_windows([source_span(info, source, cfg)], cfg, cfg.min_frames / cfg.fps)
    ]


def source_span(
    info: video.VideoInfo, source: VideoSource, cfg: IngestConfig
) -> tuple[float, float]:
    """The [start, end) of a source row within its video, or VideoError saying why there is
    none long enough."""
    start = source.start or 0.0
    if start >= info.duration:
        raise video.VideoError(
            f"start {start:g}s is at or past the end of the video ({info.duration:.2f}s)"
        )
    end = min(source.end, info.duration) if source.end is not None else info.duration
    if end - start < cfg.min_frames / cfg.fps:
        raise video.VideoError(
            f"too short: {max(0.0, end - start):.2f}s < {cfg.min_frames} frames at {cfg.fps} fps"
        )
    return start, end


def shot_windows(
    shots: list[tuple[float, float]], cfg: IngestConfig, shortest: float
) -> list[tuple[tuple[float, float], int]]:
    """((start, end), shot index) of each clip: every shot cut into `clip_seconds` windows,
    pieces shorter than `shortest` dropped, at most `max_clips_per_video` in all."""
    windows = []
    for index, (start, end) in enumerate(shots):
        t = start
        while t < end - 1e-6 and len(windows) < cfg.max_clips_per_video:
            stop = min(t + cfg.clip_seconds, end)
            if stop - t >= shortest:
                windows.append(((round(t, 3), round(stop, 3)), index))
            t += cfg.clip_seconds
    return windows


def source_shots(
    path: str, span: tuple[float, float], source: VideoSource, cfg: IngestConfig
) -> list[tuple[float, float]]:
    """The shots of a source's [start, end) span: one when split is "fixed"."""
    start, end = span
    if cfg.split == "fixed":
        return [(start, end)]
    cuts = video.shot_changes(
        path, cfg.shot_threshold, cfg.ffmpeg, start, end if source.end is not None else None
    )
    bounds = [start, *[c for c in cuts if start < c < end], end]
    from itertools import pairwise

    return list(pairwise(bounds))


def ingest_source(source: VideoSource, cfg: IngestConfig) -> tuple[list[Clip], list[Reject]]:
    """Cut one video into fixed-size, fixed-fps h264 clips in one sequential decoding pass
    (video.decode_windows); each window is encoded as soon as its frames are in. Never raises
    for bad input: an unusable source, or an unusable window of it, comes back as a reject
    with its reason."""
    sid = source_id(source)
    if source.error:
        return [], [{"source": source.path, "key": sid, "row": source.row, "reason": source.error}]
    try:
        info = video.probe(source.path)
        if not info.has_video:
            raise video.VideoError("no video stream (audio-only or data file)")
        shots = source_shots(source.path, source_span(info, source, cfg), source, cfg)
        placed = shot_windows(
            shots,
            cfg,
            max(cfg.min_clip_seconds, cfg.min_frames / cfg.fps)
            if cfg.split == "shots"
            else cfg.min_frames / cfg.fps,
        )
        windows = [w for w, _ in placed]
        if not windows:
            raise video.VideoError(
                f"no shot of at least {cfg.min_clip_seconds:g}s ({len(shots)} shots)"
            )
    except (video.VideoError, OSError, UnicodeError) as e:
        return [], [{"source": source.path, "key": sid, "row": source.row, "reason": str(e)}]
    clips, rejects, done = [], [], set()

    def reject(i: int, reason: str) -> None:
        rejects.append(
            {"source": source.path, "key": f"{sid}-{i:03d}", "row": source.row, "reason": reason}
        )

    try:
        for i, frames in video.decode_windows(source.path, windows, cfg.size, cfg.fps):
            done.add(i)
            if len(frames) < cfg.min_frames:
                reject(i, f"too short: {len(frames)} decodable frames < {cfg.min_frames}")
                continue
            start, end = windows[i]
            key = f"{sid}-{i:03d}"
            clips.append(
                Clip(
                    key,
                    video.encode_frames(frames, cfg.fps, crf=20, ffmpeg=cfg.ffmpeg),
                    {
                        "key": key,
                        "source": source.path,
                        "row": source.row,
                        "start": start,
                        "end": end,
                        "fps": cfg.fps,
                        "width": cfg.size,
                        "height": cfg.size,
                        "frames": len(frames),
                        "alt_text": source.alt_text,
                        "source_codec": info.codec,
                        "source_width": info.width,
                        "source_height": info.height,
                        "shot": placed[i][1],
                        "shot_start": round(shots[placed[i][1]][0], 3),
                        "shot_end": round(shots[placed[i][1]][1], 3),
                    },
                )
            )
        reason = "no decodable frames in this window (the video ends before it)"
    except video.VideoError as e:
        reason = str(e)
    for i in range(len(windows)):
        if i not in done:
            reject(i, reason)
    return clips, rejects


def ingest(
    sources: list[VideoSource], cfg: IngestConfig, threads: int | None = None
) -> tuple[list[Clip], list[Reject]]:
    """Ingest many sources, one thread each at a time (default: one per core; PyAV releases
    the GIL while it decodes and encodes); clips follow the sources' order, so shards are
    reproducible."""
    with ThreadPoolExecutor(decode_workers(threads) or 1) as pool:
        results = list(pool.map(lambda s: ingest_source(s, cfg), sources))
    clips = [c for cs, _ in results for c in cs]
    rejects = [r for _, rs in results for r in rs]
    return clips, rejects


CLIP_INDEX_COLUMNS = [
    "key",
    "partition",
    "source",
    "start",
    "end",
    "fps",
    "alt_text",
    "ground_truth",
    "attributes",
]  # clip_index/{partition}.parquet


def clip_index(clips: Sequence[Clip], partition: str):
    """The clip index of one shard (a DataFrame of CLIP_INDEX_COLUMNS, one row a clip): where
    each clip came from, its alt-text and, on the embedded corpus, its ground truth."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "key": c.key,
                "partition": partition,
                "source": c.meta["source"],
                "start": c.meta["start"],
                "end": c.meta["end"],
                "fps": c.meta["fps"],
                "alt_text": c.meta.get("alt_text", ""),
                "ground_truth": c.meta.get("ground_truth"),
                "attributes": json.dumps(c.meta["attributes"]) if "attributes" in c.meta else None,
            }
            for c in clips
        ],
        columns=CLIP_INDEX_COLUMNS,
    )


def account_for_inputs(
    partition: str, inputs: int, clips: Sequence[Clip], rejects: Sequence[Reject]
) -> tuple[int, int]:
    """(inputs used, inputs rejected) of a shard built from `inputs` inputs (manifest rows,
    several of which may be segments of one video; on the embedded corpus, clip keys). Every
    input is one or the other: a RuntimeError when the counts do not add up."""

    def row(item: dict):
        return item["row"] if item.get("row", -1) >= 0 else item.get("source", item["key"])

    used = {row(c.meta) for c in clips}
    unused = {row(r) for r in rejects} - used
    if len(used) + len(unused) != inputs:
        raise RuntimeError(
            f"{partition}: {inputs} inputs but {len(used)} used + {len(unused)} rejected"
        )
    return len(used), len(unused)


def rejects_bytes(rejects: list[Reject]) -> bytes:
    """Rejects as a parquet file's bytes (written atomically by the caller)."""
    import pandas as pd

    df = pd.DataFrame(rejects, columns=["key", "source", "row", "reason"]).astype("string")
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
