"""Annotated video sets in the usual MSR-VTT layout, for stage-1 captions and the benchmark.

An annotation JSON with `videos: [{video_id, ...}]` and `sentences: [{video_id, caption}]`,
a folder of `{video_id}.mp4` (or another container), and optionally a test list: a text file
with one video_id a line, or the 1k-A CSV (`MSRVTT_JSFUSION_test.csv`: `video_id`, `sentence`).

Protocols (recorded with every score):
- "1k-A": the CSV's (video, sentence) pairs, one sentence per video, as published 1k-A
  figures are scored; needs the CSV with its `sentence` column.
- "all_captions": every caption the annotation JSON has for each listed video.
- "auto" (default): 1k-A when the test list is such a CSV, else all_captions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")


@dataclass
class AnnotatedVideo:
    video_id: str
    path: str
    captions: list[str] = field(default_factory=list)


PROTOCOLS = ("auto", "1k-A", "all_captions")


def _test_list(path: Path) -> tuple[list[str], dict[str, str]]:
    """(video ids, {video id: sentence}); sentences only from a JSFUSION-style CSV."""
    if path.suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        column = "video_id" if "video_id" in df.columns else df.columns[0]
        ids = [str(v) for v in df[column]]
        if "sentence" in df.columns:
            return ids, dict(zip(ids, df["sentence"].str.strip(), strict=True))
        return ids, {}
    return [line.strip() for line in path.read_text().splitlines() if line.strip()], {}


def resolve_protocol(protocol: str, test_list: str | Path | None) -> str:
    """The protocol a benchmark is scored with ("auto" resolved)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    has_pairs = bool(test_list) and bool(_test_list(Path(test_list))[1])
    if protocol == "auto":
        return "1k-A" if has_pairs else "all_captions"
    if protocol == "1k-A" and not has_pairs:
        raise ValueError("protocol 1k-A needs test_list: the JSFUSION CSV with video_id and "
                         f"sentence columns (got {test_list or 'none'})")
    return protocol


def read_msrvtt(annotation: str | Path, videos_dir: str | Path, test_list: str | Path | None = None,
                limit: int | None = None, protocol: str = "auto") -> list[AnnotatedVideo]:
    """Videos with their reference captions, in test-list order (else annotation order): the
    CSV's one sentence each under 1k-A, every JSON caption under all_captions."""
    protocol = resolve_protocol(protocol, test_list)
    data = json.loads(Path(annotation).read_text())
    captions: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        captions.setdefault(str(s["video_id"]), []).append(str(s["caption"]).strip())
    ids, pairs = _test_list(Path(test_list)) if test_list else (
        [str(v["video_id"]) for v in data["videos"]], {})
    if protocol == "1k-A":
        captions = {vid: [pairs[vid]] for vid in ids}
    videos_dir = Path(videos_dir)
    out = []
    for vid in ids[:limit]:
        path = next((videos_dir / f"{vid}{e}" for e in VIDEO_EXTS if (videos_dir / f"{vid}{e}").exists()),
                    videos_dir / f"{vid}.mp4")
        out.append(AnnotatedVideo(vid, str(path), captions.get(vid, [])))
    missing = [v.video_id for v in out if not v.captions]
    if missing:
        raise ValueError(f"{len(missing)} videos have no captions in {annotation}: {missing[:5]}")
    return out


def msrvtt_json(videos: list[tuple[str, list[str]]], protocol: str = "all_captions") -> bytes:
    """Annotations in the MSR-VTT layout (the form the benchmark is stored in), with the
    protocol its sentences follow."""
    data = {
        "protocol": protocol,
        "videos": [{"video_id": vid, "id": i} for i, (vid, _) in enumerate(videos)],
        "sentences": [{"video_id": vid, "caption": c, "sen_id": j}
                      for j, (vid, c) in enumerate((v, c) for v, cs in videos for c in cs)],
    }
    return json.dumps(data, indent=1).encode()
