"""The videos to ingest: a folder of videos, or a manifest (CSV / JSONL / Parquet) of paths
with optional start, end and alt-text; one bad row is one reject with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
