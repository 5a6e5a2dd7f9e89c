"""Webdataset clip shards: write them atomically, read them back as frames, ingest real videos.

A shard is `clips/{partition}.tar` holding `{key}.mp4` (h264) and `{key}.json` per clip.
Reading is a composition of small webdataset stages (shard list -> split by node/worker ->
samples -> safe keys -> decode); a clip that fails any stage becomes a reject with its reason
instead of failing the shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            with wds.TarWriter(f, mtime=0.0, user="vidistill", group="vidistill") as sink:
                for clip in clips:
                    check_key(clip.key)
                    sink.write({"__key__": clip.key, "mp4": clip.mp4,
                                "json": json.dumps(clip.meta, sort_keys=True).encode()})
                    n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def check_key(key: str) -> str:
    """Refuse keys that would escape a folder when a tar is extracted: absolute paths and '..'."""
    if not key or key.startswith("/") or ".." in Path(key).parts or "\\" in key:
        raise ValueError(f"unsafe clip key {key!r} (absolute path or '..')")
    return key


# --- reading ---------------------------------------------------------------------------------


def _safe_samples(samples: Iterable[dict], on_reject: Callable[[Reject], None]) -> Iterator[dict]:
    for s in samples:
        key = s.get("__key__", "")
        try:
            check_key(key)
        except ValueError as e:
            on_reject({"key": key, "reason": str(e)})
            continue
        missing = [ext for ext in ("mp4", "json") if ext not in s]
        if missing:
            on_reject({"key": key, "reason": f"incomplete sample: no .{', .'.join(missing)}"})
            continue
        yield s


def _decoded(samples: Iterable[dict], num_frames: int, on_reject) -> Iterator[tuple[str, np.ndarray, dict]]:
    for s in samples:
        key = s["__key__"]
        try:
            meta = json.loads(s["json"])
            frames = video.sample_frames(s["mp4"], num_frames, size=(meta["width"], meta["height"]))
        except (video.VideoError, ValueError, KeyError) as e:
            on_reject({"key": key, "reason": f"{type(e).__name__}: {e}"})
            continue
        yield key, frames, meta


def _log_reject(reject: Reject) -> None:
    import logging

    logging.getLogger("vidistill.shards").warning("reject %s: %s", reject.get("key"), reject["reason"])


def iter_shard(
    path: str | Path | list[str | Path],
    num_frames: int,
    on_reject: Callable[[Reject], None] | None = None,
    split_by_worker: bool = True,
) -> Iterator[tuple[str, np.ndarray, dict]]:
    """(key, frames uint8 [num_frames, H, W, 3], json meta) for every usable clip of the shard(s).

    Bad clips go to `on_reject` (default: logged). Inside DataLoader workers and torchrun
    ranks, each shard is read by one worker/rank only."""
    import webdataset as wds

    on_reject = on_reject or _log_reject
    urls = [str(p) for p in (path if isinstance(path, list) else [path])]
    stages = [wds.SimpleShardList(urls)]
    if split_by_worker:
        stages += [wds.split_by_node, wds.split_by_worker]

    def handler(exn: Exception) -> bool:
        on_reject({"key": None, "reason": f"unreadable tar data: {exn}"})
        return True

    stages.append(wds.tarfile_to_samples(handler=handler))
    pipeline = wds.DataPipeline(*stages)
    yield from _decoded(_safe_samples(pipeline, on_reject), num_frames, on_reject)


@dataclass
class ShardClips:
    """A torch IterableDataset-like view of shards for DataLoader workers (decode in workers)."""

    paths: list[str]
    num_frames: int
    rejects: list[Reject] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, dict]]:
        return iter_shard(self.paths, self.num_frames, on_reject=self.rejects.append)


def read_meta(path: str | Path) -> list[dict]:
    """The json sidecars of a shard, without decoding video (fast: for catalogs and joins)."""
    import tarfile

    metas = []
    with tarfile.open(path) as tar:
        for m in tar:
            if m.name.endswith(".json"):
                check_key(m.name[: -len(".json")])
                metas.append(json.loads(tar.extractfile(m).read()))
    return metas


# --- sources: the embedded corpus, and real videos --------------------------------------------


def embedded_clips(specs: list[corpus.ClipSpec], threads: int = 2) -> list[Clip]:
    """Render and encode embedded clips (ffmpeg runs in subprocesses, so threads overlap them)."""

    def one(spec: corpus.ClipSpec) -> Clip:
        return Clip(spec.key, video.encode_frames(corpus.render_clip(spec), spec.fps),
                    corpus.clip_record(spec))

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, specs))


@dataclass(frozen=True)
class VideoSource:
    """One row of a manifest: a video file, optional alt-text, optional [start, end) in seconds."""

    path: str
    alt_text: str = ""
    start: float | None = None
    end: float | None = None


@dataclass
class IngestConfig:
    clip_seconds: float = 2.0
    size: int = 64
    fps: int = 8
    min_frames: int = 4
    max_clips_per_video: int = 8
    ffmpeg: str | None = None


def source_id(source: VideoSource) -> str:
    """A stable id for a source row; clip keys derive from it, so keys survive reruns."""
    h = hashlib.sha256(f"{source.path}|{source.start}|{source.end}".encode()).hexdigest()[:12]
    return f"v{h}"


def clip_windows(info: video.VideoInfo, source: VideoSource, cfg: IngestConfig) -> list[tuple[float, float]]:
    start = source.start or 0.0
    end = min(source.end, info.duration) if source.end is not None else info.duration
    if end - start < cfg.min_frames / cfg.fps:
        raise video.VideoError(
            f"too short: {max(0.0, end - start):.2f}s < {cfg.min_frames} frames at {cfg.fps} fps"
        )
    windows = []
    t = start
    while t < end - 1e-6 and len(windows) < cfg.max_clips_per_video:
        stop = min(t + cfg.clip_seconds, end)
        if stop - t >= cfg.min_frames / cfg.fps:
            windows.append((round(t, 3), round(stop, 3)))
        t += cfg.clip_seconds
    return windows


def ingest_source(source: VideoSource, cfg: IngestConfig) -> tuple[list[Clip], list[Reject]]:
    """Cut one video into fixed-size, fixed-fps h264 clips. Never raises for bad input:
    an unusable source, or an unusable window of it, comes back as a reject with its reason."""
    sid = source_id(source)
    try:
        info = video.probe(source.path, cfg.ffmpeg)
        if not info.has_video:
            raise video.VideoError("no video stream (audio-only or data file)")
        windows = clip_windows(info, source, cfg)
    except (video.VideoError, OSError, UnicodeError) as e:
        return [], [{"source": source.path, "key": sid, "reason": str(e)}]
    clips, rejects = [], []
    for i, (start, end) in enumerate(windows):
        key = f"{sid}-{i:03d}"
        try:
            mp4 = video.transcode_clip(source.path, start, end, cfg.size, cfg.fps, ffmpeg=cfg.ffmpeg)
            n = len(video.decode_frames(mp4, cfg.ffmpeg, size=(cfg.size, cfg.size)))
            if n < cfg.min_frames:
                raise video.VideoError(f"too short: {n} decodable frames < {cfg.min_frames}")
        except video.VideoError as e:
            rejects.append({"source": source.path, "key": key, "reason": str(e)})
            continue
        clips.append(Clip(key, mp4, {
            "key": key, "source": source.path, "start": start, "end": end, "fps": cfg.fps,
            "width": cfg.size, "height": cfg.size, "frames": n, "alt_text": source.alt_text,
            "source_codec": info.codec, "source_width": info.width, "source_height": info.height,
        }))
    return clips, rejects


def read_manifest(path: str | Path) -> list[VideoSource]:
    """A CSV / JSONL / Parquet manifest with a `path` column (relative to the manifest) and
    optional `alt_text`, `start`, `end`; or a folder, whose video files are taken in name order."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        exts = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        return [VideoSource(str(p)) for p in files]
    if path.suffix == ".csv":
        df = pd.read_csv(path)
    elif path.suffix in (".jsonl", ".json"):
        df = pd.read_json(path, lines=path.suffix == ".jsonl")
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"unsupported manifest {path.name}: use .csv, .jsonl or .parquet")
    if "path" not in df.columns:
        raise ValueError(f"manifest {path} has no 'path' column (columns: {list(df.columns)})")

    def opt(row, name):
        v = row.get(name)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else v

    sources = []
    for row in df.to_dict("records"):
        p = Path(str(row["path"]))
        p = p if p.is_absolute() else path.parent / p
        start, end = opt(row, "start"), opt(row, "end")
        sources.append(VideoSource(str(p), str(opt(row, "alt_text") or ""),
                                   None if start is None else float(start),
                                   None if end is None else float(end)))
    return sources


def ingest(sources: list[VideoSource], cfg: IngestConfig, threads: int = 2) -> tuple[list[Clip], list[Reject]]:
    """Ingest many sources; order of clips follows the sources, so shards are reproducible."""
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda s: ingest_source(s, cfg), sources))
    clips = [c for cs, _ in results for c in cs]
    rejects = [r for _, rs in results for r in rs]
    return clips, rejects


def rejects_bytes(rejects: list[Reject]) -> bytes:
    """Rejects as a parquet file's bytes (written atomically by the caller)."""
    import pandas as pd

    df = pd.DataFrame(rejects, columns=["key", "source", "reason"]).astype("string")
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def load_clips(
    path: str | Path | list[str | Path], num_frames: int
) -> tuple[list[str], np.ndarray, list[dict], list[Reject]]:
    """A whole shard (or several) in memory: keys, frames [N, T, H, W, 3], metas, rejects.
    For the small supervised sets; the large corpus is streamed with iter_shard."""
    rejects: list[Reject] = []
    rows = list(iter_shard(path, num_frames, on_reject=rejects.append, split_by_worker=False))
    if not rows:
        raise ValueError(f"no usable clips in {path} ({len(rejects)} rejects)")
    keys, frames, metas = zip(*rows)
    return list(keys), np.stack(frames), list(metas), rejects


def _identity(batch):
    return batch


class _BatchStream(torch.utils.data.IterableDataset):
    """Worker side of ClipBatches: decode and batch; rejects ride along with each batch."""

    def __init__(self, paths: list[str], num_frames: int, batch_size: int):
        self.paths, self.num_frames, self.batch_size = paths, num_frames, batch_size

    def __iter__(self):
        rejects: list[Reject] = []
        keys, frames = [], []
        for key, f, _ in iter_shard(self.paths, self.num_frames, on_reject=rejects.append):
            keys.append(key)
            frames.append(f)
            if len(keys) == self.batch_size:
                yield keys, np.stack(frames), rejects
                keys, frames, rejects = [], [], []
        if keys or rejects:
            yield keys, np.stack(frames) if frames else None, rejects


class ClipBatches:
    """Batches of (keys, frames [B, T, H, W, 3]) from shards, decoded in DataLoader worker
    processes while the caller's model works. Rejects travel in the same stream (workers
    cannot append to the parent's lists) and are collected in `self.rejects`."""

    def __init__(self, paths: list[str | Path], num_frames: int, batch_size: int, num_workers: int = 1):
        self.paths = [str(p) for p in paths]
        self.num_frames, self.batch_size, self.num_workers = num_frames, batch_size, num_workers
        self.rejects: list[Reject] = []

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray]]:
        workers = min(self.num_workers, len(self.paths))
        loader = torch.utils.data.DataLoader(
            _BatchStream(self.paths, self.num_frames, self.batch_size), batch_size=None,
            num_workers=workers, multiprocessing_context="spawn" if workers else None,
            collate_fn=_identity,
        )
        for keys, frames, rejects in loader:
            self.rejects.extend(rejects)
            if keys:
                yield keys, frames


_FRAMES_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def frames_by_key(paths: list[str | Path], num_frames: int, threads: int = 2) -> dict[str, np.ndarray]:
    """key -> frames [T, H, W, 3] for every usable clip of the shards, decoded once per process
    (ffmpeg subprocesses in `threads` threads) and cached while the shard files are unchanged:
    training makes many passes, and several dual encoders read the same shards."""
    import webdataset as wds

    stamp = tuple((str(p), Path(p).stat().st_mtime_ns) for p in paths)
    cache_key = (stamp, num_frames)
    if cache_key not in _FRAMES_CACHE:
        rejects: list[Reject] = []
        pipeline = wds.DataPipeline(wds.SimpleShardList([str(p) for p in paths]),
                                    wds.tarfile_to_samples())
        samples = list(_safe_samples(pipeline, rejects.append))

        def decode(s: dict):
            return list(_decoded([s], num_frames, rejects.append))

        with ThreadPoolExecutor(threads) as pool:
            decoded = [row for rows in pool.map(decode, samples) for row in rows]
        _FRAMES_CACHE.clear()  # keep one corpus in memory, not every version of it
        _FRAMES_CACHE[cache_key] = {key: frames for key, frames, _ in decoded}
    return _FRAMES_CACHE[cache_key]
