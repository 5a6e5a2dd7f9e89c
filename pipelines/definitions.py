"""The one `Definitions` that `dagster dev` and `dagster asset materialize` load."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from dagster import BetaWarning, PreviewWarning

from model_code.environment import set_environment_defaults

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
set_environment_defaults()  # before torch loads

from dagster import (
    Definitions,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from assets import adaptation, captions, corpus, evidence, retrieval
from pipelines.jobs import JOBS
from pipelines.sensors import new_clip_shards
from resources.catalog import Catalog
from resources.devices import Accelerators
from resources.launcher import TrainingLauncher
from resources.sources import ClipSource
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> str:
    """The artifact root: $VIDISTILL_DATA_ROOT, else data/ in the project (git-ignored)."""
    return os.environ.get("VIDISTILL_DATA_ROOT") or str(PROJECT_ROOT / "data")


def make_resources(root: str | None = None) -> dict:
    root = root or data_root()
    return {
        "store": ArtifactStore(root=root),
        "catalog": Catalog(root=root),
        # the clips: the embedded corpus, or $VIDISTILL_SOURCE (a folder of videos or a
        # manifest), cut as $VIDISTILL_SPLIT says; the plan, the sensor, the UI's launches, the
        # CLI and the demo all read it from here
        "clip_source": ClipSource(
            source=os.environ.get("VIDISTILL_SOURCE") or "embedded",
            split=os.environ.get("VIDISTILL_SPLIT") or "fixed",
        ),
        "tracking": MlflowTracking(
            root=root, tracking_uri=os.environ.get("VIDISTILL_TRACKING_URI", "")
        ),
        "accelerators": Accelerators(),
        # training under torchrun through Pipes: here by default, or a pod per training
        "launcher": TrainingLauncher(
            backend=os.environ.get("VIDISTILL_TRAINING_BACKEND", "subprocess"),
            image=os.environ.get("VIDISTILL_IMAGE", ""),
            namespace=os.environ.get("VIDISTILL_NAMESPACE", "dagster"),
            data_volume_claim=os.environ.get("VIDISTILL_DATA_CLAIM", ""),
        ),
    }


ASSET_MODULES = [corpus, adaptation, captions, retrieval, evidence]

defs = Definitions(
    assets=load_assets_from_modules(ASSET_MODULES),
    asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
    jobs=JOBS,
    sensors=[new_clip_shards],
    resources=make_resources(),
    # A run is the unit of parallelism (the run queue, the `gpu` pool, one run per partition on
    # a run launcher), so its steps run in the run's own process: no second process that
    # re-imports the code location (measured ~5 s of ~8 s of per-run overhead here, see
    # benchmarks/captioning.py --partition), and no orphaned step that outlives its run.
    executor=in_process_executor,
)
