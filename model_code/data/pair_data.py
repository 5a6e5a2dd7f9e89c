"""The dual encoder's training data: (frames, caption) pairs, in memory or streamed from
webdataset shards, one caption of a clip a pass, split over torchrun ranks and DataLoader
workers, resumable batch for batch (model_code.training.train_dual_encoder trains on them)."""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    get_worker_info,
)

from model_code.training.configs import DualEncoderTrainConfig


def collate_pairs(batch: Sequence[tuple]):
    """[(frames uint8 [T, H, W, 3], caption[, row id])] -> (uint8 tensor [B, T, H, W, 3],
    captions, row ids or None when the pairs came without them)."""
    frames = torch.from_numpy(np.stack([np.asarray(item[0], dtype=np.uint8) for item in batch]))
    ids = [int(item[2]) for item in batch] if batch and len(batch[0]) > 2 else None
    return frames, [str(item[1]) for item in batch], ids


class _Numbered(Dataset):
    """Map-style pairs, each with its index: a batch names the rows it holds."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str, int]:
        frames, caption = self.pairs[i]
        return frames, caption, i


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


def pair_batches(pairs, config: DualEncoderTrainConfig, rank: int, world: int, start_step: int = 0):
    """An endless stream of local batches (frames, captions, row ids: the pairs' indices for
    map-style data, None for an IterableDataset), from global step `start_step` on: a resumed run
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
        loader = DataLoader(_Numbered(pairs), sampler=sampler, **common)
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
        from model_code.data.shards import decode_members, log_reject, shard_members

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
