"""Where clips come from: the embedded motion corpus, or a folder / manifest of real videos."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from dagster import ConfigurableResource
from pydantic import AfterValidator, Field

from resources.fields import OptionalExecutable


def _source(value: str) -> str:
    if value != "embedded" and not Path(value).exists():
        raise ValueError(f"{value!r} is neither 'embedded' nor an existing folder or manifest")
    return value


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"{value} is odd: video frames need an even side")
    return value


Source = Annotated[str, AfterValidator(_source)]
EvenSide = Annotated[int, Field(ge=16, le=4096), AfterValidator(_even)]


class ClipSource(ConfigurableResource):
    """`source="embedded"` generates the synthetic corpus; otherwise a folder of videos or a
    CSV / JSONL / Parquet manifest (path, optional alt_text, start, end). Videos are cut into
    `clip_seconds` clips, scaled to `size`x`size` at `fps`, `clips_per_shard` inputs a shard."""

    source: Source = Field(
        default="embedded",
        description="embedded, or a folder of videos / "
        "a CSV, JSONL or Parquet manifest that exists",
    )
    clips_per_shard: int = Field(default=150, ge=1, description="clips (inputs) per shard")
    corpus_clips: int = Field(default=1200, ge=1, description="embedded corpus size")
    seed: int = Field(default=0, ge=0)
    size: EvenSide = Field(default=64, description="frame side in pixels (even, 16 to 4096)")
    fps: int = Field(default=8, ge=1, le=120)
    frames: int = Field(default=16, ge=2, le=4096, description="frames per embedded clip")
    clip_seconds: float = Field(default=2.0, gt=0, le=3600)
    ffmpeg: OptionalExecutable = Field(default="", description="ffmpeg binary; empty = bundled")
    split: Literal["fixed", "shots"] = Field(
        default="fixed",
        description="fixed: clip_seconds windows; shots: cut the videos at shot "
        "changes first, so no clip spans a cut",
    )
    min_clip_seconds: float = Field(
        default=0.5, gt=0, le=3600, description="shots: a shorter piece of a shot is dropped"
    )
    shot_threshold: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="shots: ffmpeg's scene-change score that starts a new shot",
    )
    paths_outside_manifest: bool = Field(
        default=True,
        description="allow manifest rows whose paths lie outside the manifest's "
        "folder (absolute paths, ../); off: such a row is a reject",
    )

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"

    def corpus_config(self):
        from model_code.data.corpus import CorpusConfig

        config = CorpusConfig(seed=self.seed, frames=self.frames, size=self.size, fps=self.fps)
        config.split_sizes["corpus"] = self.corpus_clips
        return config

    def ingest_config(self):
        from model_code.data.ingest import IngestConfig

        return IngestConfig(
            clip_seconds=self.clip_seconds,
            size=self.size,
            fps=self.fps,
            ffmpeg=self.ffmpeg or None,
            split=self.split,
            min_clip_seconds=self.min_clip_seconds,
            shot_threshold=self.shot_threshold,
        )

    def plan(self) -> dict[str, dict]:
        """Partition key -> what goes in that shard. Stable: adding videos appends partitions
        and never reshuffles the existing ones (sources are taken in manifest/name order)."""
        n = self.clips_per_shard
        if self.embedded:
            total = self.corpus_clips
            return {
                f"embedded-{i // n:04d}": {
                    "kind": "embedded",
                    "start": i,
                    "stop": min(i + n, total),
                }
                for i in range(0, total, n)
            }
        from model_code.data.manifest import read_manifest

        sources = read_manifest(self.source, outside_allowed=self.paths_outside_manifest)
        stem = re.sub(r"[^a-z0-9]+", "-", Path(self.source).stem.lower()).strip("-") or "videos"
        return {
            f"{stem}-{i // n:04d}": {
                "kind": "videos",
                "sources": [vars(s) for s in sources[i : i + n]],
            }
            for i in range(0, len(sources), n)
        }
