"""Train the video–text dual encoder on (clip, caption) pairs: one process or torchrun (DDP).

    python -m model_code.training.train_dual_encoder --pairs p.parquet --shards c/*.tar --out de/
    torchrun --nproc_per_node 2 -m model_code.training.train_dual_encoder --pairs ... (as above)
    torchrun --nproc_per_node 2 -m model_code.training.train_dual_encoder --job job.json  # asset

Under torchrun every rank takes its slice of the data and `batch_size` stays the *global*
batch; features are gathered across ranks, so the loss and the gradients are those of one
process on the global batch (see model_code.training.contrastive). The data side (pairs in memory or
streamed from shards, one caption of a clip a pass) is model_code.data.pair_data;
benchmarks/caption_sources.py is the quick caption-source ablation without Dagster.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from model_code.data.pair_data import ClipCaptions, ShardPairs, pair_batches
from model_code.training.common import (
    autocast,
    seed_everything,
    setup_distributed,
    state_file,
)
from model_code.training.configs import DualEncoderTrainConfig
from model_code.training.contrastive import contrastive_loss, sigmoid_loss
from model_code.training.job import DualEncoderJob, publish
from model_code.training.loop import Task, fit

log = logging.getLogger("vidistill.dual_encoder")


# --- training --------------------------------------------------------------------------------


def train_dual_encoder(
    model,
    pairs,
    config: DualEncoderTrainConfig,
    on_metrics: Callable[[int, dict], None] | None = None,
    state_path: str | Path | None = None,
) -> dict:
    """Contrastive training of `model` (a DualEncoder, trained in place) on (frames, caption)
    pairs: AdamW, warm-up + cosine LR, gradient clipping, bf16 autocast on CUDA, resumable
    training state at `state_path` (atomic; resumes from it when it exists). `on_metrics(step,
    metrics)` is called on rank 0 every `log_every` steps. Each rank logs the row ids of the first
    step it runs (its share of the global batch). Returns the final metrics, among them where
    the run started (`resumed_from_step`: the saved state's step, 0 for a fresh run), the steps
    it ran and the pairs a rank trains a step (`local_batch`)."""
    if config.loss not in ("infonce", "sigmoid"):
        raise ValueError(f"loss must be 'infonce' or 'sigmoid', not {config.loss!r}")
    rank, world, device = setup_distributed(config.device)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} ranks")
    seed_everything(config.seed)
    model.to(device).train()
    model.config.loss = config.loss
    model.logit_bias.requires_grad_(config.loss == "sigmoid")  # InfoNCE has no bias

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def batches(start: int):
        for frames, captions, ids in pair_batches(pairs, config, rank, world, start_step=start):
            yield (frames, captions), ids

    def loss(module: torch.nn.Module, batch) -> torch.Tensor:
        frames, captions = batch
        tokens = model.tokenize(captions)
        with autocast(device):
            out = module(
                frames=frames.to(device, non_blocking=True),
                input_ids=tokens["input_ids"].to(device),
                attention_mask=tokens["attention_mask"].to(device),
            )
        video, text = out.video_embeds.float(), out.text_embeds.float()
        if config.loss == "sigmoid":
            return sigmoid_loss(video, text, out.logit_scale, out.logit_bias, gather=world > 1)
        return contrastive_loss(video, text, out.logit_scale, gather=world > 1)

    def clamp_temperature() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))  # CLIP's cap on the temperature

    task = Task(
        model=model,
        module=model,
        loss=loss,
        batches=batches,
        params=params,
        after_step=clamp_temperature,
        report=lambda: {"logit_scale": model.logit_scale.detach().exp().item()},
    )
    metrics = fit(
        task, optimizer, config, rank, world, device, on_metrics, state_path, keep_final_state=True
    )
    model.logit_bias.requires_grad_(True)
    return metrics


# --- the program: train from shards -----------------------------------------------------------


def read_pairs(path: str | Path):
    """The pairs table (parquet: key, caption, and optionally version), in file order."""
    import pandas as pd

    frame = pd.read_parquet(path).dropna(subset=["key", "caption"])
    frame["key"], frame["caption"] = frame["key"].astype(str), frame["caption"].astype(str)
    return frame.reset_index(drop=True)


def train(job: dict | DualEncoderJob, report=None) -> dict:
    """The dual-encoder program (docs/design.md, step 3): a job's pairs and shards in, a checkpoint
    folder with lineage.json out (rank 0, atomically). The asset, the CLI and torchrun all run
    this; the job is a DualEncoderJob (or its JSON object)."""
    import pandas as pd

    from model_code.data import shards as shard_io
    from model_code.models.dual_encoder import build_dual_encoder
    from model_code.training.configs import from_dict
    from model_code.training.job import Reporter

    job = job if isinstance(job, DualEncoderJob) else DualEncoderJob.from_json(job)
    report = report or Reporter()
    config = from_dict(DualEncoderTrainConfig, job.config)
    pairs = read_pairs(job.pairs)
    if pairs.empty:
        raise ValueError(f"{job.pairs} holds no (key, caption) pairs")
    seed_everything(config.seed)  # initial weights from the seed, not from what ran before
    model = build_dual_encoder(
        pairs["caption"].tolist() + list(job.extra_texts),
        num_frames=config.num_frames,
        image_size=config.image_size,
        patch_size=config.patch_size,
        loss=config.loss,
        vision_path=config.vision_path,
        text_path=config.text_path,
    )
    shard_paths = job.shards
    captions = pairs.groupby("key", sort=False)["caption"].apply(list).to_dict()
    if len(captions) <= config.in_memory_clips:  # decode once, train many passes from memory
        frames = shard_io.frames_by_key(shard_paths, num_frames=model.config.num_frames)
        pairs = pairs[pairs["key"].isin(frames)]
        keys = [k for k in captions if k in frames]
        dataset = ClipCaptions(
            [frames[k] for k in keys], [captions[k] for k in keys], seed=config.seed
        )
    else:  # stream from the shards, split across DataLoader workers and torchrun ranks
        dataset = ShardPairs(shard_paths, captions, model.config.num_frames, seed=config.seed)
    state = state_file(
        job.state,
        pd.util.hash_pandas_object(pairs[["key", "caption"]]).values.tobytes(),
        repr(asdict(config)).encode(),
    )
    metrics = train_dual_encoder(
        model, dataset, config, on_metrics=report.metrics, state_path=state
    )
    if report.rank == 0:
        publish(
            job.out,
            model=model,
            save=model.save_pretrained,
            report=report,
            kind="dual_encoder",
            parents=job.parents,
            config=config,
            data={**job.data, "pairs": len(pairs), "clips": int(pairs["key"].nunique())},
            metrics=metrics,
            extra={"pairs": len(pairs)},
            title=f"dual_encoder {job.data.get('source', '')}",
        )
        if state is not None:
            state.unlink(missing_ok=True)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    from model_code.training import configs as train_configs
    from model_code.training.job import quiet_libraries, read_job, run_job

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--job", type=Path, help="a job file (what the asset launches); overrides the flags below"
    )
    parser.add_argument("--pairs", type=Path, help="parquet with columns key, caption")
    parser.add_argument("--shards", nargs="+", default=[], help="webdataset clip shards (.tar)")
    parser.add_argument("--out", type=Path, help="output checkpoint folder")
    parser.add_argument(
        "--state", type=Path, help="training-state path prefix to checkpoint to / resume from"
    )
    parser.add_argument(
        "--vocab-extra", type=Path, help="more texts for the vocabulary, one a line"
    )
    train_configs.add_arguments(parser, DualEncoderTrainConfig)
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.job:
        job = read_job(args.job)
    elif args.pairs and args.shards and args.out:
        config = train_configs.from_args(DualEncoderTrainConfig, args)
        job = DualEncoderJob(
            config=asdict(config),
            pairs=str(args.pairs),
            shards=args.shards,
            out=str(args.out),
            state=str(args.state) if args.state else None,
            extra_texts=args.vocab_extra.read_text().splitlines() if args.vocab_extra else [],
            parents={"pairs": str(args.pairs)},
        ).to_json()
    else:
        parser.error("--job, or --pairs, --shards and --out, are required")
    return run_job(train, job)


if __name__ == "__main__":
    sys.exit(main())
