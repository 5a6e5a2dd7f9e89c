"""Partitions and groups shared by the asset modules: one partition per clip shard, one per
training seed, and which group (recipe or evidence) each caption source's assets sit in."""

from dagster import AutomationCondition, BackfillPolicy, DynamicPartitionsDefinition

from model_code.runtime import settings

clip_partitions = DynamicPartitionsDefinition(name="clip_shards")
"""One partition per webdataset clip shard; registered as shards appear in the source."""

seed_partitions = DynamicPartitionsDefinition(name="seeds")
"""One partition per training seed of every trained model that has several (the dual encoders
and the scaling subsets): each seed's checkpoint is a partition with its own data version.
Seed "0" is registered on every instance (pipelines.local.prepare_instance); add more from the
UI (a partition of `seeds`) or with `vidistill demo --paper`."""

NEW_SHARDS = (
    AutomationCondition.on_missing()
    & ~AutomationCondition.in_progress()
    & ~AutomationCondition.any_deps_in_progress()
).with_label("new shard")
"""A shard partition registered after the automation sensor first ran (the `new_clip_shards`
sensor or clip_shard_plan found it in the source) is materialized once what it needs exists,
unless a run or backfill already has it: new shards are cut and captioned without a click.
Partitions that were there before are left to backfills (on_missing's first tick)."""

DEFAULT_SEEDS = ("0",)
PAPER_SEEDS = ("0", "1", "2")

CAPTION_SOURCES = (
    "alt_text",
    "frame_captions",
    "stage1_captions",
    "stage1_sampled",
    "pseudo_captions",
    "pseudo_sampled",
    "teacher_captions",
    "ground_truth",
)
"""What a dual encoder is trained on, in the order of the paper's ladder: alt-text, per-frame
captions, + visual adaptation (stage 1), + several sampled captions, + language adaptation
(stage 2), both; then an off-the-shelf teacher, and ground_truth as the ceiling."""

RECIPE_SOURCES = ("alt_text", "frame_captions", "pseudo_captions", "ground_truth")
"""The sources of the recipe itself: the paper's headline comparison (alt-text and per-frame
captions against pseudo-captions, with the ceiling). The other rungs are evidence."""

RECIPE_GROUPS = ("corpus", "adaptation", "captions", "retrieval")
""""Materialize all" on these groups is the whole recipe on the corpus at seed 0."""
PAPER_GROUP = "paper"
"""The paper's costly evidence, materialized only when a user chooses it: the ladder's other
rungs, the data-scaling subsets and the adaptation-order ablation."""
TEACHER_GROUP = "teacher"
"""An off-the-shelf teacher's captions: needs a local Qwen2-VL checkpoint."""


def source_group(source: str) -> str:
    """The group of a caption source's captions, dual encoder and scores."""
    if source == "teacher_captions":
        return TEACHER_GROUP
    return "retrieval" if source in RECIPE_SOURCES else PAPER_GROUP


def shard_backfill_policy() -> BackfillPolicy:
    """How a backfill of per-shard assets is cut into runs: $VIDISTILL_PARTITIONS_PER_RUN
    partitions a run (default 1), or 0 for one run over the whole range (what the CLI's
    `--partition-range` needs). One a run: per-partition metadata, data versions and retries,
    and runs spread over many machines. Many a run: process start-up and model loading are
    paid once, but a failure reruns the range and metadata is summed over it."""
    n = settings.PARTITIONS_PER_RUN.whole_number()
    return BackfillPolicy.single_run() if n == 0 else BackfillPolicy.multi_run(n)
