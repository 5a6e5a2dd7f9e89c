"""Captions group: pseudo-caption every clip shard with the video VLM (docs/design.md, step 2), and
the paper's per-frame baseline with the image VLM."""

import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field, ValidationInfo, field_validator

from assets.adaptation import image_vlm, video_vlm, visual_adapted_vlm
from assets.common import LaunchConfig, file_version, md_table
from assets.corpus import clip_shards
from assets.partitions import (
    NEW_SHARDS,
    RECIPE_SOURCES,
    clip_partitions,
    shard_backfill_policy,
    source_group,
)
from model_code.runtime import settings
from resources.caption_sources import (
    CAPTIONERS,
    caption_folder,
    captioner_version,
    current_captions,
)
from resources.catalog import Catalog
from resources.devices import Accelerators
from resources.fields import Device, OptionalDir, Rate
from resources.storage import ArtifactStore

CAPTION_COLUMNS = [
    "key",
    "sample",
    "caption",
    "source",
    "captioner_version",
    "prompt",
    "partition",
    "generation",
]


class CaptioningConfig(LaunchConfig):
    batch_size: int = Field(default=32, ge=1, description="clips per generate call")
    decode_workers: int | None = Field(
        default=None,
        ge=0,
        description="processes decoding clips while the model captions "
        "(they split each shard's clips); unset = the cores this step may use, 0 = decode in "
        "the step's own process",
    )
    max_new_tokens: int = Field(default=24, ge=1, le=1024)
    do_sample: bool = False
    num_beams: int = Field(default=1, ge=1, le=64)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling (do_sample)")
    captions_per_clip: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="K captions of every clip, one row each with its "
        "sample index 0..K-1; K > 1 needs do_sample",
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="sample k of a batch draws with torch seed "
        "seed * 1000 + k: the same seed gives the same captions",
    )
    device: Device = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    max_empty_rate: Rate = Field(default=0.0, description="quality check threshold")
    max_degenerate_rate: Rate = Field(default=0.05, description="quality check threshold")
    max_duplicate_rate: Rate = Field(
        default=0.95,
        description="quality check threshold; the embedded corpus shows only 15 "
        "colour-shape looks, so a faithful still-image captioner repeats ~92% of its captions",
    )
    min_vocab_size: int = Field(default=5, ge=0)

    @field_validator("captions_per_clip")
    @classmethod
    def _samples_differ(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and not info.data.get("do_sample"):
            raise ValueError(
                f"captions_per_clip={value} needs do_sample: true (greedy decoding "
                "writes the same caption K times)"
            )
        return value


class SampledCaptioningConfig(CaptioningConfig):
    """Several sampled captions per clip: the paper's "+ several sampled captions" rung."""

    captions_per_clip: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="K captions of every clip, one row each with its sample index 0..K-1",
    )
    do_sample: bool = True
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=0.9, gt=0, le=1, description="nucleus sampling")


def caption_quality(captions: list[str], config: CaptioningConfig) -> AssetCheckResult:
    """Fail loudly on empty or degenerate captions, near-total duplication or a tiny vocabulary."""
    from model_code.evaluation.caption_metrics import caption_statistics

    stats = caption_statistics(captions)
    failures = []
    if not captions:
        failures.append("no captions")
    if stats["degenerate_rate"] > config.max_degenerate_rate:
        failures.append(
            f"degenerate_rate {stats['degenerate_rate']:.2f} > {config.max_degenerate_rate}"
        )
    if stats["empty_rate"] > config.max_empty_rate:
        failures.append(f"empty_rate {stats['empty_rate']:.2f} > {config.max_empty_rate}")
    if len(captions) > 10 and stats["duplicate_rate"] > config.max_duplicate_rate:
        failures.append(
            f"duplicate_rate {stats['duplicate_rate']:.2f} > {config.max_duplicate_rate}"
        )
    if len(captions) > 10 and stats["vocab_size"] < config.min_vocab_size:
        failures.append(f"vocab_size {stats['vocab_size']} < {config.min_vocab_size}")
    return AssetCheckResult(
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(failures) or "captions look healthy",
        metadata={k: float(v) for k, v in stats.items()},
    )


def caption_partitions(
    context: AssetExecutionContext,
    checkpoint: str,
    frame_mode: str,
    config: CaptioningConfig,
    store: ArtifactStore,
    accelerators: Accelerators,
    folder=None,
) -> MaterializeResult:
    """Caption each partition of the run with one checkpoint (loaded once per run; a vidistill
    checkpoint by name, or an outside `folder`); one Parquet file per partition per caption
    source and captioner version (K rows per clip with captions_per_clip=K), replaced
    atomically; undecodable clips become rejects."""
    import pandas as pd

    from model_code.data.ingest import rejects_bytes
    from model_code.inference.captioning import CaptionRun, caption_shards

    version = captioner_version(checkpoint, store, folder)
    folder = store.checkpoint(checkpoint) if folder is None else folder
    source = context.asset_key.path[-1]
    generation = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "num_beams": config.num_beams,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "seed": config.seed,
    }
    partitions = context.partition_keys
    run = CaptionRun()
    all_captions, samples, total_rejects, wait_s, generate_s = [], [], 0, 0.0, 0.0
    with accelerators.device(config.device) as device:  # leased for the whole run
        context.log.info(f"captioning on {device}")
        for result in caption_shards(
            folder,
            [store.shard(p) for p in partitions],
            frame_mode,
            config.batch_size,
            config.decode_workers,
            device,
            run,
            samples=config.captions_per_clip,
            **generation,
        ):
            partition = partitions[result.shard]
            rows = [
                {
                    "key": key,
                    "sample": sample,
                    "caption": caption,
                    "source": source,
                    "captioner_version": version,
                    "prompt": run.prompt,
                    "partition": partition,
                    "generation": json.dumps(generation, sort_keys=True),
                }
                for key, sample, caption in result.captions
            ]
            df = pd.DataFrame(rows, columns=CAPTION_COLUMNS)
            store.write_parquet(store.captions(caption_folder(source, version), partition), df)
            store.write_bytes(
                store.caption_rejects(caption_folder(source, version), partition),
                rejects_bytes([{**r, "source": partition} for r in result.rejects]),
            )
            total_rejects += len(result.rejects)
            wait_s, generate_s = wait_s + result.wait_s, generate_s + result.generate_s
            all_captions += df.loc[df["sample"] == 0, "caption"].tolist()
            samples += rows[:3]
            context.log.info(
                f"{partition}: {len(df)} captions, {len(result.rejects)} rejects, "
                f"{result.generate_s:.1f}s generating, {result.wait_s:.1f}s waiting "
                "for frames"
            )
    index = _clip_index(store, partitions)
    sample_rows = [
        {"key": r["key"], "alt_text": index.get(r["key"], ""), "caption": r["caption"]}
        for r in samples[:8]
    ]
    one = partitions[0] if len(partitions) == 1 else None
    key = caption_folder(source, version)
    return MaterializeResult(
        metadata={
            "captioner_version": version,
            "clips": len(all_captions),
            "captions": len(all_captions) * config.captions_per_clip,
            "captions_per_clip": config.captions_per_clip,
            "rejects": total_rejects,
            "samples": md_table(sample_rows, 8),
            "path": MetadataValue.path(
                str(store.captions(key, one) if one else store.captions_folder(key))
            ),
            "device": device,
            "decode_workers": run.decode_workers,
            "model_load_s": round(run.load_s, 2),
            "first_batch_wait_s": round(run.first_batch_wait_s, 3),
            "frame_wait_share": round(wait_s / max(wait_s + generate_s, 1e-9), 4),
        },
        check_results=[caption_quality(all_captions, config)],
        data_version=DataVersion(file_version(store.captions(key, one))) if one else None,
    )


def failed_quality_checks(instance, source: str, partitions) -> dict[str, str]:
    """{partition: why} for each of `partitions` of the caption asset `source` whose latest
    materialization failed its blocking caption_quality check. The check blocks only the run it
    ran in: a later run that reads the captions from the catalog (a dual encoder, over every
    shard) must ask here. Dagster records the evaluation without its partition, so it is
    matched to the partition's materialization it targeted."""
    from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter

    asset_key = AssetKey(source)
    latest = {}  # storage id of each partition's latest materialization -> partition
    for partition in partitions:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
        ).records
        if records:
            latest[records[0].storage_id] = partition
    failed, cursor = {}, None
    check = AssetCheckKey(asset_key, "caption_quality")
    while latest:
        page = instance.event_log_storage.get_asset_check_execution_history(
            check, limit=100, cursor=cursor
        )
        if not page:
            break
        for record in page:
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            target = getattr(evaluation, "target_materialization_data", None)
            partition = latest.pop(target.storage_id, None) if target else None
            if (
                partition is not None
                and not evaluation.passed
                and evaluation.blocking
                and evaluation.severity == AssetCheckSeverity.ERROR
            ):
                failed[partition] = evaluation.description or "caption_quality failed"
        cursor = page[-1].id
    return dict(sorted(failed.items()))


def _clip_index(store: ArtifactStore, partitions: list[str]) -> dict[str, str]:
    import pandas as pd

    out = {}
    for p in partitions:
        path = store.clip_index(p)
        if path.exists():
            df = pd.read_parquet(path, columns=["key", "alt_text"])
            out.update(zip(df["key"], df["alt_text"]))
    return out


def per_shard_captions(name: str, deps: list, code_version: str) -> dict:
    """What every caption asset is: one partition per shard, in the gpu pool, with the
    blocking caption_quality check; a shard registered later is captioned by the automation
    sensor as soon as its clips and the captioner exist (NEW_SHARDS)."""
    return {
        "name": name,
        "group_name": "captions" if name in RECIPE_SOURCES else source_group(name),
        "automation_condition": NEW_SHARDS,
        "partitions_def": clip_partitions,
        "deps": deps,
        "code_version": code_version,
        "pool": "gpu",
        "backfill_policy": shard_backfill_policy(),
        "check_specs": [AssetCheckSpec("caption_quality", asset=name, blocking=True)],
    }


def _captioner(name: str, upstream, config_class: type[CaptioningConfig], doc: str):
    checkpoint, frame_mode = CAPTIONERS[name]

    @asset(**per_shard_captions(name, [clip_shards, upstream], code_version="3"))
    def captions(
        context: AssetExecutionContext,
        config: config_class,
        store: ArtifactStore,
        accelerators: Accelerators,
    ) -> MaterializeResult:
        return caption_partitions(context, checkpoint, frame_mode, config, store, accelerators)

    captions.__doc__ = doc
    return captions


frame_captions = _captioner(
    "frame_captions",
    image_vlm,
    CaptioningConfig,
    "The image VLM's caption of each clip's middle frame: the paper's per-frame baseline.",
)
stage1_captions = _captioner(
    "stage1_captions",
    visual_adapted_vlm,
    CaptioningConfig,
    "The stage-1 captioner's (visual_adapted_vlm) caption of every clip: + visual adaptation.",
)
stage1_sampled = _captioner(
    "stage1_sampled",
    visual_adapted_vlm,
    SampledCaptioningConfig,
    "K sampled captions of every clip by the stage-1 captioner: + several sampled captions.",
)
pseudo_captions = _captioner(
    "pseudo_captions",
    video_vlm,
    CaptioningConfig,
    "The video VLM's caption of every clip of the shard: the distilled training signal.",
)
pseudo_sampled = _captioner(
    "pseudo_sampled",
    video_vlm,
    SampledCaptioningConfig,
    "K sampled captions of every clip by the video VLM (stages 1 and 2): the paper's best rung.",
)
CAPTIONER_ASSETS = {
    "frame_captions": frame_captions,
    "stage1_captions": stage1_captions,
    "stage1_sampled": stage1_sampled,
    "pseudo_captions": pseudo_captions,
    "pseudo_sampled": pseudo_sampled,
}


class TeacherCaptioningConfig(CaptioningConfig):
    teacher_path: OptionalDir = Field(
        default_factory=settings.TEACHER.get,
        description="local Qwen2-VL / Qwen2.5-VL folder (default $VIDISTILL_TEACHER)",
    )


@asset(**per_shard_captions("teacher_captions", [clip_shards], code_version="2"))
def teacher_captions(
    context: AssetExecutionContext,
    config: TeacherCaptioningConfig,
    store: ArtifactStore,
    accelerators: Accelerators,
) -> MaterializeResult:
    """An off-the-shelf video VLM's caption of every clip (Qwen2-VL family, its frames in time
    order): the distilled captioner's point of comparison, same files, same checks."""
    if not config.teacher_path:
        raise ValueError(
            "teacher_captions needs teacher_path (or $VIDISTILL_TEACHER): a local "
            "Qwen2-VL / Qwen2.5-VL checkpoint folder"
        )
    return caption_partitions(
        context, "teacher", "clip", config, store, accelerators, folder=config.teacher_path
    )


@asset(
    group_name="captions",
    deps=[
        clip_shards,
        frame_captions,
        stage1_captions,
        stage1_sampled,
        pseudo_captions,
        pseudo_sampled,
        teacher_captions,
    ],
    code_version="2",
)
def caption_statistics(
    context: AssetExecutionContext, catalog: Catalog, store: ArtifactStore
) -> MaterializeResult:
    """Alt-text vs every caption source captioned so far: length, distinct n-grams, how often
    they mention motion — the paper's caption-statistics comparison, over the whole catalog —
    and, for sources with several captions per clip, how much a clip's captions differ."""
    from model_code.evaluation.caption_metrics import caption_statistics as stats_of
    from model_code.evaluation.caption_metrics import within_clip_diversity
    from model_code.evaluation.plots import bars_png

    rows = []
    if not catalog.has("clips"):
        raise ValueError("no clip shards materialized yet: materialize clip_shards first")
    alt = catalog.query("SELECT alt_text FROM clips")["alt_text"].tolist()
    rows.append({"source": "alt_text", "version": "-", **stats_of(alt)})
    for source in (*CAPTIONERS, "teacher_captions"):
        try:
            df = current_captions(source, catalog, store)
        except (ValueError, FileNotFoundError):  # not captioned (yet), or no such checkpoint
            continue
        diversity = within_clip_diversity(df["key"].tolist(), df["caption"].tolist())
        rows.append(
            {
                "source": source,
                "version": df["version"].iloc[0],
                **stats_of(df["caption"].tolist()),
                **diversity,
            }
        )
    counts = (
        catalog.query(
            "SELECT source, captioner_version, count(*) AS captions, count(DISTINCT partition) AS "
            "partitions FROM captions GROUP BY 1, 2 ORDER BY 1, 2"
        ).to_dict("records")
        if catalog.has("captions")
        else []
    )
    store.write_bytes(store.report("caption_statistics.json"), json.dumps(rows, indent=1).encode())
    plot = store.write_bytes(
        store.report("caption_statistics.png"),
        bars_png(rows, "source", "motion_share", title="share of captions that name a motion"),
    )
    return MaterializeResult(
        metadata={
            "comparison": md_table(rows, 20),
            "by_version": md_table(counts, 20),
            "clips": len(alt),
            "plot": MetadataValue.path(str(plot)),
        }
    )
