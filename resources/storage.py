"""Where artifacts live: one data root, one layout, atomic writes."""

from __future__ import annotations

import io
import re
from pathlib import Path

from dagster import ConfigurableResource

from model_code.runtime.files import atomic_write_bytes
from resources.fields import NonEmpty

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


def checked_name(name: str, what: str = "name", limit: int = 200) -> str:
    """`name` if it is one safe path component (letters, digits, _ . = + -; no leading dot, no
    '..', at most `limit` characters), else ValueError naming it."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name or len(name) > limit:
        raise ValueError(
            f"{what} {name!r} is not allowed in a path under the data root: use "
            "letters, digits and _ . = + - (not first: . = + -; no '..', no '/'), "
            f"up to {limit} characters"
        )
    return name


class ArtifactStore(ConfigurableResource):
    """The data root (default `data/` in the project, git-ignored) and the layout under it:

    clips/{partition}.tar · rejects/{partition}.parquet · clip_index/{partition}.parquet ·
    captions/{source}-{captioner_version}/{partition}.parquet · checkpoints/{asset}/ ·
    checkpoints/dual_encoder/{source}/seed{N}/ · scores/{source}-seed{N}.parquet · ...
    """

    root: NonEmpty = "data"

    def path(self, *parts: str) -> Path:
        """root/parts..., each part one or more '/'-separated safe names (checked_name): a
        path built from a partition key, a caption source or a version never leaves the root."""
        names = [
            checked_name(n, "path name", limit=250) for part in parts for n in str(part).split("/")
        ]
        return Path(self.root).resolve().joinpath(*names)

    def shard(self, partition: str) -> Path:
        return self.path("clips", checked_name(partition, "partition key") + ".tar")

    def checkpoint(self, name: str) -> Path:
        """checkpoints/<name>; a name may have folders (dual_encoder/alt_text)."""
        for part in name.split("/"):
            checked_name(part, "checkpoint name")
        return self.path("checkpoints", name)

    def dual_encoder(self, source: str, seed: int | str = 0) -> Path:
        """checkpoints/dual_encoder/<source>/seed<N>: one folder per (caption source, seed),
        the checkpoint of exactly one partition of the asset dual_encoder/<source>."""
        return self.checkpoint(f"dual_encoder/{source}/seed{int(seed)}")

    def captions(self, captioner_version: str, partition: str) -> Path:
        return self.path(
            "captions",
            checked_name(captioner_version, "captioner version key"),
            checked_name(partition, "partition key") + ".parquet",
        )

    def write_bytes(self, path: Path, data: bytes) -> Path:
        atomic_write_bytes(path, data)
        return path

    def write_parquet(self, path: Path, df) -> Path:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.write_bytes(path, buf.getvalue())
