"""Small pieces every asset module uses: markdown tables, checkpoint results, sample data."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dagster import DataVersion, MaterializeResult, MetadataValue


def md_table(rows: list[dict], max_rows: int = 10) -> MetadataValue:
    """A markdown table for the UI (first `max_rows` rows)."""
    rows = rows[:max_rows]
    if not rows:
        return MetadataValue.md("_(none)_")
    cols = list(rows[0])

    def cell(v) -> str:
        if isinstance(v, float):
            v = f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")[:120]

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return MetadataValue.md("\n".join(lines))


def file_version(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def checkpoint_result(folder: Path, lineage: dict, extra: dict | None = None) -> MaterializeResult:
    """Metadata + DataVersion of a checkpoint folder, from its lineage.json record."""
    metadata = {
        "path": MetadataValue.path(str(folder)),
        "version": lineage["version"],
        "code_version": lineage["code_version"],
        "parents": MetadataValue.json(lineage.get("parents", {})),
        "mlflow_run_id": lineage.get("mlflow_run_id", ""),
    }
    metrics = lineage.get("metrics", {})
    metadata.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    metadata.update(extra or {})
    return MaterializeResult(metadata=metadata, data_version=DataVersion(lineage["version"]))
