"""Where clips come from: the embedded motion corpus, or a folder / manifest of real videos."""

from __future__ import annotations

import re
from pathlib import Path

from dagster import ConfigurableResource


class ClipSource(ConfigurableResource):
    """`source="embedded"` generates the synthetic corpus; otherwise a folder of videos or a
    CSV / JSONL / Parquet manifest (path, optional alt_text, start, end). Videos are cut into
    `clip_seconds` clips, scaled to `size`x`size` at `fps`, `clips_per_shard` inputs a shard."""

    source: str = "embedded"
    clips_per_shard: int = 150
    corpus_clips: int = 1200
    seed: int = 0
    size: int = 64
    fps: int = 8
    frames: int = 16
    clip_seconds: float = 2.0
    ffmpeg: str = ""

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"

    def corpus_config(self):
        from model_code.corpus import CorpusConfig

        config = CorpusConfig(seed=self.seed, frames=self.frames, size=self.size, fps=self.fps)
        config.split_sizes["corpus"] = self.corpus_clips
        return config

    def ingest_config(self):
        from model_code.shards import IngestConfig

        return IngestConfig(clip_seconds=self.clip_seconds, size=self.size, fps=self.fps,
                            ffmpeg=self.ffmpeg or None)

    def plan(self) -> dict[str, dict]:
        """Partition key -> what goes in that shard. Stable: adding videos appends partitions
        and never reshuffles the existing ones (sources are taken in manifest/name order)."""
        n = self.clips_per_shard
        if self.embedded:
            total = self.corpus_clips
            return {
                f"embedded-{i // n:04d}": {"kind": "embedded", "start": i, "stop": min(i + n, total)}
                for i in range(0, total, n)
            }
        from model_code.shards import read_manifest

        sources = read_manifest(self.source)
        stem = re.sub(r"[^a-z0-9]+", "-", Path(self.source).stem.lower()).strip("-") or "videos"
        return {
            f"{stem}-{i // n:04d}": {
                "kind": "videos",
                "sources": [vars(s) for s in sources[i : i + n]],
            }
            for i in range(0, len(sources), n)
        }
