"""Train the video–text dual encoder on (clip, caption) pairs: one process or torchrun (DDP).

    python -m model_code.train_dual_encoder --pairs captions.parquet --shards clips/*.tar --out de/
    torchrun --nproc_per_node 2 -m model_code.train_dual_encoder --pairs ... --shards ... --out ...
    torchrun --nproc_per_node 2 -m model_code.train_dual_encoder --job job.json   # as the asset
    python -m model_code.train_dual_encoder --demo        # does the caption source matter?

Under torchrun every rank takes its slice of the data and `batch_size` stays the *global*
batch; features are gathered across ranks, so the loss and the gradients are those of one
process on the global batch (see model_code.contrastive).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import random
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    get_worker_info,
)

from model_code import corpus, video
from model_code.benchmark import zero_shot_prompts
from model_code.contrastive import contrastive_loss, sigmoid_loss
from model_code.retrieval_metrics import retrieval_metrics, zero_shot_classification
from model_code.train_configs import DualEncoderTrainConfig
from model_code.training import (
    atomic_dir,
    autocast,
    check_loss,
    check_publishable,
    cosine_with_warmup,
    global_mean,
    load_training_state,
    save_training_state,
    seed_everything,
    setup_distributed,
)

log = logging.getLogger("vidistill.dual_encoder")


# --- data ------------------------------------------------------------------------------------


def collate_pairs(batch: Sequence[tuple[np.ndarray, str]]):
    """[(frames uint8 [T, H, W, 3], caption)] -> (uint8 tensor [B, T, H, W, 3], captions)."""
    frames = torch.from_numpy(np.stack([np.asarray(f, dtype=np.uint8) for f, _ in batch]))
    return frames, [str(c) for _, c in batch]


def pick_caption(captions: Sequence[str], seed: int, visit: int, clip: int) -> str:
    """The caption a clip is shown with on its `visit`-th pass: one of its captions, drawn with
    a generator seeded by (seed, visit, clip), so a run is reproducible by seed and a clip with
    several captions is seen with each of them over the passes."""
    if len(captions) == 1:
        return captions[0]
    return captions[int(np.random.default_rng([seed, visit, clip]).integers(len(captions)))]


class ClipCaptions(Dataset):
    """(frames, caption) for each clip decoded in memory: one item a clip, its caption drawn
    afresh each pass (pick_caption; `set_epoch` is called by the trainer before each pass)."""

    def __init__(
        self, frames: Sequence[np.ndarray], captions: Sequence[Sequence[str]], seed: int = 0
    ):
        if len(frames) != len(captions) or any(len(c) == 0 for c in captions):
            raise ValueError("one non-empty caption list per clip is needed")
        self.frames, self.captions, self.seed, self.epoch = frames, captions, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        return self.frames[i], pick_caption(self.captions[i], self.seed, self.epoch, i)


def _pair_batches(
    pairs, config: DualEncoderTrainConfig, rank: int, world: int, start_step: int = 0
):
    """An endless stream of local batches, from global step `start_step` on: a resumed run
    gets exactly the batches the uninterrupted one would have. Map-style data (a Dataset or a
    list) is shuffled by a DistributedSampler even in one process, so rank r's step-s batch is
    slice r of the batch one process would draw; a resumed run skips the batches of the epoch
    already trained. An IterableDataset must split itself by rank and worker and should never
    end (as ShardPairs does: it skips the pairs already trained without decoding them); one
    that ends is started again."""
    local_batch = config.batch_size // world
    streamed = isinstance(pairs, IterableDataset)
    workers = config.num_workers if streamed else 0  # data in memory needs no decode workers
    common = {
        "batch_size": local_batch,
        "drop_last": True,
        "num_workers": workers,
        "collate_fn": collate_pairs,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    if streamed:
        if hasattr(pairs, "resume_at"):
            pairs.resume_at(start_step, local_batch)
        sampler, loader = None, DataLoader(pairs, **common)
        epoch, skip = 0, 0
    else:
        sampler = DistributedSampler(
            pairs, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
        )
        loader = DataLoader(pairs, sampler=sampler, **common)
        if len(loader) == 0:
            raise ValueError(
                f"rank {rank} got no full batch of {local_batch} pairs: fewer pairs than the batch"
            )
        epoch, skip = divmod(start_step, len(loader))
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        if hasattr(pairs, "set_epoch"):  # a new draw of each clip's caption (ClipCaptions)
            pairs.set_epoch(epoch)
        n = 0
        for batch in loader:
            n += 1
            if skip:  # resumed mid-epoch: these were trained before the interruption
                skip -= 1
                continue
            yield batch
        if n == 0:
            raise ValueError(
                f"rank {rank} got no full batch of {local_batch} pairs: fewer pairs than the batch"
            )
        epoch += 1


def _reader(rotate: int = 0) -> tuple[int, int, int]:
    """(this reader's index, number of readers, its DataLoader worker slot) over torchrun ranks
    x DataLoader workers. DataLoader takes batch i from worker i % workers; a loader started
    after `rotate` batches rotates the slots, so its batch j is the batch rotate + j the
    uninterrupted loader had."""
    worker = get_worker_info()
    workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
    slot = (worker_id + rotate) % workers
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    return rank * workers + slot, world * workers, slot


class ShardPairs(IterableDataset):
    """(frames, caption) for each captioned clip in webdataset shards, read lazily, for ever;
    a clip with several captions comes with one of them a pass (pick_caption).

    The clips are split between readers (torchrun ranks x DataLoader workers) from the shards'
    tar headers, so even one shard keeps every worker busy and no clip is decoded twice. Each
    pass a reader shuffles its share (clip order, seeded by pass and reader; no buffer of
    decoded frames to fill) and decodes clip by clip: pairs flow from the first clip on.
    Passes follow each other inside the reader, so DataLoader workers never restart and keep
    prefetching across a pass boundary; the trainer takes as many batches as it needs."""

    def __init__(
        self, shards: Sequence[str], captions: dict[str, list[str]], num_frames: int, seed: int = 0
    ):
        self.shards = [str(s) for s in shards]
        self.captions = captions
        self.num_frames = num_frames
        self.seed = seed
        self.skip_batches, self.local_batch = 0, 0

    def resume_at(self, step: int, local_batch: int) -> None:
        """Start after the first `step` batches of `local_batch` pairs (per rank): DataLoader
        takes batch i from worker i % workers, so each worker skips its share of them."""
        self.skip_batches, self.local_batch = step, local_batch

    def __iter__(self) -> Iterator[tuple[np.ndarray, str]]:
        from model_code.shards import decode_members, log_reject, shard_members

        reader, readers, slot = _reader(rotate=self.skip_batches)
        clips = [
            (path, m)
            for path in self.shards
            for m in shard_members(path, log_reject)
            if m.key in self.captions
        ]
        mine = clips[reader::readers]
        if not mine:
            raise ValueError(
                f"reader {reader} of {readers} got none of the {len(clips)} "
                "captioned clips: fewer clips than readers"
            )
        worker = get_worker_info()
        workers = worker.num_workers if worker else 1
        mine_batches = max(0, (self.skip_batches - slot + workers - 1) // workers)
        skip = mine_batches * self.local_batch  # pairs this reader yielded before the resume
        for epoch in itertools.count():
            order = list(mine)
            random.Random((self.seed * 1_000_003 + epoch) * 4099 + reader).shuffle(order)
            for path, member in order:
                if skip:  # trained before the resume: not decoded again
                    skip -= 1
                    continue
                rows, rejects = decode_members(path, [member], self.num_frames)
                for reject in rejects:
                    log_reject(reject)
                for key, frames, _ in rows:
                    yield (
                        frames,
                        pick_caption(
                            self.captions[key], self.seed, epoch, zlib.crc32(key.encode())
                        ),
                    )


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
    metrics)` is called on rank 0 every `log_every` steps. Returns the final metrics."""
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
    scheduler = cosine_with_warmup(optimizer, config.warmup_steps, config.steps)
    step = 0
    if state_path is not None and Path(state_path).exists():
        step = load_training_state(state_path, model, optimizer, scheduler)
        log.info("resumed from %s at step %d", state_path, step)
    ddp = (
        DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if world > 1
        else model
    )

    batches = _pair_batches(pairs, config, rank, world, start_step=step)
    saved_at = time.monotonic()
    start_step, window, metrics = step, [], {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    waited = 0.0  # blocked on the data path, after the first batch
    while step < config.steps:
        t_wait = time.perf_counter()
        frames, captions = next(batches)
        if step > start_step:
            waited += time.perf_counter() - t_wait
        tokens = model.tokenize(captions)
        with autocast(device):
            out = ddp(
                frames=frames.to(device, non_blocking=True),
                input_ids=tokens["input_ids"].to(device),
                attention_mask=tokens["attention_mask"].to(device),
            )
        video, text = out.video_embeds.float(), out.text_embeds.float()
        if config.loss == "sigmoid":
            loss = sigmoid_loss(video, text, out.logit_scale, out.logit_bias, gather=world > 1)
        else:
            loss = contrastive_loss(video, text, out.logit_scale, gather=world > 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip) if config.grad_clip else None
        )
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))  # CLIP's cap on the temperature
        step += 1
        window.append(check_loss(loss.item(), step))

        last = step == config.steps
        if step % config.log_every == 0 or last:
            wall = time.perf_counter() - t0
            metrics = {
                "loss": global_mean(float(np.mean(window)), world, device),
                "lr": scheduler.get_last_lr()[0],
                "logit_scale": model.logit_scale.detach().exp().item(),
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "clips_per_s": (step - start_step) * config.batch_size / max(wall, 1e-9),
                "data_wait_share": waited / max(wall, 1e-9),
            }
            window = []
            if on_metrics is not None and rank == 0:
                on_metrics(step, metrics)
        if (
            state_path is not None
            and rank == 0
            and (
                last
                or step % config.checkpoint_every == 0
                or time.monotonic() - saved_at >= config.checkpoint_every_s
            )
        ):
            save_training_state(state_path, model, optimizer, scheduler, step)
            saved_at = time.monotonic()

    model.logit_bias.requires_grad_(True)
    wall = time.perf_counter() - t0
    return {
        "loss": metrics.get("loss", float("nan")),
        "steps": step,
        "steps_run": step - start_step,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,  # all threads; on idle cores wall ~ cpu_s / cores
        "clips_per_s": (step - start_step) * config.batch_size / max(wall, 1e-9),
        "data_wait_share": waited / max(wall, 1e-9),  # of the wall time: should stay near 0
        "logit_scale": model.logit_scale.detach().exp().item(),
        "world_size": world,
    }


# --- the program: train from shards -----------------------------------------------------------


def read_pairs(path: str | Path):
    """The pairs table (parquet: key, caption, and optionally version), in file order."""
    import pandas as pd

    frame = pd.read_parquet(path).dropna(subset=["key", "caption"])
    frame["key"], frame["caption"] = frame["key"].astype(str), frame["caption"].astype(str)
    return frame.reset_index(drop=True)


def _digest(pairs, config: DualEncoderTrainConfig) -> str:
    """What the training state is keyed by: a rerun on other captions or settings starts afresh."""
    import hashlib

    import pandas as pd

    return hashlib.sha256(
        pd.util.hash_pandas_object(pairs[["key", "caption"]]).values.tobytes()
        + repr(asdict(config)).encode()
    ).hexdigest()[:12]


def train(job: dict, report=None) -> dict:
    """The dual-encoder program (DESIGN.md step 3): a job's pairs and shards in, a checkpoint
    folder with lineage.json out (rank 0, atomically). The asset, the CLI and torchrun all run
    this. Job keys: config (DualEncoderTrainConfig fields), pairs (parquet: key, caption),
    shards (webdataset tars), out (folder), state (training-state path prefix, optional),
    extra_texts (for the vocabulary: class prompts, queries), parents and data (for lineage)."""
    from model_code import shards as shard_io
    from model_code.dual_encoder import build_dual_encoder
    from model_code.lineage import write_lineage
    from model_code.train_configs import from_dict
    from model_code.trainer import Reporter

    report = report or Reporter()
    config = from_dict(DualEncoderTrainConfig, job.get("config", {}))
    pairs = read_pairs(job["pairs"])
    if pairs.empty:
        raise ValueError(f"{job['pairs']} holds no (key, caption) pairs")
    seed_everything(config.seed)  # initial weights from the seed, not from what ran before
    model = build_dual_encoder(
        pairs["caption"].tolist() + list(job.get("extra_texts", [])),
        num_frames=config.num_frames,
        image_size=config.image_size,
        patch_size=config.patch_size,
        loss=config.loss,
        vision_path=config.vision_path,
        text_path=config.text_path,
    )
    shard_paths = [str(s) for s in job["shards"]]
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
    state = Path(f"{job['state']}-{_digest(pairs, config)}.pt") if job.get("state") else None
    metrics = train_dual_encoder(
        model, dataset, config, on_metrics=report.metrics, state_path=state
    )
    if report.rank == 0:
        check_publishable(model, metrics["steps"])
        with atomic_dir(job["out"]) as tmp:
            model.save_pretrained(tmp)
            lineage = write_lineage(
                tmp,
                kind="dual_encoder",
                parents=job.get("parents", {}),
                training_config=asdict(config),
                metrics=metrics,
                data={
                    **job.get("data", {}),
                    "pairs": len(pairs),
                    "clips": int(pairs["key"].nunique()),
                },
                mlflow_run_id=report.mlflow_run_id,
            )
            report.plot_curves(tmp, f"dual_encoder {job.get('data', {}).get('source', '')}")
        if state is not None:
            state.unlink(missing_ok=True)
        report.checkpoint(job["out"], lineage, {"pairs": len(pairs)})
    return metrics


# --- the demo: does the caption source matter? ---------------------------------------------------

DEMO_TRAIN = DualEncoderTrainConfig(log_every=50)  # the defaults are the tuned demo settings
DEMO_SOURCES = ("alt_text", "still_caption", "ground_truth")


def render_split(split: str, n: int, num_frames: int = 8, seed: int = 0):
    """Clips of the embedded corpus, straight from model_code.corpus (no shards): (specs,
    uint8 [n, num_frames, H, W, 3]) with frames sampled evenly."""
    cfg = corpus.CorpusConfig(seed=seed)
    specs = corpus.split_specs(split, cfg, 0, n)
    idx = video.sample_indices(cfg.frames, num_frames)  # 8 of 16: [0, 2, 4, 6, 9, 11, 13, 15]
    return specs, np.stack([corpus.render_clip(s)[idx] for s in specs])


def caption_for(source: str, spec) -> str:
    return {
        "alt_text": corpus.alt_text,
        "still_caption": corpus.still_caption,
        "ground_truth": corpus.ground_truth_caption,
    }[source](spec)


def evaluate_on_corpus_benchmark(model, specs, clips: np.ndarray) -> dict[str, float]:
    """Text→video / video→text retrieval with ground-truth captions as queries, and zero-shot
    motion and shape classification of the one-object clips."""
    from model_code.dual_encoder import embed_classes, embed_texts, embed_videos

    video = embed_videos(model, clips)
    text = embed_texts(model, [caption_for("ground_truth", s) for s in specs])
    scores = retrieval_metrics(text @ video.T, list(range(len(specs))))
    single = [i for i, s in enumerate(specs) if len(s.objects) == 1]
    for task, (names, prompts) in zero_shot_prompts().items():
        attribute = "motion" if task == "motion" else "shape"
        labels = [names.index(getattr(specs[i].objects[0], attribute)) for i in single]
        zs = zero_shot_classification(video[single], embed_classes(model, prompts), labels)
        scores[f"zs_{task}_top1"], scores[f"zs_{task}_top5"] = zs["top1"], zs["top5"]
    return scores


def run_demo(
    seeds: Sequence[int] = (0,),
    sources: Sequence[str] = DEMO_SOURCES,
    n_train: int = 1200,
    n_eval: int = 200,
    train: DualEncoderTrainConfig = DEMO_TRAIN,
    sizes: dict | None = None,
    num_frames: int = 8,
) -> list[dict]:
    """Train one dual encoder per caption source on the corpus split, score each on the
    benchmark split. The paper's claim in miniature: captions that say what happens in the
    video (ground truth here, pseudo-captions in the pipeline) beat alt-text and still captions."""
    from model_code.dual_encoder import build_dual_encoder

    t = time.perf_counter()
    train_specs, train_clips = render_split("corpus", n_train, num_frames)
    eval_specs, eval_clips = render_split("benchmark", n_eval, num_frames)
    print(f"rendered {n_train}+{n_eval} clips in {time.perf_counter() - t:.1f}s", flush=True)
    eval_words = [caption_for("ground_truth", s) for s in eval_specs]
    eval_words += [
        p for _, prompts in zero_shot_prompts().values() for group in prompts for p in group
    ]
    rows = []
    for seed in seeds:
        for source in sources:
            captions = [caption_for(source, s) for s in train_specs]
            seed_everything(seed)
            model = build_dual_encoder(
                captions + eval_words, num_frames=num_frames, **(sizes or {})
            )
            pairs = list(zip(train_clips, captions, strict=True))
            result = train_dual_encoder(model, pairs, replace(train, seed=seed))
            scores = evaluate_on_corpus_benchmark(model, eval_specs, eval_clips)
            row = {
                "source": source,
                "seed": seed,
                "train_wall_s": result["wall_s"],
                "train_cpu_s": result["cpu_s"],
                "final_loss": result["loss"],
                **scores,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def format_demo_table(rows: list[dict]) -> str:
    cols = (
        "t2v_R1",
        "t2v_R5",
        "t2v_R10",
        "t2v_MedR",
        "v2t_R1",
        "zs_motion_top1",
        "zs_shape_top1",
        "train_wall_s",
        "train_cpu_s",
    )
    lines = ["| source | seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['seed']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from model_code import train_configs
    from model_code.trainer import quiet_libraries, read_job, run_job

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo", action="store_true", help="caption-source ablation on the embedded corpus"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sources", nargs="+", default=list(DEMO_SOURCES))
    parser.add_argument("--demo-json", type=Path, help="write the demo rows here")
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
    if args.demo:
        rows = run_demo(seeds=args.seeds, sources=args.sources)
        print(format_demo_table(rows))
        if args.demo_json:
            args.demo_json.write_text(json.dumps(rows, indent=2))
        return 0
    if args.job:
        job = read_job(args.job)
    elif args.pairs and args.shards and args.out:
        config = train_configs.from_args(DualEncoderTrainConfig, args)
        job = {
            "config": asdict(config),
            "pairs": str(args.pairs),
            "shards": args.shards,
            "out": str(args.out),
            "state": str(args.state) if args.state else None,
            "extra_texts": args.vocab_extra.read_text().splitlines() if args.vocab_extra else [],
            "parents": {"pairs": str(args.pairs)},
        }
    else:
        parser.error("--job, or --pairs, --shards and --out, are required (or --demo)")
    return run_job(train, job)


if __name__ == "__main__":
    sys.exit(main())
