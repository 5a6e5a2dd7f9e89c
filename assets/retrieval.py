"""Retrieval group: dual encoders trained on each caption source, their benchmark scores, and
the ablation table that compares them (docs/design.md, steps 3 and 4)."""

import json
from typing import Literal

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    SpecificPartitionsPartitionMapping,
    asset,
)
from pydantic import Field

from assets.captions import CAPTIONER_ASSETS, failed_quality_checks, teacher_captions
from assets.common import (
    LaunchConfig,
    file_version,
    latest_materializations,
    launchpad_config,
    md_table,
    train_through_launcher,
    trainer_fields,
)
from assets.corpus import clip_shards
from assets.partitions import CAPTION_SOURCES, seed_partitions, source_group
from model_code.training.configs import DualEncoderTrainConfig
from model_code.training.job import DualEncoderJob
from resources.caption_sources import current_captions
from resources.catalog import Catalog
from resources.devices import Accelerators
from resources.fields import OptionalDir, OptionalFile, OptionalPath
from resources.launcher import TrainingLauncher
from resources.sources import ClipSource
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking

SCORE_COLUMNS = [
    "t2v_R1",
    "t2v_R5",
    "t2v_R10",
    "t2v_MedR",
    "t2v_MeanR",
    "v2t_R1",
    "v2t_R5",
    "v2t_R10",
    "v2t_MedR",
    "v2t_MeanR",
]


class RetrievalBenchmarkConfig(LaunchConfig):
    annotations: OptionalFile = Field(
        default="", description="MSR-VTT annotation JSON; empty = the embedded held-out set"
    )
    videos_dir: OptionalDir = Field(default="", description="folder of the annotated videos")
    test_list: OptionalFile = Field(
        default="", description="1k-A style list (txt of ids or MSRVTT_JSFUSION_test.csv)"
    )
    clips: int = Field(default=200, ge=1, description="held-out clips")
    classes: OptionalPath = Field(
        default="",
        description="zero-shot classification videos: a folder with one sub-folder "
        "per class (UCF101/HMDB style) or a CSV with path,label; class names become prompts",
    )
    protocol: Literal["auto", "1k-A", "all_captions"] = Field(
        default="auto",
        description="1k-A: the JSFUSION CSV's (video, sentence) pairs; "
        "all_captions: every JSON caption of each video; auto: 1k-A when test_list is that CSV",
    )


@asset(group_name="retrieval", code_version="1")
def retrieval_benchmark(
    context: AssetExecutionContext,
    config: RetrievalBenchmarkConfig,
    clip_source: ClipSource,
    store: ArtifactStore,
) -> MaterializeResult:
    """Held-out clips with reference captions in the MSR-VTT layout, plus zero-shot classes
    (on the embedded corpus: motion and shape)."""
    from model_code.data import annotations, shards
    from model_code.data.ingest import rejects_bytes
    from model_code.evaluation import heldout

    out = store.benchmark()
    if config.annotations:
        videos, protocol = annotations.read_annotations(
            config.annotations,
            config.videos_dir,
            config.test_list or None,
            limit=config.clips,
            protocol=config.protocol,
        )
        clips, rejects, refs, classes = heldout.from_annotated(videos, clip_source.ingest_config())
    else:
        clips, rejects, refs, classes = heldout.embedded(clip_source.corpus_config(), config.clips)
        protocol = "embedded"  # one ground-truth caption per clip
    if config.classes:
        names, items = annotations.read_labelled(config.classes)
        more, bad, labelled = heldout.labelled_task(names, items, clip_source.ingest_config())
        clips, rejects, classes = clips + more, rejects + bad, {**classes, **labelled}
    shards.write_shard(out / "clips.tar", clips)
    store.write_bytes(out / "annotations.json", annotations.msrvtt_json(refs, protocol))
    store.write_bytes(out / "classes.json", json.dumps(classes).encode())
    store.write_bytes(out / "rejects.parquet", rejects_bytes(rejects))
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out)),
            "videos": len(clips),
            "captions": sum(len(c) for _, c in refs),
            "rejects": len(rejects),
            "zero_shot_tasks": ", ".join(classes) or "none",
            "protocol": protocol,
            "samples": md_table([{"video_id": v, "caption": c[0]} for v, c in refs[:8]]),
        },
        data_version=DataVersion(
            file_version(out / "annotations.json")[:8] + file_version(out / "clips.tar")[:8]
        ),
    )


DualEncoderLaunchConfig = launchpad_config(
    DualEncoderTrainConfig, "DualEncoderLaunchConfig", exclude=("seed",)
)
"""The trainer's settings less `seed`: the seed is the partition."""


def training_pairs(source: str, catalog: Catalog, store: ArtifactStore):
    """(key, partition, caption, version) for every corpus clip that has a caption of this
    source; several rows for a clip with several captions (the trainer draws one a visit)."""
    if source == "alt_text":
        return catalog.query(
            "SELECT key, partition, alt_text AS caption, 'alt_text' AS version "
            "FROM clips ORDER BY partition, key"
        )
    if source == "ground_truth":
        df = catalog.query(
            "SELECT key, partition, ground_truth AS caption, 'ground_truth' AS "
            "version FROM clips WHERE ground_truth IS NOT NULL ORDER BY partition, key"
        )
        if df.empty:
            raise ValueError(
                "the clip source has no ground-truth captions (only the embedded "
                "corpus does); materialize the other caption sources"
            )
        return df
    return current_captions(source, catalog, store)[["key", "partition", "caption", "version"]]


CAPTION_ASSETS = {**CAPTIONER_ASSETS, "teacher_captions": teacher_captions}
"""Caption source -> the asset whose partitions hold its captions (none for alt-text and
ground truth: they come with the clip shards)."""


def refuse_failed_captions(instance, source: str, pairs) -> None:
    """A caption partition whose blocking caption_quality check failed is not trained on: name
    each such partition of `pairs` and why, and what would unblock it."""
    if source not in CAPTION_ASSETS:
        return
    failed = failed_quality_checks(instance, source, sorted(pairs["partition"].unique()))
    if failed:
        raise ValueError(
            f"{source} failed its caption_quality check on {len(failed)} partition(s): "
            + "; ".join(f"{p}: {why}" for p, why in failed.items())
            + f". Not training on them: re-caption those partitions of {source} (or change "
            "the thresholds) until the check passes"
        )


def train_dual_encoder_on(
    context,
    pairs,
    *,
    settings: dict,
    out,
    files: str,
    run_name: str,
    data: dict,
    resources: dict,
    extra: dict,
) -> MaterializeResult:
    """One dual encoder trained on `pairs` (key, partition, caption, version) with the trainer
    `settings`, into the checkpoint folder `out`, through the launcher (torchrun under Pipes):
    the pairs go to training_inputs/<files>.parquet, the resumable state to
    training_state/<files>; `data` joins the lineage's data record, `extra` the metadata."""
    from model_code.evaluation import heldout

    store = resources["store"]
    partitions = sorted(pairs["partition"].unique())
    pairs_path = store.write_parquet(
        store.training_inputs(files), pairs[["key", "caption", "version"]]
    )
    classes = json.loads(store.benchmark("classes.json").read_text())
    job = DualEncoderJob(
        config=settings,
        pairs=str(pairs_path),
        shards=[str(store.shard(p)) for p in partitions],
        out=str(out),
        state=str(store.training_state(files)),
        extra_texts=heldout.class_prompt_texts(classes),
        parents={"captions": sorted(pairs["version"].unique())},
        data={**data, "partitions": partitions},
    ).to_json()
    return train_through_launcher(
        context,
        **resources,
        module="model_code.training.train_dual_encoder",
        name=run_name,
        job=job,
        params={**data, "pairs": len(pairs)},
        extra={**extra, "sample_pairs": md_table(pairs.head(5).to_dict("records"))},
    )


def dual_encoder_key(source: str) -> AssetKey:
    return AssetKey(["dual_encoder", source])


def scores_key(source: str) -> AssetKey:
    return AssetKey(["benchmark_scores", source])


def _dual_encoder(source: str):
    """dual_encoder/<source>: one checkpoint per seed partition, trained on exactly the captions
    of `source` (the caption asset's partitions; alt-text and ground truth come with the clip
    shards), so nothing else makes it stale."""
    captions = CAPTION_ASSETS.get(source)
    deps = [AssetDep(clip_shards, partition_mapping=AllPartitionMapping()), retrieval_benchmark]
    if captions is not None:
        deps.insert(1, AssetDep(captions, partition_mapping=AllPartitionMapping()))

    @asset(
        key=dual_encoder_key(source),
        group_name=source_group(source),
        partitions_def=seed_partitions,
        deps=deps,
        code_version="4",
        pool="gpu",
    )
    def dual_encoder(
        context: AssetExecutionContext,
        config: DualEncoderLaunchConfig,
        catalog: Catalog,
        store: ArtifactStore,
        tracking: MlflowTracking,
        launcher: TrainingLauncher,
        accelerators: Accelerators,
    ) -> MaterializeResult:
        seed = int(context.partition_key)
        pairs = training_pairs(source, catalog, store)
        refuse_failed_captions(context.instance, source, pairs)
        return train_dual_encoder_on(
            context,
            pairs,
            settings={**trainer_fields(config, DualEncoderTrainConfig, ("seed",)), "seed": seed},
            out=store.dual_encoder(source, seed),
            files=f"dual_encoder-{source}-seed{seed}",
            run_name=f"dual_encoder[{source}][seed{seed}]",
            data={"source": source},
            resources={
                "store": store,
                "tracking": tracking,
                "launcher": launcher,
                "accelerators": accelerators,
            },
            extra={"source": source, "seed": seed, "clips": int(pairs["key"].nunique())},
        )

    dual_encoder.__doc__ = (
        f"A CLIP-style video-text dual encoder trained contrastively on {source} "
        "(model_code.training.train_dual_encoder through the launcher: torchrun under Pipes), one "
        "checkpoint per seed partition."
    )
    return dual_encoder


def _benchmark_scores(source: str):
    @asset(
        key=scores_key(source),
        group_name=source_group(source),
        partitions_def=seed_partitions,
        deps=[dual_encoder_key(source), retrieval_benchmark],
        code_version="2",
    )
    def benchmark_scores(
        context: AssetExecutionContext, store: ArtifactStore, tracking: MlflowTracking
    ) -> MaterializeResult:
        import pandas as pd

        from model_code.evaluation import heldout
        from model_code.models.lineage import read_lineage

        seed = int(context.partition_key)
        folder = store.dual_encoder(source, seed)
        if not (folder / "lineage.json").exists():
            raise ValueError(
                f"no dual encoder of {source} with seed {seed} at {folder}: "
                f"materialize dual_encoder/{source} [{seed}] first"
            )
        scores = heldout.score_dual_encoder(folder, store.benchmark())
        version = read_lineage(folder)["version"]
        protocol = json.loads(store.benchmark("annotations.json").read_text()).get(
            "protocol", "all_captions"
        )
        row = {"source": source, "model_version": version, "protocol": protocol, "seed": seed}
        with tracking.run(f"benchmark_scores[{source}][seed{seed}]", params=row) as run:
            run.log_metrics(scores)
        path = store.scores(source, seed)
        store.write_parquet(path, pd.DataFrame([{**row, **scores}]))
        return MaterializeResult(
            metadata={
                "model_version": version,
                "protocol": protocol,
                "path": MetadataValue.path(str(path)),
                **{k: float(v) for k, v in scores.items()},
            },
            data_version=DataVersion(f"{version}-{file_version(path)[:8]}"),
        )

    benchmark_scores.__doc__ = (
        "Text->video and video->text R@1/5/10, median and mean rank (MSR-VTT protocol) and "
        f"zero-shot classification of the {source} dual encoder of this seed."
    )
    return benchmark_scores


DUAL_ENCODERS = {source: _dual_encoder(source) for source in CAPTION_SOURCES}
BENCHMARK_SCORES = {source: _benchmark_scores(source) for source in CAPTION_SOURCES}
TRAINED_AND_SCORED = [*DUAL_ENCODERS.values(), *BENCHMARK_SCORES.values()]
"""Module-level, so load_assets_from_modules finds them."""


def latest_scores(instance) -> list[dict]:
    """The latest materialization of every seed partition of every benchmark_scores asset, as
    rows (source, seed, model_version, protocol, scored_at, metrics...): Dagster's records say
    which scores exist, not the files under scores/."""
    rows = []
    for source in CAPTION_SOURCES:
        latest = latest_materializations(instance, scores_key(source))
        for seed, (materialization, timestamp) in sorted(latest.items(), key=lambda kv: int(kv[0])):
            metadata = materialization.metadata
            row = {
                "source": source,
                "seed": int(seed),
                "scored_at": timestamp,
                "model_version": metadata["model_version"].value,
                "protocol": metadata["protocol"].value if "protocol" in metadata else "",
            }
            row.update(
                {
                    name: float(value.value)
                    for name, value in metadata.items()
                    if isinstance(value.value, (int, float)) and not isinstance(value.value, bool)
                }
            )
            rows.append(row)
    return rows


@asset(
    group_name="retrieval",
    deps=[
        AssetDep(scores, partition_mapping=AllPartitionMapping())
        for scores in BENCHMARK_SCORES.values()
    ],
    code_version="2",
)
def ablation_table(
    context: AssetExecutionContext, store: ArtifactStore, tracking: MlflowTracking
) -> MaterializeResult:
    """One row per caption source: each metric's mean ± standard deviation over the seed
    partitions scored (the latest materialization of each, from Dagster's records), the number
    of seeds, and whether t2v R@1 is within one standard deviation of the previous source's:
    the paper's headline, with its spread."""
    import pandas as pd

    from model_code.evaluation.heldout import seed_summary
    from model_code.evaluation.plots import bars_png

    rows = latest_scores(context.instance)
    if not rows:
        raise ValueError("no benchmark_scores materialized yet: materialize the dual encoders")
    scores = pd.DataFrame(rows)
    metrics = [c for c in SCORE_COLUMNS if c in scores.columns]
    metrics += sorted(c for c in scores.columns if c.startswith("zs_") and c.endswith("_top1"))
    df = seed_summary(scores, metrics, list(CAPTION_SOURCES))
    shown = [
        {
            "source": r["source"],
            "seeds": r["seeds"],
            "protocol": r.get("protocol", ""),
            **{m: f"{r[m]:.1f} ± {r[m + '_std']:.1f}" for m in metrics},
            "t2v_R1 ≈ previous": "yes" if r["t2v_R1_within_1sd_of_previous"] else "",
        }
        for r in df.to_dict("records")
    ]
    table = md_table(shown, 20)
    store.write_bytes(store.report("ablation_table.md"), table.value.encode())
    plot = store.write_bytes(
        store.report("ablation_table.png"),
        bars_png(
            df.to_dict("records"),
            "source",
            "t2v_R1",
            "t2v_R1_std",
            "text-to-video R@1 by caption source (mean ± std over seeds)",
        ),
    )
    with tracking.run("ablation_table") as run:
        run.log_text(table.value, "ablation_table.md")
        run.log_artifact(plot)
        for r in df.to_dict("records"):
            run.log_metrics(
                {f"{r['source']}.{m}{s}": r[m + s] for m in metrics for s in ("", "_std")}
                | {f"{r['source']}.seeds": r["seeds"]}
            )
    return MaterializeResult(
        metadata={
            "ablation": table,
            "sources": len(df),
            "seeds": int(df["seeds"].max()) if len(df) else 0,
            "plot": MetadataValue.path(str(plot)),
        }
    )


INDEX_SEED = "0"
"""The seed whose pseudo-caption dual encoder the search index uses."""


@asset(
    group_name="retrieval",
    deps=[
        AssetDep(
            DUAL_ENCODERS["pseudo_captions"],
            partition_mapping=SpecificPartitionsPartitionMapping([INDEX_SEED]),
        ),
        AssetDep(CAPTION_ASSETS["pseudo_captions"], partition_mapping=AllPartitionMapping()),
        AssetDep(clip_shards, partition_mapping=AllPartitionMapping()),
    ],
    code_version="2",
)
def video_index(
    context: AssetExecutionContext, catalog: Catalog, store: ArtifactStore
) -> MaterializeResult:
    """Embeddings of every corpus clip by the pseudo-caption dual encoder of seed 0 (that one
    partition: other seeds do not make it stale), in DuckDB, for text-to-video search
    (`vidistill search`, `vidistill serve`)."""
    from model_code.data import shards
    from model_code.inference.video_index import write_index
    from model_code.models.dual_encoder import DualEncoder, embed_videos
    from model_code.models.lineage import read_lineage

    folder = store.dual_encoder("pseudo_captions", INDEX_SEED)
    model = DualEncoder.from_pretrained(folder)
    clips = catalog.query("SELECT key, partition, alt_text FROM clips ORDER BY partition, key")
    partitions = sorted(clips["partition"].unique())
    frames = shards.frames_by_key([store.shard(p) for p in partitions], model.config.num_frames)
    clips = clips[clips["key"].isin(frames)]
    emb = embed_videos(model, [frames[k] for k in clips["key"]])
    captions = current_captions("pseudo_captions", catalog, store)
    captions = captions[captions["sample"] == 0]
    by_key = dict(zip(captions["key"], captions["caption"]))
    path = store.video_index()
    write_index(
        path,
        clips["key"].tolist(),
        clips["partition"].tolist(),
        [by_key.get(k, "") for k in clips["key"]],
        emb,
        read_lineage(folder)["version"],
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "clips": len(clips),
            "dim": int(emb.shape[1]),
            "query": (
                f"python -m model_code.inference.video_index {path} {folder} "
                '"a red circle moves left"'
            ),
        }
    )
