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
    return _resolve(protocol, bool(test_list) and bool(_test_list(Path(test_list))[1]), test_list)


def _resolve(protocol: str, has_pairs: bool, test_list) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if protocol == "auto":
        return "1k-A" if has_pairs else "all_captions"
    if protocol == "1k-A" and not has_pairs:
        raise ValueError(
            "protocol 1k-A needs test_list: the JSFUSION CSV with video_id and "
            f"sentence columns (got {test_list or 'none'})"
        )
    return protocol


def read_msrvtt(
    annotation: str | Path,
    videos_dir: str | Path,
    test_list: str | Path | None = None,
    limit: int | None = None,
    protocol: str = "auto",
) -> list[AnnotatedVideo]:
    """Videos with their reference captions, in test-list order (else annotation order): the
    CSV's one sentence each under 1k-A, every JSON caption under all_captions."""
    data = json.loads(Path(annotation).read_text())
    return _msrvtt(data, annotation, videos_dir, test_list, limit, protocol)[0]


def _msrvtt(data: dict, annotation, videos_dir, test_list, limit, protocol):
    """(videos, resolved protocol) of a parsed MSR-VTT JSON; the test list is read once."""
    captions: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        captions.setdefault(str(s["video_id"]), []).append(str(s["caption"]).strip())
    ids, pairs = (
        _test_list(Path(test_list))
        if test_list
        else ([str(v["video_id"]) for v in data["videos"]], {})
    )
    protocol = _resolve(protocol, bool(pairs), test_list)
    if protocol == "1k-A":
        captions = {vid: [pairs[vid]] for vid in ids}
    videos_dir = Path(videos_dir)
    out = [
        AnnotatedVideo(vid, str(_video_path(videos_dir, vid)), captions.get(vid, []))
        for vid in ids[:limit]
    ]
    missing = [v.video_id for v in out if not v.captions]
    if missing:
        raise ValueError(f"{len(missing)} videos have no captions in {annotation}: {missing[:5]}")
    return out, protocol


def _video_path(videos_dir: Path, vid: str) -> Path:
    return next(
        (videos_dir / f"{vid}{e}" for e in VIDEO_EXTS if (videos_dir / f"{vid}{e}").exists()),
        videos_dir / f"{vid}.mp4",
    )


def read_vatex(
    annotation: str | Path, videos_dir: str | Path, limit: int | None = None
) -> list[AnnotatedVideo]:
    """A VATEX JSON (a list of {videoID, enCap: [...]}): videos `{videoID}.mp4` (or another
    container) with their English captions, in file order."""
    return _vatex(json.loads(Path(annotation).read_text()), annotation, videos_dir, limit)


def _vatex(data: list, annotation, videos_dir, limit) -> list[AnnotatedVideo]:
    if not isinstance(data, list):
        raise ValueError(f"{annotation}: a VATEX file is a JSON list of {{videoID, enCap}}")  # noqa: TRY004
    videos_dir = Path(videos_dir)
    out = []
    for i, item in enumerate(data[:limit]):
        if not isinstance(item, dict) or "videoID" not in item:
            raise ValueError(f"{annotation}: item {i} has no videoID")
        captions = [str(c).strip() for c in item.get("enCap", []) if str(c).strip()]
        if not captions:
            raise ValueError(f"{annotation}: video {item['videoID']} has no enCap captions")
        vid = str(item["videoID"])
        out.append(AnnotatedVideo(vid, str(_video_path(videos_dir, vid)), captions))
    return out


def read_annotations(
    annotation: str | Path,
    videos_dir: str | Path,
    test_list: str | Path | None = None,
    limit: int | None = None,
    protocol: str = "auto",
) -> tuple[list[AnnotatedVideo], str]:
    """(videos, protocol) from an MSR-VTT JSON (with its test list and protocol) or a VATEX
    JSON (protocol "vatex": every English caption), told apart by their layout."""
    data = json.loads(Path(annotation).read_text())
    if isinstance(data, list):
        if test_list or protocol not in ("auto", "all_captions"):
            raise ValueError(
                f"{annotation} is a VATEX file: test_list and protocol {protocol!r} are for MSR-VTT"
            )
        return _vatex(data, annotation, videos_dir, limit), "vatex"
    return _msrvtt(data, annotation, videos_dir, test_list, limit, protocol)


def _class_words(name: str) -> str:
    """A class folder or label as words: ApplyEyeMakeup -> apply eye makeup,
    ride_bike -> ride bike."""
    import re

    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(spaced.lower().split())


def read_labelled(path: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Videos for zero-shot classification: a folder with one sub-folder per class
    (UCF101 / HMDB style), or a CSV with `path` (relative to it) and `label`. Returns (class
    names as words, [(video path, class index)])."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        folders = sorted(p for p in path.iterdir() if p.is_dir())
        names = [_class_words(p.name) for p in folders]
        items = [
            (str(v), i)
            for i, f in enumerate(folders)
            for v in sorted(f.rglob("*"))
            if v.suffix.lower() in VIDEO_EXTS
        ]
    else:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        if not {"path", "label"} <= set(df.columns):
            raise ValueError(
                f"{path}: a class list needs columns path and label (has {list(df.columns)})"
            )
        labels = sorted(set(df["label"]))
        names = [_class_words(label) for label in labels]
        items = [
            (str(p if Path(p).is_absolute() else path.parent / p), labels.index(label))
            for p, label in zip(df["path"], df["label"], strict=True)
        ]
    if len(names) < 2:
        raise ValueError(f"{path}: zero-shot classification needs at least 2 classes")
    return names, items


def class_prompts(names: list[str]) -> list[list[str]]:
    """A small CLIP-style prompt ensemble per class."""
    return [[f"a video of {n}", f"a person doing {n}", n] for n in names]


def msrvtt_json(videos: list[tuple[str, list[str]]], protocol: str = "all_captions") -> bytes:
    """Annotations in the MSR-VTT layout (the form the benchmark is stored in), with the
    protocol its sentences follow."""
    data = {
        "protocol": protocol,
        "videos": [{"video_id": vid, "id": i} for i, (vid, _) in enumerate(videos)],
        "sentences": [
            {"video_id": vid, "caption": c, "sen_id": j}
            for j, (vid, c) in enumerate((v, c) for v, cs in videos for c in cs)
        ],
    }
    return json.dumps(data, indent=1).encode()
