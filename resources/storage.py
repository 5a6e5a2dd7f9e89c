"""Where artifacts live: one data root, one layout, atomic writes."""

from __future__ import annotations

import io
from pathlib import Path

from dagster import ConfigurableResource

from model_code.training import atomic_write_bytes


class ArtifactStore(ConfigurableResource):
    """The data root (default `data/` in the project, git-ignored) and the layout under it:

    clips/{partition}.tar · rejects/{partition}.parquet · clip_index/{partition}.parquet ·
    captions/{captioner_version}/{partition}.parquet · checkpoints/{asset}/ · scores/ · ...
    """

    root: str = "data"

    def path(self, *parts: str) -> Path:
        return Path(self.root).resolve().joinpath(*parts)

    def shard(self, partition: str) -> Path:
        return self.path("clips", f"{partition}.tar")

    def checkpoint(self, name: str) -> Path:
        return self.path("checkpoints", name)

    def captions(self, captioner_version: str, partition: str) -> Path:
        return self.path("captions", captioner_version, f"{partition}.parquet")

    def write_bytes(self, path: Path, data: bytes) -> Path:
        atomic_write_bytes(path, data)
        return path

    def write_parquet(self, path: Path, df) -> Path:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.write_bytes(path, buf.getvalue())
