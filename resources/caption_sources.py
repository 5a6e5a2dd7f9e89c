"""Which captions a caption source stands for now: the checkpoint that writes each source, the
captioner version every caption row carries, and a source's current captions in the catalog.
The caption assets, the dual encoders and the search page all ask here."""

from __future__ import annotations

from model_code.runtime import settings
from resources.catalog import Catalog
from resources.storage import ArtifactStore


def teacher_version(folder: str) -> str:
    """The captioner version of an off-the-shelf teacher: teacher-<hash of its weights>."""
    from model_code.models.lineage import folder_hash

    return f"teacher-{folder_hash(folder)}"


def captioner_version(checkpoint: str, store: ArtifactStore, folder: str | None = None) -> str:
    """The captioner version every caption row carries: <checkpoint>-<its weights' version>
    for a vidistill checkpoint (from its lineage), teacher-<hash of its weights> for an outside
    `folder`."""
    from model_code.models.lineage import read_lineage

    if folder is not None:
        return teacher_version(folder)
    return f"{checkpoint}-{read_lineage(store.checkpoint(checkpoint))['version']}"


def caption_folder(source: str, version: str) -> str:
    """captions/<this>/<partition>.parquet: one folder per caption source and captioner version."""
    return f"{source}-{version}"


CAPTIONERS: dict[str, tuple[str, str]] = {
    "frame_captions": ("image_vlm", "middle"),
    "stage1_captions": ("visual_adapted_vlm", "clip"),
    "stage1_sampled": ("visual_adapted_vlm", "clip"),
    "pseudo_captions": ("video_vlm", "clip"),
    "pseudo_sampled": ("video_vlm", "clip"),
}
"""Caption source -> (the checkpoint that writes it, what it is shown: the clip's frames or its
middle frame as a still). The ladder's rungs, each an asset of its own."""


def teacher_in_catalog(catalog: Catalog) -> str:
    """The teacher's captioner version: that of $VIDISTILL_TEACHER, else the only one there is."""
    if settings.TEACHER.is_set():
        return teacher_version(settings.TEACHER.get())
    versions = catalog.query(
        "SELECT DISTINCT captioner_version v FROM captions WHERE captioner_version LIKE 'teacher-%'"
    )["v"].tolist()
    if len(versions) != 1:
        raise ValueError(
            f"{len(versions)} teachers' captions in the catalog ({versions}): set "
            "$VIDISTILL_TEACHER to the teacher whose captions to train on"
        )
    return versions[0]


def current_captions(source: str, catalog: Catalog, store: ArtifactStore):
    """(key, partition, sample, caption, version) of every clip captioned for `source` by the
    captioner it stands for now (its checkpoint's current version; for teacher_captions the
    teacher of $VIDISTILL_TEACHER), in (partition, key, sample) order; ValueError if none."""
    if source == "teacher_captions":
        version = teacher_in_catalog(catalog)
    else:
        version = captioner_version(CAPTIONERS[source][0], store)
    df = (
        catalog.query(
            "SELECT key, partition, coalesce(sample, 0) AS sample, caption, captioner_version AS "
            "version FROM captions WHERE source = ? AND captioner_version = ? "
            "ORDER BY partition, key, sample",
            [source, version],
        )
        if catalog.has("captions")
        else None
    )
    if df is None or df.empty:
        raise ValueError(f"no {source} by {version} in the catalog: materialize {source} first")
    return df
