"""lineage.json: what every checkpoint folder says about where it came from."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

LINEAGE_FILE = "lineage.json"
VIDISTILL_FILE = "vidistill.json"  # a VLM checkpoint's video settings (num_frames, pooling, ...)


def folder_hash(folder: str | Path, pattern: str = "*.safetensors") -> str:
    """Content hash of the weight files of a checkpoint folder: its version."""
    h = hashlib.sha256()
    files = sorted(Path(folder).glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {pattern} files in {folder}")
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def code_version() -> str:
    """The git commit of the checkout when there is one, else a hash of model_code's sources."""
    root = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root, capture_output=True, text=True, timeout=5, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    h = hashlib.sha256()
    for f in sorted(root.glob("*.py")):
        h.update(f.read_bytes())
    return "src-" + h.hexdigest()[:12]


def write_lineage(
    folder: str | Path,
    *,
    kind: str,
    parents: dict | None = None,
    training_config: dict | None = None,
    data: dict | None = None,
    metrics: dict | None = None,
    mlflow_run_id: str = "",
) -> dict:
    """Write lineage.json: the version (hash of the weights), the code version, and what the
    checkpoint is (`kind`), came from (`parents`: name -> version), was trained with and on, and
    scored, with the MLflow run that holds its curves."""
    folder = Path(folder)
    record = {
        "version": folder_hash(folder),
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": kind,
        "parents": parents or {},
        "training_config": training_config or {},
        "data": data or {},
        "metrics": metrics or {},
        "mlflow_run_id": mlflow_run_id,
    }
    (folder / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    return record


def read_video_settings(folder: str | Path) -> dict:
    """A VLM checkpoint's video settings (vidistill.json), with num_frames 8 when absent: read
    by the model loader and, before the model loads, by the caption step's decoder."""
    path = Path(folder) / VIDISTILL_FILE
    return {"num_frames": 8, **(json.loads(path.read_text()) if path.exists() else {})}


def read_lineage(folder: str | Path) -> dict:
    path = Path(folder) / LINEAGE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {LINEAGE_FILE}: not a vidistill checkpoint")
    return json.loads(path.read_text())
