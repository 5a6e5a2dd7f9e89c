"""The environment every vidistill process runs in, set before torch and transformers load."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ENVIRONMENT_DEFAULTS = {
    # spinning OpenMP threads starve concurrent torch processes (steps, DataLoader workers)
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",  # models come from local folders, never a hub
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # step logs, not progress bars
    "TRANSFORMERS_VERBOSITY": "error",
}


def set_environment_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Each of ENVIRONMENT_DEFAULTS where the environment does not set it already."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        environ.setdefault(name, value)
