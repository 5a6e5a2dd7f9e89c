"""lineage.json: what every checkpoint folder says about where it came from."""

from __future__ import annotations

import hashlib
import json
import math
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


PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(folder: str | Path) -> None:
    """Refuse a checkpoint folder without *.safetensors weights before anything loads from it:
    a ValueError naming its pickle files if it has some (unpickling can run arbitrary code),
    else a FileNotFoundError."""
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted({p.name for pattern in PICKLE_PATTERNS for p in folder.glob(pattern)})
    if pickles:
        raise ValueError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}) and no *.safetensors; "
            "unpickling a checkpoint can run arbitrary code, so vidistill loads safetensors "
            "only. Re-save it with save_pretrained() first.")
    raise FileNotFoundError(f"{folder} has no *.safetensors weights")


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
    text = json.dumps(_json_safe(record), indent=2, sort_keys=True, default=str, allow_nan=False)
    (folder / LINEAGE_FILE).write_text(text)
    return record


def _json_safe(value):
    """NaN and infinities become null: lineage.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def read_json_object(path: str | Path) -> dict:
    """A JSON object from a file vidistill reads (lineage, video settings, part, job,
    config.json), or a ValueError that names the file and what is wrong with it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rewrite it or write it "
                         "again") from error
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(value).__name__}")  # noqa: TRY004
    return value


# field -> (check, what is expected) for vidistill.json
VIDEO_SETTINGS = {
    "family": (lambda v: isinstance(v, str), "a VLM family name"),
    "num_frames": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024,
                   "a whole number of frames from 1 to 1024"),
    "tokens_per_frame": (lambda v: v is None or (isinstance(v, int) and v >= 1),
                         "null or a whole number >= 1"),
    "pooling": (lambda v: isinstance(v, str), "a pooling name"),
    "prompt": (lambda v: isinstance(v, str), "a string"),
    "position_code": (lambda v: isinstance(v, bool), "true or false"),
    "frame_differences": (lambda v: isinstance(v, bool), "true or false"),
}


def read_video_settings(folder: str | Path) -> dict:
    """A VLM checkpoint's video settings (vidistill.json), with num_frames 8 when absent: read
    by the model loader and, before the model loads, by the caption step's decoder. A field of
    the wrong type or range, or one it does not know, is refused by name."""
    path = Path(folder) / VIDISTILL_FILE
    settings = read_json_object(path) if path.exists() else {}
    for name, value in settings.items():
        if name not in VIDEO_SETTINGS:
            raise ValueError(f"{path}: unknown field {name!r}; known: {', '.join(VIDEO_SETTINGS)}")
        check, expected = VIDEO_SETTINGS[name]
        if not check(value):
            raise ValueError(f"{path}: {name} must be {expected}, not {value!r}")
    return {"num_frames": 8, **settings}


def read_lineage(folder: str | Path) -> dict:
    path = Path(folder) / LINEAGE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {LINEAGE_FILE}: not a vidistill checkpoint")
    record = read_json_object(path)
    version = record.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{path}: field 'version' (the weights' hash, a string) is missing or "
                         f"empty: {version!r}")
    return record
