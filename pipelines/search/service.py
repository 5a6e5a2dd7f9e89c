"""What the search page serves, kept loaded: the VideoSearch, the catalog's notes and each
shard's members, each reloaded when its files change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipelines.search.inputs import (
    DEFAULT_K,
    SearchError,
    checked_clip_name,
    checked_k,
    checked_query,
)
from resources.catalog import Catalog
from resources.storage import ArtifactStore

log = logging.getLogger("vidistill.search")
MATERIALIZE = (
    "materialize video_index (dagster asset materialize -m pipelines.definitions "
    "--select video_index), which needs the pseudo_captions dual encoder"
)


def clip_url(partition: str, key: str) -> str:
    return f"/clips/{quote(partition, safe='')}/{quote(key, safe='')}.mp4"


# --- what the service holds ------------------------------------------------------------------


@dataclass(frozen=True)
class Notes:
    """What the catalog says of each clip: alt-text, the current frame caption and pseudo
    caption (sample 0), and the catalog's partitions with their clips in order."""

    alt_text: dict[str, str]
    frame_caption: dict[str, str]
    pseudo_caption: dict[str, str]
    partitions: dict[str, list[str]]


def _stamp(paths: Sequence[Path]) -> tuple:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), None, None))
    return tuple(out)


def _sample0_captions(source: str, catalog: Catalog, store: ArtifactStore) -> dict[str, str]:
    """key -> caption of the captioner `source` stands for now (resources.caption_sources'
    current_captions), sample 0; empty when that source is not captioned (yet)."""
    import duckdb

    from resources.caption_sources import current_captions

    try:
        df = current_captions(source, catalog, store)
    except (ValueError, OSError, duckdb.Error):
        return {}
    df = df[df["sample"] == 0]
    return dict(zip(df["key"], df["caption"], strict=True))


class SearchService:
    """The loaded VideoSearch and the catalog's notes, each reloaded when its files change;
    the members of each shard (where each clip's bytes lie), read once per shard version."""

    def __init__(self, data_root: str | Path = "data"):
        self.store = ArtifactStore(root=str(data_root))
        self.catalog = Catalog(root=str(data_root))
        self.index_path = self.store.video_index()
        self.model_path = self.store.dual_encoder("pseudo_captions", seed=0)
        self._lock = threading.Lock()
        self._search: tuple[tuple, object] | None = None  # (stamp, VideoSearch or SearchError)
        self._notes: tuple[tuple, Notes] | None = None
        self._members: dict[Path, tuple[int, dict[str, tuple[int, int]]]] = {}

    # the model and the index

    def _search_stamp(self) -> tuple:
        model_files = [self.model_path / n for n in ("config.json", "lineage.json")]
        model_files += sorted(self.model_path.glob("*.safetensors"))
        return _stamp([self.index_path, *model_files])

    def search(self):
        """The loaded model_code.inference.video_index.VideoSearch, or SearchError(503) saying what
        to
        materialize."""
        stamp = self._search_stamp()
        with self._lock:
            if self._search is None or self._search[0] != stamp:
                self._search = (stamp, self._load_search())
            loaded = self._search[1]
        if isinstance(loaded, SearchError):
            raise loaded
        return loaded

    def _load_search(self):
        from model_code.inference.video_index import VideoSearch

        try:
            loaded = VideoSearch(self.index_path, self.model_path)
        except (OSError, ValueError) as e:
            log.warning("search unavailable: %s", e)
            return SearchError(503, f"search is not available: {e}. To search, {MATERIALIZE}.")
        log.info(
            "loaded %d clips from %s, model %s",
            len(loaded.index.keys),
            self.index_path,
            self.model_path,
        )
        return loaded

    def search_or_none(self):
        try:
            return self.search()
        except SearchError:
            return None

    # the catalog

    def _notes_stamp(self) -> tuple:
        root = Path(self.store.root).resolve()
        files = sorted(root.glob("clip_index/*.parquet")) + sorted(
            root.glob("captions/*/*.parquet")
        )
        files += [self.store.checkpoint(n) / "lineage.json" for n in ("image_vlm", "video_vlm")]
        return _stamp(files)

    def notes(self) -> Notes:
        stamp = self._notes_stamp()
        with self._lock:
            if self._notes is None or self._notes[0] != stamp:
                self._notes = (stamp, self._load_notes())
            return self._notes[1]

    def _load_notes(self) -> Notes:
        alt_text: dict[str, str] = {}
        partitions: dict[str, list[str]] = {}
        if self.catalog.has("clips"):
            clips = self.catalog.query(
                "SELECT key, partition, alt_text FROM clips ORDER BY partition, key"
            )
            for key, partition, alt in zip(
                clips["key"], clips["partition"], clips["alt_text"], strict=True
            ):
                alt_text[key] = alt
                partitions.setdefault(partition, []).append(key)
        return Notes(
            alt_text,
            _sample0_captions("frame_captions", self.catalog, self.store),
            _sample0_captions("pseudo_captions", self.catalog, self.store),
            partitions,
        )

    # answers

    def row(
        self, key: str, partition: str, caption: str, notes: Notes, score: float | None = None
    ) -> dict:
        row = {"key": key, "partition": partition}
        if score is not None:
            row["score"] = score
        return {
            **row,
            "caption": caption or notes.pseudo_caption.get(key),
            "alt_text": notes.alt_text.get(key),
            "frame_caption": notes.frame_caption.get(key),
            "video_url": clip_url(partition, key),
        }

    def results(self, query: str, k: int | str | None = DEFAULT_K) -> dict:
        """The search answer, as the API and the CLI give it."""
        query, k = checked_query(query), checked_k(k)
        hits = self.search().search(query, k)
        notes = self.notes()
        return {
            "query": query,
            "k": k,
            "results": [self.row(h.key, h.partition, h.caption, notes, h.score) for h in hits],
        }

    def similar(self, key: str | None, k: int | str | None = DEFAULT_K) -> dict:
        k = checked_k(k)
        if not key:
            raise SearchError(400, "key is missing: give the key of an indexed clip")
        if len(key) > 250:
            raise SearchError(400, f"key is {len(key)} characters long; at most 250")
        search = self.search()
        try:
            hits = search.similar(key, k)
        except KeyError:
            raise SearchError(404, f"no clip {key!r} in the video index") from None
        notes = self.notes()
        return {
            "key": key,
            "k": k,
            "results": [self.row(h.key, h.partition, h.caption, notes, h.score) for h in hits],
        }

    def partitions(self) -> dict:
        notes, search = self.notes(), self.search_or_none()
        indexed = search.index.partition_counts() if search else {}
        names = sorted(set(notes.partitions) | set(indexed))
        if not names:
            raise SearchError(
                503,
                "no clips to browse: materialize clip_shards (the catalog) "
                f"or video_index; to search, {MATERIALIZE}",
            )
        return {
            "partitions": [
                {
                    "partition": p,
                    "clips": len(notes.partitions.get(p, [])),
                    "indexed": indexed.get(p, 0),
                }
                for p in names
            ]
        }

    def partition(self, partition: str) -> dict:
        partition = checked_clip_name(partition, "partition")
        notes, search = self.notes(), self.search_or_none()
        indexed = {h.key: h for h in search.index.clips_of(partition)} if search else {}
        keys = notes.partitions.get(partition) or list(indexed)
        if not keys:
            raise SearchError(404, f"no partition {partition!r} in the catalog or the index")
        clips = [
            {
                **self.row(key, partition, indexed[key].caption if key in indexed else "", notes),
                "indexed": key in indexed,
            }
            for key in keys
        ]
        return {"partition": partition, "clips": clips}

    def status(self) -> dict:
        try:
            search = self.search()
        except SearchError as e:
            return {"ready": False, "message": e.message}
        return {
            "ready": True,
            "clips": len(search.index.keys),
            "index": str(self.index_path),
            "model": str(self.model_path),
            "model_version": search.model_version,
            "checkpoint_version": search.checkpoint_version,
            "stale": search.stale,
        }

    # clip bytes

    def clip_location(self, partition: str, key: str) -> tuple[Path, int, int]:
        """(shard path, offset, size) of the clip's mp4 member; SearchError 400/404."""
        partition = checked_clip_name(partition, "partition")
        key = checked_clip_name(key, "clip key")
        path = self.store.shard(partition)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise SearchError(404, f"no shard for partition {partition!r}") from None
        with self._lock:
            cached = self._members.get(path)
        if cached is None or cached[0] != mtime:
            from model_code.data.shards import shard_members

            members = {m.key: m.files["mp4"] for m in shard_members(path, lambda reject: None)}
            cached = (mtime, members)
            with self._lock:
                self._members[path] = cached
        if key not in cached[1]:
            raise SearchError(404, f"no clip {key!r} in partition {partition!r}")
        offset, size = cached[1][key]
        return path, offset, size


def read_slice(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
