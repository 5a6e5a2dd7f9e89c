"""The paper's evidence beyond the ablation table: how retrieval grows with the number of
pseudo-captioned clips, against the alt-text dual encoder trained on all of them."""

import base64
import itertools
import json
from typing import Annotated, Literal

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import AfterValidator, Field

from assets.common import (
    file_version,
    launchpad_config,
    md_table,
    train_through_launcher,
    trainer_fields,
)
from assets.partitions import CAPTION_SOURCES
from model_code.train_configs import DualEncoderTrainConfig
from resources.catalog import Catalog
from resources.devices import Accelerators
from resources.launcher import TrainingLauncher
from resources.storage import ArtifactStore
from resources.tracking import MlflowTracking

CURVE_METRICS = ("t2v_R1", "t2v_R5", "t2v_MedR", "v2t_R1")


def _increasing(values: list) -> list:
    if not values:
        raise ValueError("give at least one value")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"must be sorted and without repeats, not {values}")
    return values


Fraction = Annotated[float, Field(gt=0, le=1)]
Seed = Annotated[int, Field(ge=0)]

ScalingCurveConfig = launchpad_config(
    DualEncoderTrainConfig,
    "ScalingCurveConfig",
    exclude=("seed",),
    fractions=(
        Annotated[list[Fraction], AfterValidator(_increasing)],
        Field(
            default=[0.05, 0.1, 0.25, 0.5, 1.0],
            description="fractions of the source's clips to train on, each in (0, 1], increasing; "
            "every smaller subset lies inside every larger one",
        ),
    ),
    source=(
        Literal[CAPTION_SOURCES],
        Field(
            default="pseudo_captions", description="the caption source whose clips are subsampled"
        ),
    ),
    baseline=(
        Literal[("", *CAPTION_SOURCES)],
        Field(
            default="alt_text",
            description="a source trained on all its clips, drawn as a dashed line; empty for none",
        ),
    ),
    seeds=(
        Annotated[list[Seed], AfterValidator(_increasing)],
        Field(
            default=[0],
            description="seeds of each run (weights, data order and which clips a "
            "fraction takes); with several, the table and plot show mean ± standard deviation",
        ),
    ),
)
ScalingCurveConfig.__doc__ = (
    "The dual encoder trained on growing fractions of one caption "
    "source, every run with the same trainer settings."
)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}"


def _reusable(folder, job: dict) -> bool:
    """Whether the checkpoint in `folder` is what `job` would train: the same trainer settings,
    parents, subset (its digest) and code version in its lineage. Anything else retrains."""
    from model_code.lineage import code_version, read_lineage

    try:
        lineage = read_lineage(folder)
    except (OSError, ValueError):
        return False
    same = json.loads(json.dumps(job, default=str))
    return (
        lineage.get("code_version") == code_version()
        and lineage.get("training_config") == same["config"]
        and lineage.get("parents") == same["parents"]
        and all(lineage.get("data", {}).get(k) == v for k, v in same["data"].items())
    )


def _batch_for(clips: int, settings: dict, name: str) -> int:
    """The configured global batch, or the most clips a small subset can fill (a multiple of the
    ranks): the trainer batches clips (one caption of each a pass) and refuses a batch larger
    than its data. The table shows the batch each point was trained with."""
    nproc = settings["nproc_per_node"]
    batch = min(settings["batch_size"], clips // nproc * nproc)
    if batch < 2:
        raise ValueError(
            f"scaling_curve: {name} has {clips} clip(s), too few for a batch of 2 "
            f"on {nproc} rank(s): drop that fraction from `fractions`"
        )
    return batch


def _train_and_score(
    context,
    *,
    config,
    source: str,
    fraction: float,
    seed: int,
    pairs,
    classes: dict,
    launch_resources: dict,
) -> dict:
    """One point of the curve: the subset's pairs, a dual encoder trained on them (or the
    matching checkpoint already there), its benchmark scores."""
    import hashlib

    from model_code import benchmark
    from model_code.lineage import read_lineage
    from model_code.scaling import nested_subset

    store = launch_resources["store"]
    keys = nested_subset(pairs["key"], fraction, salt=f"seed{seed}")
    subset = pairs[pairs["key"].isin(set(keys))]
    partitions = sorted(subset["partition"].unique())
    name = f"{source}-{_percent(fraction)}pct-seed{seed}"
    digest = hashlib.sha256(
        "\n".join(
            f"{k}\t{c}" for k, c in zip(subset["key"], subset["caption"], strict=True)
        ).encode()
    ).hexdigest()[:16]
    pairs_path = store.write_parquet(
        store.path("training_inputs", f"scaling-{name}.parquet"),
        subset[["key", "caption", "version"]],
    )
    out = store.checkpoint(f"scaling/{name}")
    settings = {**trainer_fields(config, DualEncoderTrainConfig, exclude=("seed",)), "seed": seed}
    settings["batch_size"] = _batch_for(len(keys), settings, name)
    if settings["batch_size"] < config.batch_size:
        context.log.warning(
            f"scaling_curve: {name} has {len(keys)} clips, fewer than a batch "
            f"of {config.batch_size}: trained with batches of "
            f"{settings['batch_size']}"
        )
    job = {
        "config": settings,
        "pairs": str(pairs_path),
        "shards": [str(store.shard(p)) for p in partitions],
        "out": str(out),
        "state": str(store.path("training_state", f"scaling-{name}")),
        "extra_texts": benchmark.class_prompt_texts(classes),
        "parents": {"captions": sorted(subset["version"].unique())},
        "data": {
            "source": source,
            "fraction": fraction,
            "subset_clips": len(keys),
            "subset_digest": digest,
            "partitions": partitions,
        },
    }
    if _reusable(out, job):
        context.log.info(f"scaling_curve: {name} reuses {out} (same lineage inputs)")
    else:
        train_through_launcher(  # its materialization is rank 0's report for one run: not ours
            context,
            **launch_resources,
            module="model_code.train_dual_encoder",
            name=f"scaling_curve[{name}]",
            job=job,
            params={"source": source, "fraction": fraction, "pairs": len(subset)},
        )
    lineage = read_lineage(out)
    scores = benchmark.score_dual_encoder(out, store.path("benchmark"))
    return {
        "source": source,
        "fraction": fraction,
        "clips": int(lineage["data"]["clips"]),
        "pairs": int(lineage["data"]["pairs"]),
        "seed": seed,
        "batch_size": int(lineage["training_config"]["batch_size"]),
        "model_version": lineage["version"],
        "metrics": scores,
    }


@asset(
    group_name="retrieval",
    deps=[
        AssetDep("clip_shards", partition_mapping=AllPartitionMapping()),
        AssetDep("pseudo_captions", partition_mapping=AllPartitionMapping()),
        "retrieval_benchmark",
    ],
    code_version="1",
    pool="gpu",
)
def scaling_curve(
    context: AssetExecutionContext,
    config: ScalingCurveConfig,
    catalog: Catalog,
    store: ArtifactStore,
    tracking: MlflowTracking,
    launcher: TrainingLauncher,
    accelerators: Accelerators,
) -> MaterializeResult:
    """Benchmark R@1 against the number of training clips: a dual encoder per fraction of the
    source's clips (nested subsets, same trainer settings) and seed, plus the baseline source on
    all of its clips (paper: 1% of pseudo-captioned clips matches all the alt-text). A run whose
    checkpoint's lineage shows the same settings, subset, parents and code version is reused,
    not retrained; every checkpoint is scored afresh."""
    from assets.retrieval import training_pairs
    from model_code.scaling import curve_summary, plot_curve

    runs = [(config.source, f) for f in config.fractions]
    runs += [(config.baseline, 1.0)] if config.baseline else []
    classes = json.loads(store.path("benchmark", "classes.json").read_text())
    resources = {
        "store": store,
        "tracking": tracking,
        "launcher": launcher,
        "accelerators": accelerators,
    }
    rows, pairs_of = [], {}
    for source, fraction in runs:
        if source not in pairs_of:
            pairs_of[source] = training_pairs(source, catalog, store)
        rows += [
            _train_and_score(
                context,
                config=config,
                source=source,
                fraction=fraction,
                seed=seed,
                pairs=pairs_of[source],
                classes=classes,
                launch_resources=resources,
            )
            for seed in config.seeds
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
        store.path("scaling_curve.json"), json.dumps(rows, indent=1).encode()
    )
    store.write_bytes(store.path("scaling_curve.md"), table.value.encode())
    png = plot_curve(rows, store.path("scaling_curve.png"), baseline=config.baseline)
    with tracking.run(
        "scaling_curve",
        params={"source": config.source, "baseline": config.baseline, "seeds": config.seeds},
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
