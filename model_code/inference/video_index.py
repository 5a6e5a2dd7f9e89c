"""Text-to-video search: corpus clip embeddings in DuckDB (fixed-size FLOAT arrays), queried
by cosine similarity. What a user does with a trained dual encoder.

    python -m model_code.inference.video_index data/video_index/index.duckdb \
        data/checkpoints/dual_encoder/pseudo_captions/seed0 "a red circle moves left"

`VideoSearch` holds the index and the model in memory, so a long-lived process (the search
service, pipelines/search/app.py) pays the start-up once; every way of querying ranks with
`VideoIndex.nearest`, so they all give the same top-k.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def write_index(
    path: str | Path,
    keys: list[str],
    partitions: list[str],
    captions: list[str],
    embeddings: np.ndarray,
    model_version: str,
) -> None:
    """Build the index in a temp file and rename it into place (readers never see half)."""
    import duckdb
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = int(embeddings.shape[1])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".duckdb")
    os.close(fd)
    os.unlink(tmp)  # duckdb creates the file itself
    try:
        con = duckdb.connect(tmp)
        df = pd.DataFrame(
            {
                "key": keys,
                "partition": partitions,
                "caption": captions,
                "embedding": list(embeddings.astype(np.float32)),
            }
        )
        con.execute(
            f"CREATE TABLE clips (key VARCHAR PRIMARY KEY, partition VARCHAR, "
            f"caption VARCHAR, embedding FLOAT[{dim}])"
        )
        con.register("new_clips", df)
        con.execute(
            f"INSERT INTO clips SELECT key, partition, caption, embedding::FLOAT[{dim}] "
            "FROM new_clips"
        )
        con.execute(
            "CREATE TABLE info AS SELECT ? AS model_version, ? AS dim", [model_version, dim]
        )
        con.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Hit:
    """One clip of a ranking: its pseudo-caption as indexed, and its cosine similarity."""

    key: str
    partition: str
    caption: str
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


class VideoIndex:
    """Every indexed clip in memory: keys, partitions, captions (index order: partition, key)
    and one row of unit-length embeddings per clip. Ranking is one matrix-vector product."""

    def __init__(
        self,
        keys: list[str],
        partitions: list[str],
        captions: list[str],
        embeddings: np.ndarray,
        model_version: str,
    ):
        if not (len(keys) == len(partitions) == len(captions) == len(embeddings)):
            raise ValueError("keys, partitions, captions and embeddings differ in length")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.keys, self.partitions, self.captions = keys, partitions, captions
        self.embeddings = (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
        self.model_version = model_version
        self.position = {key: i for i, key in enumerate(keys)}

    @classmethod
    def read(cls, path: str | Path) -> VideoIndex:
        """The index file written by `write_index`; FileNotFoundError if there is none,
        ValueError if it cannot be read as one."""
        import duckdb

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no video index at {path}")
        try:
            con = duckdb.connect(str(path), read_only=True)
            try:
                version, dim = con.execute("SELECT model_version, dim FROM info").fetchall()[0]
                table = con.sql(
                    "SELECT key, partition, caption, embedding FROM clips ORDER BY partition, key"
                ).to_arrow_table()
            finally:
                con.close()
        except duckdb.Error as e:
            raise ValueError(f"{path} is not a readable video index ({e})") from e
        vectors = table.column("embedding").combine_chunks()
        embeddings = vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), int(dim))
        return cls(
            table.column("key").to_pylist(),
            table.column("partition").to_pylist(),
            [c or "" for c in table.column("caption").to_pylist()],
            embeddings,
            version,
        )

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def nearest(self, query_embedding: np.ndarray, k: int) -> list[Hit]:
        """The k clips most similar to the query (cosine), best first; ties keep index order,
        so every caller gets the same ranking for the same embedding."""
        q = np.asarray(query_embedding, dtype=np.float32).ravel()
        if q.shape[0] != self.dim:
            raise ValueError(f"query embedding has {q.shape[0]} dimensions, the index {self.dim}")
        scores = self.embeddings @ (q / max(float(np.linalg.norm(q)), 1e-12))
        order = np.argsort(-scores, kind="stable")[: max(k, 0)]
        return [self.hit(int(i), float(scores[i])) for i in order]

    def similar(self, key: str, k: int) -> list[Hit]:
        """More like this: the clip itself first, then its k-1 nearest other clips.
        KeyError if the key is not indexed."""
        i = self.position[key]
        own = self.hit(i, 1.0)
        others = [h for h in self.nearest(self.embeddings[i], k + 1) if h.key != key]
        return [own, *others][:k]

    def hit(self, i: int, score: float) -> Hit:
        return Hit(self.keys[i], self.partitions[i], self.captions[i], score)

    def partition_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.partitions:
            counts[p] = counts.get(p, 0) + 1
        return counts

    def clips_of(self, partition: str) -> list[Hit]:
        """The indexed clips of one partition, in key order (score 0: nothing was asked)."""
        return [self.hit(i, 0.0) for i, p in enumerate(self.partitions) if p == partition]


def search(index: str | Path, query_embedding: np.ndarray, k: int = 5):
    """Top-k clips by cosine similarity to one query embedding, as a DataFrame."""
    import pandas as pd

    hits = VideoIndex.read(index).nearest(query_embedding, k)
    return pd.DataFrame(
        [h.as_dict() for h in hits], columns=["key", "partition", "caption", "score"]
    )


class VideoSearch:
    """The index and the dual encoder that built it, loaded once: a text query then costs one
    pass of the text tower and one matrix-vector product. `model_version` is the index's,
    `checkpoint_version` the model folder's (lineage.json; None without one): when they differ
    the checkpoint was retrained after the index was built, and text and video embeddings no
    longer share a space until video_index is materialized again."""

    def __init__(self, index: str | Path, model: str | Path):
        from model_code.models.dual_encoder import DualEncoder
        from model_code.models.lineage import read_lineage

        model = Path(model)
        if not model.is_dir():
            raise FileNotFoundError(f"no dual encoder checkpoint at {model}")
        self.index = VideoIndex.read(index)
        self.model = DualEncoder.from_pretrained(model).eval()
        if self.model.config.projection_dim != self.index.dim:
            raise ValueError(
                f"the index holds {self.index.dim}-d embeddings, the dual encoder at "
                f"{model} makes {self.model.config.projection_dim}-d ones"
            )
        try:
            self.checkpoint_version: str | None = read_lineage(model)["version"]
        except FileNotFoundError:
            self.checkpoint_version = None
        self._encode = threading.Lock()  # a fast tokenizer refuses concurrent calls

    @property
    def model_version(self) -> str:
        return self.index.model_version

    @property
    def stale(self) -> bool:
        return self.checkpoint_version not in (None, self.index.model_version)

    def embed_query(self, text: str) -> np.ndarray:
        from model_code.models.dual_encoder import embed_texts

        with self._encode:
            return embed_texts(self.model, [text])[0]

    def search(self, text: str, k: int) -> list[Hit]:
        return self.index.nearest(self.embed_query(text), k)

    def similar(self, key: str, k: int) -> list[Hit]:
        return self.index.similar(key, k)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Search the corpus with a sentence.")
    parser.add_argument("index", help="video index .duckdb file")
    parser.add_argument("model", help="dual encoder checkpoint folder")
    parser.add_argument("query", nargs="+")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    import pandas as pd

    hits = VideoSearch(args.index, args.model).search(" ".join(args.query), args.k)
    print(pd.DataFrame([h.as_dict() for h in hits]).to_string(index=False))


if __name__ == "__main__":
    main()
