"""The DuckDB catalog: views over per-partition Parquet files.

Each partition run writes its own files, so concurrent partitions never contend on one
database writer; queries open a short-lived in-memory DuckDB whose views glob those files.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from resources.fields import NonEmpty

# view name -> glob under the data root
VIEWS: dict[str, str] = {
    "clips": "clip_index/*.parquet",
    "rejects": "rejects/*.parquet",
    "captions": "captions/*/*.parquet",
    "caption_rejects": "caption_rejects/*/*.parquet",
    "scores": "scores/*.parquet",
}


def connect(root: str | Path):
    """An in-memory DuckDB connection with one view per table that has files yet."""
    import duckdb

    con = duckdb.connect()
    root = Path(root).resolve()
    for name, pattern in VIEWS.items():
        if any(root.glob(pattern)):
            glob = str(root / pattern).replace("'", "''")
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}', union_by_name=true)"
            )
    return con


class Catalog(ConfigurableResource):
    """Query clips, rejects, captions and scores across every partition."""

    root: NonEmpty = "data"

    def query(self, sql: str, params: list | None = None):
        """Run SQL over the catalog views; returns a pandas DataFrame."""
        con = connect(self.root)
        try:
            return con.execute(sql, params or []).df()
        finally:
            con.close()

    def has(self, view: str) -> bool:
        return any(Path(self.root).resolve().glob(VIEWS[view]))
