"""Adaptation group: an image VLM becomes a video VLM in two stages (docs/design.md, step 1)."""

import json
from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from assets.common import (
    LaunchConfig,
    checkpoint_result,
    file_version,
    launchpad_config,
    md_table,
    train_through_launcher,
    trainer_fields,
)
from assets.partitions import PAPER_GROUP
from model_code.training.configs import (
    ImageVLMTrainConfig,
    LanguageAdaptationTrainConfig,
    VisualAdaptationTrainConfig,
)
from model_code.training.job import numeric_metrics
from resources.devices import Accelerators
from resources.fields import OptionalDir, OptionalFile
from resources.launcher import TrainingLauncher
from resources.sources import ClipSource
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking

ImageVLMConfig = launchpad_config(
    ImageVLMTrainConfig,
    "ImageVLMConfig",
    pretrained_path=(
        OptionalDir,
        Field(
            default="",
            description="A local image-text-to-text checkpoint "
            "folder (LLaVA-style). Empty: build the tiny default and train it on single "
            "frames of the embedded corpus.",
        ),
    ),
    trust_remote_code=(
        bool,
        Field(
            default=False, description="run the checkpoint's own code (only for a folder you trust)"
        ),
    ),
)
VisualAdaptationConfig = launchpad_config(VisualAdaptationTrainConfig, "VisualAdaptationConfig")
LanguageAdaptationConfig = launchpad_config(
    LanguageAdaptationTrainConfig, "LanguageAdaptationConfig"
)


class VideoCaptionDataConfig(LaunchConfig):
    annotations: OptionalFile = Field(
        default="",
        description="MSR-VTT/VATEX-style annotation JSON; "
        "empty = the embedded corpus's supervised adaptation split",
    )
    videos_dir: OptionalDir = Field(default="", description="folder of the annotated videos")
    clips: int = Field(default=900, ge=1, description="clips to take")


class InstructionDataConfig(LaunchConfig):
    llm_path: OptionalDir = Field(
        default="",
        description="Local causal LM folder to write the instructions; empty = templates",
    )
    seed: int = Field(default=0, ge=0)


TRAINING = {"group_name": "adaptation", "code_version": "3", "pool": "gpu"}


def _launch_stage(
    context,
    name: str,
    job: dict,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """One stage of model_code.training.train_vlm, through the launcher (torchrun under Pipes). The
    stage and its folder are `name`'s unless the job names them (the adaptation orders)."""
    # the trainer keys the resumable state by what it trains (training.common.state_file): a
    # rerun with other settings or inputs starts afresh, a rerun of the same resumes
    job = {
        "stage": name,
        "out": str(store.checkpoint(name)),
        "state": str(store.training_state(name)),
        **job,
    }
    return train_through_launcher(
        context,
        launcher=launcher,
        tracking=tracking,
        store=store,
        accelerators=accelerators,
        module="model_code.training.train_vlm",
        name=name,
        job=job,
    )


@asset(**TRAINING)
def image_vlm(
    context: AssetExecutionContext,
    config: ImageVLMConfig,
    clip_source: ClipSource,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """The starting point: a user's local image VLM, or by default a tiny VLM that learned
    language from text and captioning from single still frames — it knows no motion."""
    from dataclasses import asdict

    if config.pretrained_path:
        from model_code.training.train_vlm import import_pretrained

        folder = store.checkpoint("image_vlm")
        return checkpoint_result(
            folder,
            import_pretrained(
                config.pretrained_path, folder, trust_remote_code=config.trust_remote_code
            ),
        )
    job = {
        "config": trainer_fields(config, ImageVLMTrainConfig),
        "corpus": asdict(clip_source.corpus_config()),
        "data": {"corpus_seed": clip_source.seed},
    }
    return _launch_stage(context, "image_vlm", job, store, tracking, launcher, accelerators)


@asset(group_name="adaptation", code_version="1")
def video_caption_data(
    context: AssetExecutionContext,
    config: VideoCaptionDataConfig,
    clip_source: ClipSource,
    store: ArtifactStore,
) -> MaterializeResult:
    """Supervised (clip, caption) pairs for visual adaptation: the embedded adaptation split,
    or a local MSR-VTT/VATEX-style annotation file with its videos."""
    import pandas as pd

    from model_code.data import annotations, corpus, shards
    from model_code.data.ingest import ingest, rejects_bytes
    from model_code.data.manifest import VideoSource

    out = store.video_caption_data()
    if config.annotations:
        videos = annotations.read_msrvtt(config.annotations, config.videos_dir, limit=config.clips)
        sources = [VideoSource(v.path, alt_text=v.captions[0]) for v in videos]
        clips, rejects = ingest(sources, clip_source.ingest_config())
        by_path = {v.path: v for v in videos}
        rows = [
            {"key": c.key, "caption": by_path[c.meta["source"]].captions[0], "attributes": None}
            for c in clips
        ]
    else:
        specs = corpus.split_specs("adapt", clip_source.corpus_config(), 0, config.clips)
        clips, rejects = shards.embedded_clips(specs), []
        rows = [
            {
                "key": s.key,
                "caption": corpus.ground_truth_caption(s),
                "attributes": json.dumps(s.attributes()),
            }
            for s in specs
        ]
    shards.write_shard(out / "clips.tar", clips)
    df = pd.DataFrame(rows, columns=["key", "caption", "attributes"])
    store.write_parquet(out / "captions.parquet", df)
    store.write_bytes(out / "rejects.parquet", rejects_bytes(rejects))
    from dagster import DataVersion

    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out)),
            "clips": len(clips),
            "rejects": len(rejects),
            "samples": md_table(rows[:8]),
        },
        data_version=DataVersion(
            file_version(out / "captions.parquet")[:8] + file_version(out / "clips.tar")[:8]
        ),
    )


def _version(store: ArtifactStore, name: str) -> str:
    from model_code.models.lineage import read_lineage

    return read_lineage(store.checkpoint(name))["version"]


@asset(**TRAINING, deps=[image_vlm, video_caption_data])
def adapted_encoder(
    context: AssetExecutionContext,
    config: VisualAdaptationConfig,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """Stage 1: vision tower and projector learn from video captions; the LM stays frozen, so
    only the vision tower and projector are saved (on top of image_vlm)."""
    job = {
        "config": trainer_fields(config, VisualAdaptationTrainConfig),
        "base": str(store.checkpoint("image_vlm")),
        "caption_data": str(store.video_caption_data()),
        "parents": {"image_vlm": _version(store, "image_vlm")},
    }
    return _launch_stage(context, "adapted_encoder", job, store, tracking, launcher, accelerators)


@asset(group_name="adaptation", code_version="2", deps=[video_caption_data])
def instruction_data(
    context: AssetExecutionContext, config: InstructionDataConfig, store: ArtifactStore
) -> MaterializeResult:
    """Instruction-following examples about the videos (describe, direction, order, change,
    counting, yes/no, short caption), made from the video captions."""
    import pandas as pd

    from model_code.data import instructions

    df = pd.read_parquet(store.video_caption_data("captions.parquet"))
    records = [
        {
            "key": r["key"],
            "caption": r["caption"],
            **({"attributes": json.loads(r["attributes"])} if r["attributes"] else {}),
        }
        for r in df.to_dict("records")
    ]
    if config.llm_path:
        rows = instructions.make_instructions_with_llm(records, config.llm_path, seed=config.seed)
    else:
        rows = instructions.make_instructions(records, seed=config.seed)
    out = pd.DataFrame(rows)
    path = store.write_parquet(store.instruction_data(), out)
    counts = out["type"].value_counts().to_dict()
    from dagster import DataVersion

    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "examples": len(out),
            "per_type": md_table([{"type": k, "examples": v} for k, v in counts.items()], 20),
            "samples": md_table(out.groupby("type").head(1).to_dict("records"), 20),
        },
        data_version=DataVersion(file_version(path)),
    )


@asset(**TRAINING, deps=[adapted_encoder, instruction_data])
def instruction_tuned_lm(
    context: AssetExecutionContext,
    config: LanguageAdaptationConfig,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """Stage 2: the LM learns to follow instructions about videos; vision stays frozen, so only
    the LM and its head are saved."""
    job = {
        "config": trainer_fields(config, LanguageAdaptationTrainConfig),
        "base": str(store.checkpoint("image_vlm")),
        "encoder": str(store.checkpoint("adapted_encoder")),
        "caption_data": str(store.video_caption_data()),
        "instructions": str(store.instruction_data()),
        "parents": {
            "image_vlm": _version(store, "image_vlm"),
            "adapted_encoder": _version(store, "adapted_encoder"),
        },
    }
    return _launch_stage(
        context, "instruction_tuned_lm", job, store, tracking, launcher, accelerators
    )


def _composed(store: ArtifactStore, name: str, parts: tuple[str, ...]) -> MaterializeResult:
    """checkpoints/<name>: the image VLM with the trained parts put in place (model_code.
    train_vlm.compose), as one Hugging Face folder written once; its lineage names them all."""
    from model_code.training.train_vlm import compose, write_vlm_folder

    parents = {part: _version(store, part) for part in ("image_vlm", *parts)}
    vlm = compose(store.checkpoint("image_vlm"), *[store.checkpoint(p) for p in parts])
    folder = store.checkpoint(name)
    lineage = write_vlm_folder(vlm, folder, kind=name, parents=parents)
    return checkpoint_result(folder, lineage, {f"{p}_version": parents[p] for p in parts})


@asset(group_name="adaptation", code_version="1", deps=[image_vlm, adapted_encoder])
def visual_adapted_vlm(context: AssetExecutionContext, store: ArtifactStore) -> MaterializeResult:
    """The stage-1 video captioner as one Hugging Face folder: the image VLM with the adapted
    encoder in place and its LM untouched (the paper's "+ visual adaptation" rung)."""
    return _composed(store, "visual_adapted_vlm", ("adapted_encoder",))


@asset(group_name="adaptation", code_version="1", deps=[image_vlm, instruction_tuned_lm])
def video_vlm(context: AssetExecutionContext, store: ArtifactStore) -> MaterializeResult:
    """The video captioner as one Hugging Face folder (AutoModelForImageTextToText): the image
    VLM with the adapted encoder and the instruction-tuned LM in place, written once; its
    lineage names all three."""
    return _composed(store, "video_vlm", ("adapted_encoder", "instruction_tuned_lm"))


def _compare(
    context,
    name: str,
    folders: dict[str, Path],
    label: str,
    store: ArtifactStore,
    tracking: MlflowTracking,
    accelerators: Accelerators,
    extra: dict | None = None,
) -> MaterializeResult:
    """Each VLM folder on the benchmark clips (model_code.evaluation.captioner_eval.compare_vlms,
    one row
    per folder, named in column `label`): <name>.json and <name>.md under the data root, an
    MLflow run, and the table, sample captions and figures as metadata."""
    from model_code.evaluation.captioner_eval import compare_vlms

    with accelerators.device() as device:  # leased while the models run
        comparison = compare_vlms(folders, store.benchmark(), device, label)
    rows = comparison.rows
    table = md_table(comparison.headline())
    metadata = {"comparison": table, **(extra or {})}
    text = f"{table.value}\n"
    if comparison.has_qa:
        metadata["qa_by_type"] = qa_table = md_table(comparison.qa_by_type())
        text += (
            f"\nVideo QA by question type (percent; soft: token F1 >= 0.5):\n\n{qa_table.value}\n"
        )
    else:
        context.log.info(
            "video QA skipped: the benchmark clips carry no attributes to ask about (real data)"
        )
        metadata["video_qa"] = "skipped: the benchmark clips carry no attributes (real data)"
    metadata["samples"] = md_table(comparison.samples)
    figures = {f"{r[label]}.{k}": v for r in rows for k, v in numeric_metrics(r).items()}
    with tracking.run(name) as run:
        run.log_text(text, f"{name}.md")
        run.log_metrics(figures)
    store.write_bytes(store.report(f"{name}.json"), json.dumps(rows, indent=1).encode())
    store.write_bytes(store.report(f"{name}.md"), text.encode())
    return MaterializeResult(metadata={**metadata, **figures})


@asset(
    group_name="adaptation",
    code_version="2",
    pool="gpu",
    deps=[image_vlm, visual_adapted_vlm, video_vlm, "retrieval_benchmark"],
)
def captioner_eval(
    context: AssetExecutionContext,
    store: ArtifactStore,
    tracking: MlflowTracking,
    accelerators: Accelerators,
) -> MaterializeResult:
    """Caption the held-out clips with each VLM stage and ask it the video QA questions; CIDEr,
    BLEU-4, (on the embedded corpus) whether motion, colour and shape are named correctly, and
    QA accuracy by question type, side by side."""
    names = ("image_vlm", "visual_adapted_vlm", "video_vlm")
    return _compare(
        context,
        "captioner_eval",
        {n: store.checkpoint(n) for n in names},
        "model",
        store,
        tracking,
        accelerators,
    )


ORDER_ABLATIONS = ("language_then_vision", "joint")
"""The adaptation orders trained beside the recipe's vision_then_language (video_vlm):
language_then_vision (stage 2, then stage 1 with that LM) and joint (both halves in one run)."""

order_partitions = StaticPartitionsDefinition(list(ORDER_ABLATIONS))
"""One adaptation_order_vlm checkpoint per order."""


@asset(
    group_name=PAPER_GROUP,
    partitions_def=order_partitions,
    code_version="1",
    pool="gpu",
    deps=[image_vlm, video_caption_data, instruction_data, adapted_encoder, instruction_tuned_lm],
)
def adaptation_order_vlm(
    context: AssetExecutionContext,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """The image VLM adapted in this partition's order by the recipe's stage programs
    (model_code.training.train_vlm.order_jobs), with the settings adapted_encoder and
    instruction_tuned_lm were trained with, on the same captions and instructions: one whole
    Hugging Face folder per order, checkpoints/adaptation_order/<order> (language_then_vision's
    first stage writes its part beside it)."""
    from model_code.models.lineage import read_lineage
    from model_code.training.train_vlm import order_jobs

    order = context.partition_key
    stages = {
        n: read_lineage(store.checkpoint(n))
        for n in ("image_vlm", "adapted_encoder", "instruction_tuned_lm")
    }
    out = store.checkpoint(f"adaptation_order/{order}")
    jobs = order_jobs(
        order,
        base=store.checkpoint("image_vlm"),
        caption_data=store.video_caption_data(),
        instructions=store.instruction_data(),
        visual_config=stages["adapted_encoder"]["training_config"],
        language_config=stages["instruction_tuned_lm"]["training_config"],
        out=out,
        parents={"image_vlm": stages["image_vlm"]["version"]},
        data={
            "settings_of": {
                n: stages[n]["version"] for n in ("adapted_encoder", "instruction_tuned_lm")
            }
        },
    )
    for job in jobs:  # the last job writes the whole VLM to `out`: its result is this partition's
        trained = _launch_stage(
            context,
            f"adaptation_order.{job['kind']}",
            job,
            store,
            tracking,
            launcher,
            accelerators,
        )
        version = trained.metadata.get("version")
        context.log.info(
            f"{job['kind']}: {job['out']} (version {getattr(version, 'value', version)})"
        )
    return MaterializeResult(
        metadata={
            **trained.metadata,
            "path": MetadataValue.path(str(out)),
            "order": order,
            "stages": ", ".join(job["kind"] for job in jobs),
        },
        data_version=trained.data_version,
    )


@asset(
    group_name=PAPER_GROUP,
    code_version="2",
    pool="gpu",
    deps=[
        AssetDep(adaptation_order_vlm, partition_mapping=AllPartitionMapping()),
        video_vlm,
        "retrieval_benchmark",
    ],
)
def adaptation_order(
    context: AssetExecutionContext,
    store: ArtifactStore,
    tracking: MlflowTracking,
    accelerators: Accelerators,
) -> MaterializeResult:
    """The paper's order ablation: vision-then-language (video_vlm) against every order of
    adaptation_order_vlm that Dagster records as materialized (the latest checkpoint of each),
    on the same captions and QA. Trains nothing."""
    from assets.evidence import latest_checkpoints

    trained = latest_checkpoints(context.instance, adaptation_order_vlm.key)
    if not trained:
        raise ValueError(
            "adaptation_order: no partition of adaptation_order_vlm is materialized: materialize "
            f"adaptation_order_vlm [{'] or ['.join(ORDER_ABLATIONS)}] first"
        )
    folders = {"vision_then_language": store.checkpoint("video_vlm")}
    folders.update({order: trained[order] for order in ORDER_ABLATIONS if order in trained})
    return _compare(
        context,
        "adaptation_order",
        folders,
        "order",
        store,
        tracking,
        accelerators,
        {f"{o}.path": MetadataValue.path(str(f)) for o, f in folders.items()},
    )
