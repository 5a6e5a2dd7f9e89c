"""The paper's evidence beyond the ablation table: how retrieval grows with the number of
pseudo-captioned clips, against the alt-text dual encoder trained on all of them.

Each point of the curve is a checkpoint of its own: a partition (fraction x seed) of
scaling_dual_encoder, with its data version, parents and MLflow run. scaling_curve trains
nothing: it scores the partitions Dagster records as materialized, and the alt-text baseline's
seed partitions."""

import base64
import json
from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)

from assets.common import (
    file_version,
    latest_materializations,
    launchpad_config,
    md_table,
    trainer_fields,
)
from assets.partitions import PAPER_GROUP, seed_partitions
from assets.retrieval import CAPTION_ASSETS, dual_encoder_key, retrieval_benchmark
from model_code.training.configs import DualEncoderTrainConfig
from resources.catalog import Catalog
from resources.devices import Accelerators
from resources.launcher import TrainingLauncher
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking

CURVE_METRICS = ("t2v_R1", "t2v_R5", "t2v_MedR", "v2t_R1")

SCALING_SOURCE = "pseudo_captions"
"""The caption source whose clips are subsampled."""
BASELINE_SOURCE = "alt_text"
"""The source trained on all its clips (dual_encoder/alt_text), drawn as a dashed line."""

SCALING_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
"""The paper's fractions of the source's clips (1%: "matches all the alt-text")."""


def fraction_key(fraction: float) -> str:
    """A fraction's partition key: 0.05 -> "5pct"."""
    return f"{fraction * 100:g}pct"


FRACTIONS = {fraction_key(f): f for f in SCALING_FRACTIONS}
"""Partition key of the `fraction` dimension -> the fraction of the clips it trains on."""

scaling_partitions = MultiPartitionsDefinition(
    {"fraction": StaticPartitionsDefinition(list(FRACTIONS)), "seed": seed_partitions}
)
"""One scaling checkpoint per (fraction, seed); a key reads "5pct|0" (fraction|seed)."""

ScalingDualEncoderConfig = launchpad_config(
    DualEncoderTrainConfig, "ScalingDualEncoderConfig", exclude=("seed",)
)
ScalingDualEncoderConfig.__doc__ = (
    "The dual encoder trained on one fraction of the pseudo-captioned clips: the trainer's "
    "settings less `seed` (the fraction and the seed are the partition)."
)


def scaling_checkpoint_name(fraction_partition: str, seed: int | str) -> str:
    """checkpoints/<this>: one folder per partition, e.g. scaling/pseudo_captions-5pct-seed0."""
    return f"scaling/{SCALING_SOURCE}-{fraction_partition}-seed{int(seed)}"


def _batch_for(clips: int, settings: dict, name: str) -> int:
    """The configured global batch, or the most clips a small subset can fill (a multiple of the
    ranks): the trainer batches clips (one caption of each a pass) and refuses a batch larger
    than its data. The table shows the batch each point was trained with."""
    nproc = settings["nproc_per_node"]
    batch = min(settings["batch_size"], clips // nproc * nproc)
    if batch < 2:
        raise ValueError(
            f"scaling_dual_encoder: {name} has {clips} clip(s), too few for a batch of 2 "
            f"on {nproc} rank(s): this fraction of the corpus cannot be trained; materialize "
            "the larger fractions, or caption more clips"
        )
    return batch


@asset(
    group_name=PAPER_GROUP,
    partitions_def=scaling_partitions,
    deps=[
        AssetDep(CAPTION_ASSETS[SCALING_SOURCE], partition_mapping=AllPartitionMapping()),
        AssetDep("clip_shards", partition_mapping=AllPartitionMapping()),
        retrieval_benchmark,
    ],
    code_version="1",
    pool="gpu",
)
def scaling_dual_encoder(
    context: AssetExecutionContext,
    config: ScalingDualEncoderConfig,
    catalog: Catalog,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """A dual encoder trained on one fraction of the pseudo-captioned clips (every caption of
    each chosen clip), with this partition's seed: the subsets are nested (every smaller one
    lies inside every larger one of the same seed) and the seed draws the weights, the data
    order and which clips a fraction takes. One checkpoint folder per partition."""
    import hashlib

    from assets.retrieval import refuse_failed_captions, train_dual_encoder_on, training_pairs
    from model_code.evaluation.scaling import nested_subset

    keys_by_dimension = context.partition_key.keys_by_dimension
    fraction_partition, seed = keys_by_dimension["fraction"], int(keys_by_dimension["seed"])
    fraction = FRACTIONS[fraction_partition]
    pairs = training_pairs(SCALING_SOURCE, catalog, store)
    refuse_failed_captions(context.instance, SCALING_SOURCE, pairs)
    keys = nested_subset(pairs["key"], fraction, salt=f"seed{seed}")
    subset = pairs[pairs["key"].isin(set(keys))]
    name = f"{SCALING_SOURCE}-{fraction_partition}-seed{seed}"
    digest = hashlib.sha256(
        "\n".join(
            f"{k}\t{c}" for k, c in zip(subset["key"], subset["caption"], strict=True)
        ).encode()
    ).hexdigest()[:16]
    settings = {**trainer_fields(config, DualEncoderTrainConfig, exclude=("seed",)), "seed": seed}
    settings["batch_size"] = _batch_for(len(keys), settings, name)
    if settings["batch_size"] < config.batch_size:
        context.log.warning(
            f"scaling_dual_encoder: {name} has {len(keys)} clips, fewer than a batch "
            f"of {config.batch_size}: trained with batches of {settings['batch_size']}"
        )
    return train_dual_encoder_on(
        context,
        subset,
        settings=settings,
        out=store.checkpoint(scaling_checkpoint_name(fraction_partition, seed)),
        files=f"scaling-{name}",
        run_name=f"scaling_dual_encoder[{name}]",
        data={
            "source": SCALING_SOURCE,
            "fraction": fraction,
            "subset_clips": len(keys),
            "subset_digest": digest,
        },
        resources={
            "store": store,
            "tracking": tracking,
            "launcher": launcher,
            "accelerators": accelerators,
        },
        extra={
            "source": SCALING_SOURCE,
            "fraction": fraction,
            "seed": seed,
            "clips": len(keys),
            "pairs": len(subset),
            "batch_size": settings["batch_size"],
        },
    )


def latest_checkpoints(instance, key: AssetKey) -> dict[str, Path]:
    """{partition key: checkpoint folder} of every materialized partition of `key`, from the
    latest materialization of each (its metadata "path"): Dagster's records say which
    checkpoints exist, not the folders on disk."""
    return {
        partition: Path(materialization.metadata["path"].value)
        for partition, (materialization, _) in latest_materializations(instance, key).items()
        if "path" in materialization.metadata
    }


def _score(folder: Path, store: ArtifactStore, *, source: str, fraction: float, seed: int) -> dict:
    """One point of the curve: the checkpoint's lineage (clips, pairs, batch, version) and its
    benchmark scores."""
    from model_code.evaluation import heldout
    from model_code.models.lineage import read_lineage

    try:
        lineage = read_lineage(folder)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"scaling_curve: the checkpoint of {source} {fraction:.0%} seed {seed} recorded at "
            f"{folder} cannot be read ({error}): materialize that partition again"
        ) from error
    return {
        "source": source,
        "fraction": fraction,
        "clips": int(lineage["data"]["clips"]),
        "pairs": int(lineage["data"]["pairs"]),
        "seed": seed,
        "batch_size": int(lineage["training_config"]["batch_size"]),
        "model_version": lineage["version"],
        "metrics": heldout.score_dual_encoder(folder, store.benchmark()),
    }


@asset(
    group_name=PAPER_GROUP,
    deps=[
        AssetDep(scaling_dual_encoder, partition_mapping=AllPartitionMapping()),
        AssetDep(dual_encoder_key(BASELINE_SOURCE), partition_mapping=AllPartitionMapping()),
        retrieval_benchmark,
    ],
    code_version="2",
)
def scaling_curve(
    context: AssetExecutionContext, store: ArtifactStore, tracking: MlflowTracking
) -> MaterializeResult:
    """Benchmark R@1 against the number of training clips: every materialized partition of
    scaling_dual_encoder (a fraction of the pseudo-captioned clips and a seed; the latest
    materialization of each), plus each seed of dual_encoder/alt_text on all of its clips, as
    the dashed baseline (paper: 1% of pseudo-captioned clips matches all the alt-text). Every
    checkpoint is scored afresh; with several seeds a point is their mean ± std."""
    from model_code.evaluation.scaling import curve_summary, plot_curve

    scaled = latest_checkpoints(context.instance, scaling_dual_encoder.key)
    if not scaled:
        raise ValueError(
            "scaling_curve: no partition of scaling_dual_encoder is materialized: materialize "
            f"scaling_dual_encoder for some fractions ({', '.join(FRACTIONS)}) and seeds "
            '(a partition such as "5pct|0") first'
        )
    points = []
    for partition, folder in scaled.items():
        dims = scaling_partitions.get_partition_key_from_str(partition).keys_by_dimension
        if dims["fraction"] not in FRACTIONS:
            context.log.warning(f"scaling_curve: {partition} is no fraction of this code: left out")
            continue
        points.append((FRACTIONS[dims["fraction"]], int(dims["seed"]), folder))
    rows = [
        _score(folder, store, source=SCALING_SOURCE, fraction=fraction, seed=seed)
        for fraction, seed, folder in sorted(points, key=lambda p: p[:2])
    ]
    baseline = latest_checkpoints(context.instance, dual_encoder_key(BASELINE_SOURCE))
    if not baseline:
        context.log.warning(
            f"scaling_curve: no dual_encoder/{BASELINE_SOURCE} partition is materialized: the "
            "curve has no baseline"
        )
    rows += [
        _score(folder, store, source=BASELINE_SOURCE, fraction=1.0, seed=int(seed))
        for seed, folder in sorted(baseline.items(), key=lambda item: int(item[0]))
    ]

    summary = curve_summary(rows, CURVE_METRICS)
    shown = [
        {
            "source": r["source"],
            "fraction": f"{r['fraction']:.0%}",
            "clips": r["clips"],
            "seeds": r["seeds"],
            "batch": r["batch_size"],
            **{m: f"{r[m]:.1f} ± {r[m + '_std']:.1f}" for m in CURVE_METRICS if m in r},
        }
        for r in summary
    ]
    table = md_table(shown, len(shown))
    json_path = store.write_bytes(
        store.report("scaling_curve.json"), json.dumps(rows, indent=1).encode()
    )
    store.write_bytes(store.report("scaling_curve.md"), table.value.encode())
    png = plot_curve(rows, store.report("scaling_curve.png"), baseline=BASELINE_SOURCE)
    with tracking.run(
        "scaling_curve",
        params={
            "source": SCALING_SOURCE,
            "baseline": BASELINE_SOURCE,
            "seeds": sorted({r["seed"] for r in rows}),
            "partitions": len(points),
        },
    ) as run:
        run.log_text(table.value, "scaling_curve.md")
        run.log_artifact(json_path)
        run.log_artifact(png)
        for r in summary:  # MLflow's step axis is the clip count: its chart is the curve
            run.log_metrics(
                {f"{r['source']}.{m}": r[m] for m in CURVE_METRICS if m in r}, step=r["clips"]
            )
    image = base64.b64encode(png.read_bytes()).decode()
    return MaterializeResult(
        metadata={
            "curve": table,
            "plot": MetadataValue.path(str(png)),
            "plot_inline": MetadataValue.md(f"![t2v R@1 vs clips](data:image/png;base64,{image})"),
            "json": MetadataValue.path(str(json_path)),
            "runs": len(rows),
            "mlflow_run_id": run.run_id,
        },
        data_version=DataVersion(file_version(json_path)[:16]),
    )
