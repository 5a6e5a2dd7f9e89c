"""Field types for launchpad configs and resources: each value is checked when the step or
resource starts, and a bad one is refused with the field's name, the value and what is allowed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from model_code.training.configs import DEVICE


def _optional_file(value: str) -> str:
    if value and not Path(value).is_file():
        raise ValueError(f"no file at {value!r} (empty for none)")
    return value


def _optional_dir(value: str | None) -> str | None:
    if value and not Path(value).is_dir():
        raise ValueError(f"no folder at {value!r} (empty for none)")
    return value


def _optional_executable(value: str) -> str:
    if value and not (Path(value).is_file() and os.access(value, os.X_OK)):
        raise ValueError(f"no executable at {value!r} (empty: the bundled one)")
    return value


def _optional_path(value: str) -> str:
    if value and not Path(value).exists():
        raise ValueError(f"nothing at {value!r} (empty for none)")
    return value


OptionalFile = Annotated[str, AfterValidator(_optional_file)]
OptionalPath = Annotated[str, AfterValidator(_optional_path)]
OptionalDir = Annotated[str, AfterValidator(_optional_dir)]
OptionalDirOrNone = Annotated[str | None, AfterValidator(_optional_dir)]
OptionalExecutable = Annotated[str, AfterValidator(_optional_executable)]
Device = Annotated[str, Field(pattern=DEVICE.pattern)]
NonEmpty = Annotated[str, Field(min_length=1)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
# Kubernetes object names (RFC 1123 labels), empty for none
K8sName = Annotated[str, Field(pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$")]
ImageRef = Annotated[str, Field(pattern=r"^([a-z0-9][a-z0-9._/:@-]*)?$")]
TrackingUri = Annotated[str, Field(pattern=r"^([a-z][a-z0-9+.-]*:.*)?$")]
