"""Train the video–text dual encoder on (clip, caption) pairs: one process or torchrun (DDP).

    python -m model_code.train_dual_encoder --pairs captions.parquet --shards clips/*.tar --out de/
    torchrun --nproc_per_node 2 -m model_code.train_dual_encoder --pairs ... --shards ... --out ...
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
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, get_worker_info

from model_code import corpus, video
from model_code.benchmark import zero_shot_prompts
from model_code.contrastive import contrastive_loss, sigmoid_loss
from model_code.retrieval_metrics import retrieval_metrics, zero_shot_classification
from model_code.training import (
    atomic_dir,
    autocast,
    cosine_with_warmup,
    load_training_state,
    pick_device,
    save_training_state,
    seed_everything,
)

log = logging.getLogger("vidistill.dual_encoder")


@dataclass
class DualEncoderTrainConfig:
    steps: int = 300
    batch_size: int = 128  # global: split evenly across ranks; bigger means more negatives
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    loss: str = "infonce"  # or "sigmoid" (SigLIP)
    num_workers: int = 0
    checkpoint_every: int = 0  # steps between training-state saves (0: only at the end)
    log_every: int = 10


# --- distributed -----------------------------------------------------------------------------


def _setup_distributed(requested_device: str):
    """(rank, world size, device). Joins the torchrun process group when WORLD_SIZE > 1:
    nccl with one GPU per local rank, gloo on CPU."""
    device = pick_device(requested_device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _global_mean(value: float, world: int, device) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world


# --- data ------------------------------------------------------------------------------------


def collate_pairs(batch: Sequence[tuple[np.ndarray, str]]):
    """[(frames uint8 [T, H, W, 3], caption)] -> (uint8 tensor [B, T, H, W, 3], captions)."""
    frames = torch.from_numpy(np.stack([np.asarray(f, dtype=np.uint8) for f, _ in batch]))
    return frames, [str(c) for _, c in batch]


def _pair_batches(pairs, config: DualEncoderTrainConfig, rank: int, world: int, epoch: int):
    """An endless stream of local batches. Map-style data (a Dataset or a list) is shuffled by a
    DistributedSampler even in one process, so rank r's step-s batch is slice r of the batch
    one process would draw. An IterableDataset must split itself by rank and worker and should
    never end (as ShardPairs does); one that ends is started again."""
    local_batch = config.batch_size // world
    common = {
        "batch_size": local_batch,
        "drop_last": True,
        "num_workers": config.num_workers,
        "collate_fn": collate_pairs,
        "persistent_workers": config.num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    if isinstance(pairs, IterableDataset):
        sampler, loader = None, DataLoader(pairs, **common)
    else:
        sampler = DistributedSampler(
            pairs, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
        )
        loader = DataLoader(pairs, sampler=sampler, **common)
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise ValueError(
                f"rank {rank} got no full batch of {local_batch} pairs: fewer pairs than the batch"
            )
        epoch += 1


def _reader() -> tuple[int, int]:
    """(this reader's index, number of readers) over torchrun ranks x DataLoader workers."""
    worker = get_worker_info()
    workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    return rank * workers + worker_id, world * workers


class ShardPairs(IterableDataset):
    """(frames, caption) for each captioned clip in webdataset shards, read lazily, for ever.

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

    def __iter__(self) -> Iterator[tuple[np.ndarray, str]]:
        from model_code.shards import decode_members, log_reject, shard_members

        reader, readers = _reader()
        clips = [(path, m) for path in self.shards for m in shard_members(path, log_reject)
                 if m.key in self.captions]
        mine = clips[reader::readers]
        if not mine:
            raise ValueError(f"reader {reader} of {readers} got none of the {len(clips)} "
                             "captioned clips: fewer clips than readers")
        for epoch in itertools.count():
            order = list(mine)
            random.Random((self.seed * 1_000_003 + epoch) * 4099 + reader).shuffle(order)
            for path, member in order:
                rows, rejects = decode_members(path, [member], self.num_frames)
                for reject in rejects:
                    log_reject(reject)
                for key, frames, _ in rows:
                    for caption in self.captions[key]:
                        yield frames, caption


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
    rank, world, device = _setup_distributed(config.device)
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

    batches_per_epoch = max(1, len(pairs) // config.batch_size) if hasattr(pairs, "__len__") else 1
    batches = _pair_batches(pairs, config, rank, world, epoch=step // batches_per_epoch)
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
        window.append(loss.item())

        last = step == config.steps
        if step % config.log_every == 0 or last:
            wall = time.perf_counter() - t0
            metrics = {
                "loss": _global_mean(float(np.mean(window)), world, device),
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
            and (last or (config.checkpoint_every and step % config.checkpoint_every == 0))
        ):
            save_training_state(state_path, model, optimizer, scheduler, step)

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


# --- CLI: train from shards --------------------------------------------------------------------


def read_pairs(path: str | Path) -> dict[str, list[str]]:
    """key -> captions, from a parquet with columns key, caption (one row per pair)."""
    import pandas as pd

    frame = pd.read_parquet(path, columns=["key", "caption"]).dropna()
    captions: dict[str, list[str]] = {}
    for key, caption in zip(frame["key"].astype(str), frame["caption"].astype(str), strict=True):
        captions.setdefault(key, []).append(caption)
    return captions


def _print_metrics(step: int, metrics: dict) -> None:
    print(json.dumps({"step": step, **metrics}), flush=True)


def train_from_shards(args: argparse.Namespace) -> dict:
    from model_code.dual_encoder import build_dual_encoder
    from model_code.lineage import write_lineage

    captions = read_pairs(args.pairs)
    texts = [c for cs in captions.values() for c in cs]
    if args.vocab_extra:
        texts += Path(args.vocab_extra).read_text().splitlines()
    config = DualEncoderTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        device=args.device,
        loss=args.loss,
        num_workers=args.num_workers,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
    )
    seed_everything(config.seed)
    model = build_dual_encoder(
        texts,
        num_frames=args.num_frames,
        image_size=args.image_size,
        patch_size=args.patch_size,
        loss=args.loss,
        vision_path=args.vision_path,
        text_path=args.text_path,
    )
    pairs = ShardPairs(args.shards, captions, args.num_frames, seed=args.seed)
    metrics = train_dual_encoder(
        model, pairs, config, on_metrics=_print_metrics, state_path=args.state
    )
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        with atomic_dir(args.out) as tmp:
            model.save_pretrained(tmp)
            write_lineage(
                tmp,
                kind="dual_encoder",
                training=asdict(config),
                metrics=metrics,
                data={
                    "pairs": str(args.pairs),
                    "shards": [str(s) for s in args.shards],
                    "n_pairs": len(texts),
                    "n_clips": len(captions),
                },
            )
        print(json.dumps({"final": metrics, "out": str(args.out)}), flush=True)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo", action="store_true", help="caption-source ablation on the embedded corpus"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sources", nargs="+", default=list(DEMO_SOURCES))
    parser.add_argument("--demo-json", type=Path, help="write the demo rows here")
    parser.add_argument("--pairs", type=Path, help="parquet with columns key, caption")
    parser.add_argument("--shards", nargs="+", default=[], help="webdataset clip shards (.tar)")
    parser.add_argument("--out", type=Path, help="output checkpoint folder")
    parser.add_argument(
        "--state", type=Path, help="training-state file to checkpoint to / resume from"
    )
    parser.add_argument(
        "--vocab-extra", type=Path, help="more texts for the vocabulary, one a line"
    )
    parser.add_argument(
        "--vision-path", type=Path, help="local CLIP/SigLIP checkpoint for the frames"
    )
    parser.add_argument("--text-path", type=Path, help="local CLIP/SigLIP checkpoint for the text")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=16)
    d = DualEncoderTrainConfig()
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--loss", choices=("infonce", "sigmoid"), default=d.loss)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=d.log_every)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.demo:
        rows = run_demo(seeds=args.seeds, sources=args.sources)
        print(format_demo_table(rows))
        if args.demo_json:
            args.demo_json.write_text(json.dumps(rows, indent=2))
        return 0
    if not (args.pairs and args.shards and args.out):
        parser.error("--pairs, --shards and --out are required (or --demo)")
    train_from_shards(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
