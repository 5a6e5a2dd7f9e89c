"""Webdataset clip shards: write them atomically, read them back as frames, ingest real videos.

A shard is `clips/{partition}.tar` holding `{key}.mp4` (h264) and `{key}.json` per clip,
written with webdataset's TarWriter. Reading starts from the shard's tar headers (where each
sample's files lie), so any reader can decode any share of a shard's clips by seeking to them:
decode workers split one shard in chunks, training readers take every n-th clip. A clip that
cannot be read or decoded becomes a reject with its reason instead of failing the shard.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from model_code import corpus, video

Reject = dict  # {"key" or "source", "reason", ...}


@dataclass(frozen=True)
class Clip:
    key: str
    mp4: bytes
    meta: dict


def write_shard(path: str | Path, clips: Iterable[Clip]) -> int:
    """Write clips to a webdataset tar, atomically (temp file + rename), byte-identical on rerun."""
    import webdataset as wds

    from model_code.training import atomic_file

    n = 0
    with (
        atomic_file(path) as f,
        wds.TarWriter(f, mtime=0.0, user="vidistill", group="vidistill") as sink,
    ):
        for clip in clips:
            check_key(clip.key)
            sink.write(
                {
                    "__key__": clip.key,
                    "mp4": clip.mp4,
                    "json": json.dumps(clip.meta, sort_keys=True).encode(),
                }
            )
            n += 1
    return n


def check_key(key: str) -> str:
    """Refuse keys that would escape a folder when a tar is extracted: absolute paths and '..'."""
    if not key or key.startswith("/") or ".." in Path(key).parts or "\\" in key:
        raise ValueError(f"unsafe clip key {key!r} (absolute path or '..')")
    return key


# --- reading ---------------------------------------------------------------------------------


_SAMPLE_FILE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
"""key and extension of a tar member, as webdataset groups them (its `base_plus_ext`; importing
webdataset would import torch, which indexing a shard does not need)."""


@dataclass(frozen=True)
class Member:
    """One sample of a shard: its key and where its files lie in the tar (offset, size)."""

    key: str
    files: dict[str, tuple[int, int]]


def shard_members(path: str | Path, on_reject: Callable[[Reject], None]) -> list[Member]:
    """The samples of a shard from its tar headers, without reading any video: samples are
    the runs of files with the same key (webdataset's convention). A member that is not a
    regular file, a key that could escape a folder, or a sample without its .mp4 or .json is
    a reject, not a failure; so is an unreadable tar."""
    import tarfile

    members: list[Member] = []
    key, files, rejected = None, {}, None

    def close() -> None:
        if key is None or key == rejected:
            return
        missing = [ext for ext in ("mp4", "json") if ext not in files]
        if missing:
            on_reject({"key": key, "reason": f"incomplete sample: no .{', .'.join(missing)}"})
        else:
            members.append(Member(key, dict(files)))

    def reject(reason: str) -> None:
        nonlocal rejected
        on_reject({"key": key, "reason": reason})
        rejected = key

    try:
        with tarfile.open(path) as tar:
            for info in tar:
                named = _SAMPLE_FILE.match(info.name)
                if named is None:
                    continue  # folders and names without an extension: not part of a sample
                base, ext = named.groups()
                if base != key:
                    close()
                    key, files = base, {}
                    try:
                        check_key(key)
                    except ValueError as e:
                        reject(str(e))
                if key == rejected:
                    continue
                if not info.isreg():
                    reject(f"{info.name} is not a regular file (link or device)")
                    continue
                files[ext] = (info.offset_data, info.size)
            close()
    except (tarfile.TarError, OSError) as e:
        on_reject({"key": None, "reason": f"unreadable tar data: {e}"})
    return members


def decode_members(
    path: str, members: Sequence[Member], num_frames: int
) -> tuple[list[tuple[str, np.ndarray, dict]], list[Reject]]:
    """(key, frames uint8 [num_frames, H, W, 3], json meta) of each member that decodes, and a
    reject with its reason for each that does not. Runs in decode workers: no torch here."""
    rows, rejects = [], []
    with open(path, "rb") as f:
        for m in members:
            try:
                meta = json.loads(_read(f, m.files["json"]))
                rows.append(
                    (m.key, video.sample_frames(_read(f, m.files["mp4"]), num_frames), meta)
                )
            except (video.VideoError, ValueError, KeyError) as e:
                rejects.append({"key": m.key, "reason": f"{type(e).__name__}: {e}"})
    return rows, rejects


def _read(f, where: tuple[int, int]) -> bytes:
    f.seek(where[0])
    return f.read(where[1])


def log_reject(reject: Reject) -> None:
    """The default for `on_reject`: a warning in the log."""
    import logging

    logging.getLogger("vidistill.shards").warning(
        "reject %s: %s", reject.get("key"), reject["reason"]
    )


def iter_shard(
    path: str | Path | list[str | Path],
    num_frames: int,
    on_reject: Callable[[Reject], None] | None = None,
) -> Iterator[tuple[str, np.ndarray, dict]]:
    """(key, frames uint8 [num_frames, H, W, 3], json meta) for every usable clip of the shard(s),
    decoded in this process, in tar order. Bad clips go to `on_reject` (default: logged)."""
    on_reject = on_reject or log_reject
    stream = ClipStream(path if isinstance(path, list) else [path], num_frames, workers=0)
    reported = 0
    for _, key, frames, meta in stream:
        for reject in stream.rejects[reported:]:
            on_reject({k: v for k, v in reject.items() if k != "shard"})
        reported = len(stream.rejects)
        yield key, frames, meta
    for reject in stream.rejects[reported:]:
        on_reject({k: v for k, v in reject.items() if k != "shard"})


def decode_workers(requested: int | None = None) -> int:
    """Decode processes for a step: as requested, else the cores this process may use."""
    if requested is not None:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_pool(workers: int):
    """Worker processes forked from the caller, all at once, when its stream is created: no
    interpreter to start and nothing to import (a fork server or spawn would import the
    caller's main module in every worker). A caption step creates its stream before it imports
    torch and loads the model, so its workers never hold either; they only read tars and
    decode."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


class ClipStream:
    """The usable clips of shards, in shard then tar order, decoded by `workers` processes
    (0: in this process) that split each shard's clips in chunks, so one shard keeps every
    worker busy. Decoding starts at construction: create the stream, then load the model, and
    the first frames are ready when it is. Iterate for (shard index, key, frames, meta); bad
    clips are in `rejects` with the index of their shard under "shard"."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        num_frames: int,
        workers: int | None = None,
        chunk: int = 8,
        ahead: int | None = None,
    ):
        if workers is not None and workers < 0:
            raise ValueError(
                f"decode workers must be 0 (decode in this process) or more, not {workers}"
            )
        if num_frames < 1 or chunk < 1:
            raise ValueError(f"num_frames and chunk must be at least 1, not {num_frames}, {chunk}")
        self.paths = [str(p) for p in paths]
        self.num_frames, self.chunk = num_frames, chunk
        self.workers = decode_workers(workers)
        self.rejects: list[Reject] = []
        self._pool = _decode_pool(self.workers) if self.workers > 0 else None
        self._tasks = self._chunks()
        self._pending: collections.deque = collections.deque()
        for _ in range(ahead or 2 * max(1, self.workers)):
            if not self._submit():
                break

    def _chunks(self) -> Iterator[tuple[int, list[Member]]]:
        for shard, path in enumerate(self.paths):
            members = shard_members(path, lambda r, s=shard: self.rejects.append({**r, "shard": s}))
            for start in range(0, len(members), self.chunk):
                yield shard, members[start : start + self.chunk]

    def _submit(self) -> bool:
        task = next(self._tasks, None)
        if task is None:
            return False
        shard, members = task
        args = (self.paths[shard], members, self.num_frames)
        if self._pool is None:
            self._pending.append((shard, args))
        else:
            self._pending.append((shard, self._pool.submit(decode_members, *args)))
        return True

    def __iter__(self) -> Iterator[tuple[int, str, np.ndarray, dict]]:
        try:
            while self._pending:
                shard, job = self._pending.popleft()
                rows, rejects = decode_members(*job) if self._pool is None else job.result()
                self._submit()
                self.rejects += [{**r, "shard": shard} for r in rejects]
                for key, frames, meta in rows:
                    yield shard, key, frames, meta
        finally:
            self.close()

    def batches(self, batch_size: int) -> Iterator[tuple[int, list[str], np.ndarray]]:
        """(shard index, keys, frames [B, T, H, W, 3]); a batch never spans two shards."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        for shard, rows in itertools.groupby(self, key=lambda row: row[0]):
            rows = iter(rows)
            while chunk := list(itertools.islice(rows, batch_size)):
                yield shard, [r[1] for r in chunk], np.stack([r[2] for r in chunk])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- sources: the embedded corpus, and real videos --------------------------------------------


def embedded_clips(specs: list[corpus.ClipSpec], threads: int = 2) -> list[Clip]:
    """Render and encode embedded clips (ffmpeg runs in subprocesses, so threads overlap them)."""

    def one(spec: corpus.ClipSpec) -> Clip:
        return Clip(
            spec.key,
            video.encode_frames(corpus.render_clip(spec), spec.fps),
            corpus.clip_record(spec),
        )

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, specs))


@dataclass(frozen=True)
class VideoSource:
    """One row of a manifest: a video file, optional alt-text, optional [start, end) in seconds.
    `row` is its place in the manifest (inputs are counted by row); a row that cannot be used
    carries the reason in `error` and becomes a reject of its partition."""

    path: str
    alt_text: str = ""
    start: float | None = None
    end: float | None = None
    row: int = -1
    error: str = ""


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


VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}


def _seconds(value, name: str) -> tuple[float | None, str]:
    """(seconds or None, error): a manifest time must be a number of seconds >= 0."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None, ""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None, f"{name} {value!r} is not a number of seconds"
    if not np.isfinite(seconds) or seconds < 0:
        return None, f"{name} {value!r} must be a finite number of seconds >= 0"
    return seconds, ""


def read_manifest(path: str | Path, outside_allowed: bool = True) -> list[VideoSource]:
    """A CSV / JSONL / Parquet manifest with a `path` column (relative paths resolve against
    the manifest's folder) and optional `alt_text`, `start`, `end`; or a folder, whose video
    files are taken in name order. One source per row, in order: a row that cannot be used
    (no path, a time that is not a number or negative, end not after start, the same row twice,
    a path outside the manifest's folder when `outside_allowed` is off, a dangling link in the
    folder) carries its reason in `error`. Only an unreadable manifest raises."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        sources = []
        for p in sorted(x for x in path.rglob("*") if x.suffix.lower() in VIDEO_EXTENSIONS):
            error = ""
            if p.is_symlink() and not p.exists():
                error = f"dangling symlink: {p} -> {p.readlink()} does not exist"
            elif p.is_dir():
                continue  # a folder named like a video: what it holds is scanned itself
            elif not p.is_file():
                error = f"{p} is not a regular file"
            sources.append(VideoSource(str(p), row=len(sources), error=error))
        return sources
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype=object, keep_default_na=False)
    elif path.suffix in (".jsonl", ".json"):
        df = pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False)
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"unsupported manifest {path.name}: use .csv, .jsonl or .parquet")
    if "path" not in df.columns:
        raise ValueError(f"manifest {path} has no 'path' column (columns: {list(df.columns)})")
    root = path.parent.resolve()
    sources, seen = [], {}
    for row, record in enumerate(df.to_dict("records")):
        raw = record.get("path")
        raw = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw)
        p = Path(raw)
        p = p if p.is_absolute() else path.parent / p
        start, start_error = _seconds(record.get("start"), "start")
        end, end_error = _seconds(record.get("end"), "end")
        alt = record.get("alt_text")
        alt = "" if alt is None or (isinstance(alt, float) and np.isnan(alt)) else str(alt)
        error = start_error or end_error
        if not raw.strip():
            error = "no path"
        elif not error and start is not None and end is not None and end <= start:
            error = f"end {end:g}s is not after start {start:g}s"
        elif not outside_allowed and not p.resolve().is_relative_to(root):
            error = f"{raw} is outside the manifest's folder {root} (paths outside are off)"
        key = (str(p), start, end)
        if not error and key in seen:
            error = f"the same video and times as row {seen[key]}"
        seen.setdefault(key, row)
        sources.append(
            VideoSource(
                str(p), alt, start, end, row=row, error=f"row {row}: {error}" if error else ""
            )
        )
    return sources


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


def load_clips(
    path: str | Path | list[str | Path], num_frames: int, workers: int | None = None
) -> tuple[list[str], np.ndarray, list[dict], list[Reject]]:
    """A whole shard (or several) in memory: keys, frames [N, T, H, W, 3], metas, rejects.
    For the small supervised sets; the large corpus is streamed with ClipStream."""
    paths = path if isinstance(path, list) else [path]
    with ClipStream(paths, num_frames, workers) as stream:
        rows = [row[1:] for row in stream]
    if not rows:
        raise ValueError(f"no usable clips in {path} ({len(stream.rejects)} rejects)")
    keys, frames, metas = zip(*rows)
    return list(keys), np.stack(frames), list(metas), stream.rejects


_FRAMES_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def frames_by_key(
    paths: list[str | Path], num_frames: int, workers: int | None = None
) -> dict[str, np.ndarray]:
    """key -> frames [T, H, W, 3] for every usable clip of the shards, decoded once per process
    (by `workers` decode processes, default one per core) and cached while the shard files are
    unchanged: training makes many passes, and several dual encoders read the same shards."""
    stamp = tuple((str(p), Path(p).stat().st_mtime_ns) for p in paths)
    cache_key = (stamp, num_frames)
    if cache_key not in _FRAMES_CACHE:
        with ClipStream(paths, num_frames, workers) as stream:
            decoded = {key: frames for _, key, frames, _ in stream}
        _FRAMES_CACHE.clear()  # keep one corpus in memory, not every version of it
        _FRAMES_CACHE[cache_key] = decoded
    return _FRAMES_CACHE[cache_key]
