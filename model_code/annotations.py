"""Annotated video sets in the usual MSR-VTT layout, for stage-1 captions and the benchmark.

An annotation JSON with `videos: [{video_id, ...}]` and `sentences: [{video_id, caption}]`,
a folder of `{video_id}.mp4` (or another container), and optionally a test list: a text file
with one video_id a line, or the 1k-A CSV (`MSRVTT_JSFUSION_test.csv`, column `video_id`)."""

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


def _test_ids(path: Path) -> list[str]:
    if path.suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path)
        column = "video_id" if "video_id" in df.columns else df.columns[0]
        return [str(v) for v in df[column]]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_msrvtt(annotation: str | Path, videos_dir: str | Path, test_list: str | Path | None = None,
                limit: int | None = None) -> list[AnnotatedVideo]:
    """Videos with all their captions, in test-list order (else annotation order)."""
    data = json.loads(Path(annotation).read_text())
    captions: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        captions.setdefault(str(s["video_id"]), []).append(str(s["caption"]).strip())
    ids = _test_ids(Path(test_list)) if test_list else [str(v["video_id"]) for v in data["videos"]]
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


def msrvtt_json(videos: list[tuple[str, list[str]]]) -> bytes:
    """Annotations in the MSR-VTT layout (the form the embedded benchmark ships in)."""
    data = {
        "videos": [{"video_id": vid, "id": i} for i, (vid, _) in enumerate(videos)],
        "sentences": [{"video_id": vid, "caption": c, "sen_id": j}
                      for j, (vid, c) in enumerate((v, c) for v, cs in videos for c in cs)],
    }
    return json.dumps(data, indent=1).encode()
