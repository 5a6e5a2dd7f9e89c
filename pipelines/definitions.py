"""The one `Definitions` that `dagster dev` and `dagster asset materialize` load."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from dagster import BetaWarning, PreviewWarning

from model_code.runtime import settings
from model_code.runtime.environment import set_environment_defaults

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
set_environment_defaults()  # before torch loads

from dagster import (
    Definitions,
    load_asset_checks_from_modules,
    load_assets_from_modules,
    multiprocess_executor,
)

from assets import adaptation, captions, corpus, evidence, retrieval
from assets.common import check_config_defaults
from pipelines.jobs import JOBS
from pipelines.sensors import new_clip_shards, shard_automation
from pipelines.staleness import stale_captions
from resources.catalog import Catalog
from resources.devices import Accelerators
from resources.launcher import TrainingLauncher
from resources.sources import ClipSource
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> str:
    """The artifact root: $VIDISTILL_DATA_ROOT, else data/ in the project (git-ignored)."""
    return settings.DATA_ROOT.get() or str(PROJECT_ROOT / "data")


def _whole_numbers(**variables: settings.Setting) -> dict[str, int]:
    """{field: its variable's value} for each variable that is set."""
    values = {field: variable.whole_number() for field, variable in variables.items()}
    return {field: value for field, value in values.items() if value is not None}


def make_resources(root: str | None = None) -> dict:
    root = root or data_root()
    return {
        "store": ArtifactStore(root=root),
        "catalog": Catalog(root=root),
        # the clips: the embedded corpus, or $VIDISTILL_SOURCE (a folder of videos or a
        # manifest), cut as $VIDISTILL_SPLIT says; the plan, the sensor, the UI's launches, the
        # CLI and the demo all read it from here
        "clip_source": ClipSource(
            source=settings.SOURCE.get(),
            split=settings.SPLIT.get(),
            **_whole_numbers(
                corpus_clips=settings.CORPUS_CLIPS, clips_per_shard=settings.CLIPS_PER_SHARD
            ),
        ),
        "tracking": MlflowTracking(root=root, tracking_uri=settings.TRACKING_URI.get()),
        "accelerators": Accelerators(),
        # training under torchrun through Pipes: here by default, or a pod per training
        "launcher": TrainingLauncher(
            backend=settings.TRAINING_BACKEND.get(),
            image=settings.IMAGE.get(),
            namespace=settings.NAMESPACE.get(),
            data_volume_claim=settings.DATA_CLAIM.get(),
        ),
    }


ASSET_MODULES = [corpus, adaptation, captions, retrieval, evidence]
check_config_defaults()

defs = Definitions(
    assets=load_assets_from_modules(ASSET_MODULES),
    asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
    jobs=JOBS,
    sensors=[new_clip_shards, shard_automation, stale_captions],
    resources=make_resources(),
    # A backfill puts the unpartitioned assets it may run together into one run (Dagster builds
    # one run request for them), so a run's independent steps run side by side: each step in a
    # process forked from a server that has imported this code location once (no re-import per
    # step), as many at once as the machine has cores; the `gpu` pool caps the model steps of
    # all runs together.
    executor=multiprocess_executor.configured(
        {
            "max_concurrent": os.cpu_count() or 1,
            "start_method": {"forkserver": {"preload_modules": ["pipelines.definitions"]}},
        }
    ),
)
