"""Webdataset clip shards: write them atomically, read them back as frames, ingest real videos.

A shard is `clips/{partition}.tar` holding `{key}.mp4` (h264) and `{key}.json` per clip,
written with webdataset's TarWriter. Reading starts from the shard's tar headers (where each
sample's files lie), so any reader can decode any share of a shard's clips by seeking to them:
decode workers split one shard in chunks, training readers take every n-th clip. A clip that
cannot be read or decoded becomes a reject with its reason instead of failing the shard.
"""

from __future__ import annotations

import collections
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

from model_code.data import corpus, video

Reject = dict  # {"key" or "source", "reason", ...}


@dataclass(frozen=True)
class Clip:
    key: str
    mp4: bytes
    meta: dict


def write_shard(path: str | Path, clips: Iterable[Clip]) -> int:
    """Write clips to a webdataset tar, atomically (temp file + rename), byte-identical on rerun."""
    import webdataset as wds

    from model_code.runtime.files import atomic_file

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
