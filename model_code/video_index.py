"""Text-to-video search: corpus clip embeddings in DuckDB (fixed-size FLOAT arrays), queried
by cosine similarity. What a user does with a trained dual encoder.

    python -m model_code.video_index data/video_index/index.duckdb data/checkpoints/dual_encoder/pseudo_captions "a red circle moves left"
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np


def write_index(path: str | Path, keys: list[str], partitions: list[str], captions: list[str],
                embeddings: np.ndarray, model_version: str) -> None:
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
        df = pd.DataFrame({"key": keys, "partition": partitions, "caption": captions,
                           "embedding": list(embeddings.astype(np.float32))})
        con.execute(f"CREATE TABLE clips (key VARCHAR PRIMARY KEY, partition VARCHAR, "
                    f"caption VARCHAR, embedding FLOAT[{dim}])")
        con.register("new_clips", df)
        con.execute(f"INSERT INTO clips SELECT key, partition, caption, embedding::FLOAT[{dim}] "
                    "FROM new_clips")
        con.execute("CREATE TABLE info AS SELECT ? AS model_version, ? AS dim", [model_version, dim])
        con.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def search(index: str | Path, query_embedding: np.ndarray, k: int = 5):
    """Top-k clips by cosine similarity to one query embedding, as a DataFrame."""
    import duckdb

    con = duckdb.connect(str(index), read_only=True)
    try:
        dim = con.execute("SELECT dim FROM info").fetchone()[0]
        q = [float(x) for x in np.asarray(query_embedding, dtype=np.float32).ravel()]
        return con.execute(
            f"SELECT key, partition, caption, array_cosine_similarity(embedding, ?::FLOAT[{dim}]) "
            "AS score FROM clips ORDER BY score DESC LIMIT ?", [q, k]).df()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> None:
    from model_code.dual_encoder import DualEncoder, embed_texts

    parser = argparse.ArgumentParser(description="Search the corpus with a sentence.")
    parser.add_argument("index", help="video index .duckdb file")
    parser.add_argument("model", help="dual encoder checkpoint folder")
    parser.add_argument("query", nargs="+")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    model = DualEncoder.from_pretrained(args.model)
    emb = embed_texts(model, [" ".join(args.query)])[0]
    print(search(args.index, emb, args.k).to_string(index=False))


if __name__ == "__main__":
    main()
