"""lineage.json: what every checkpoint folder says about where it came from."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
from dataclasses import asdict, dataclass
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
            "only. Re-save it with save_pretrained() first."
        )
    raise FileNotFoundError(f"{folder} has no *.safetensors weights")


def code_version() -> str:
    """The git commit of the checkout when there is one, else a hash of model_code's sources."""
    root = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
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
        raise ValueError(
            f"{path} is not valid JSON ({error}); rewrite it or write it again"
        ) from error
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(value).__name__}")  # noqa: TRY004
    return value


def _whole(low: int, high: int | None = None):
    return lambda v: (
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    )


# field -> (check, what is expected) for vidistill.json
VIDEO_SETTINGS = {
    "family": (lambda v: isinstance(v, str), "a VLM family name"),
    "num_frames": (_whole(1, 1024), "a whole number of frames from 1 to 1024"),
    "pooled_tokens_per_frame": (lambda v: v is None or _whole(1)(v), "null or a whole number >= 1"),
    "pooling": (lambda v: isinstance(v, str), "a pooling name"),
    "prompt": (lambda v: isinstance(v, str), "a string"),
    "position_code": (lambda v: isinstance(v, bool), "true or false"),
    "frame_differences": (lambda v: isinstance(v, bool), "true or false"),
}
OLD_VIDEO_SETTING_NAMES = {
    "tokens_per_frame": "pooled_tokens_per_frame"
}  # checkpoints before 2026-11


@dataclass(frozen=True)
class VideoSettings:
    """A VLM checkpoint's video settings (vidistill.json beside its Hugging Face files): read by
    the model loader and, before the model loads, by the caption step's decoder. A field left
    None was not written and takes the loader's default."""

    num_frames: int = 8
    family: str | None = None
    pooled_tokens_per_frame: int | None = None  # what pooling keeps of a frame (grid pooling)
    pooling: str | None = None
    prompt: str | None = None
    position_code: bool | None = None
    frame_differences: bool | None = None

    @classmethod
    def read(cls, folder: str | Path) -> VideoSettings:
        """The settings in `folder` (the defaults when it has no vidistill.json). A field of
        the wrong type or range, or one it does not know, is refused by name; an old
        checkpoint's `tokens_per_frame` is its pooled_tokens_per_frame."""
        path = Path(folder) / VIDISTILL_FILE
        settings = read_json_object(path) if path.exists() else {}
        for old, name in OLD_VIDEO_SETTING_NAMES.items():
            if old in settings:
                settings.setdefault(name, settings.pop(old))
        for name, value in settings.items():
            if name not in VIDEO_SETTINGS:
                raise ValueError(
                    f"{path}: unknown field {name!r}; known: {', '.join(VIDEO_SETTINGS)}"
                )
            check, expected = VIDEO_SETTINGS[name]
            if not check(value):
                raise ValueError(f"{path}: {name} must be {expected}, not {value!r}")
        return cls(**settings)

    def given(self) -> dict:
        """The fields that are set (not None)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def write(self, folder: str | Path) -> None:
        (Path(folder) / VIDISTILL_FILE).write_text(json.dumps(self.given(), indent=2))


def read_lineage(folder: str | Path) -> dict:
    path = Path(folder) / LINEAGE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {LINEAGE_FILE}: not a vidistill checkpoint")
    record = read_json_object(path)
    version = record.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(
            f"{path}: field 'version' (the weights' hash, a string) is missing or "
            f"empty: {version!r}"
        )
    return record
