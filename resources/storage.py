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
    """The data root (default `data/` in the project, git-ignored) and the one layout under it:
    every path an asset, the launcher, the search page or the demo uses is named here.

    clips/{partition}.tar · rejects/{partition}.parquet · clip_index/{partition}.parquet ·
    captions/{source}-{captioner_version}/{partition}.parquet (and caption_rejects/ alike) ·
    checkpoints/{asset}/ ·
    checkpoints/dual_encoder/{source}/seed{N}/ · checkpoints/scaling/{source}-{F}pct-seed{N}/ ·
    checkpoints/adaptation_order/{order}/ · scores/{source}-seed{N}.parquet · benchmark/ ·
    video_index/index.duckdb · video_caption_data/ · instruction_data/instructions.parquet ·
    training_jobs/{asset}-{run id}.json · training_state/{key} · training_inputs/{key}.parquet ·
    {report}.md / .json / .png at the root (captioner_eval, ablation_table, ...) · demo.log
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
        """captions/<captioner version key>/<partition>.parquet."""
        return self.path(
            "captions",
            checked_name(captioner_version, "captioner version key"),
            checked_name(partition, "partition key") + ".parquet",
        )

    def captions_folder(self, captioner_version: str) -> Path:
        """captions/<captioner version key>/: one folder per caption source and version."""
        return self.path("captions", checked_name(captioner_version, "captioner version key"))

    def caption_rejects(self, captioner_version: str, partition: str) -> Path:
        """caption_rejects/<captioner version key>/<partition>.parquet: clips that got no
        caption, with the reason."""
        return self.path(
            "caption_rejects",
            checked_name(captioner_version, "captioner version key"),
            checked_name(partition, "partition key") + ".parquet",
        )

    def rejects(self, partition: str) -> Path:
        return self.path("rejects", checked_name(partition, "partition key") + ".parquet")

    def clip_index(self, partition: str) -> Path:
        return self.path("clip_index", checked_name(partition, "partition key") + ".parquet")

    def scores(self, source: str, seed: int | str) -> Path:
        return self.path(
            "scores", f"{checked_name(source, 'caption source')}-seed{int(seed)}.parquet"
        )

    def benchmark(self, *files: str) -> Path:
        """benchmark/ (the held-out clips, references and classes) or a file in it."""
        return self.path("benchmark", *files)

    def video_index(self) -> Path:
        return self.path("video_index", "index.duckdb")

    def video_caption_data(self, *files: str) -> Path:
        return self.path("video_caption_data", *files)

    def instruction_data(self) -> Path:
        return self.path("instruction_data", "instructions.parquet")

    def training_job(self, name: str, run_id: str) -> Path:
        return self.path("training_jobs", f"{checked_name(name, 'training name')}-{run_id}.json")

    def training_state(self, key: str) -> Path:
        """training_state/<key>: a training's resumable state (a file or a folder)."""
        return self.path("training_state", key)

    def training_inputs(self, key: str) -> Path:
        return self.path("training_inputs", f"{checked_name(key, 'training key')}.parquet")

    def report(self, name: str) -> Path:
        """<name> at the root: a summary table or plot (captioner_eval.md, ablation_table.png)."""
        return self.path(checked_name(name, "report name"))

    def write_bytes(self, path: Path, data: bytes) -> Path:
        atomic_write_bytes(path, data)
        return path

    def write_parquet(self, path: Path, df) -> Path:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.write_bytes(path, buf.getvalue())
