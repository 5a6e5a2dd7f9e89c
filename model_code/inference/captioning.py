"""Pseudo-captioning: stream (keys, clips) batches through a VLM, one batched generate each.

A caption step starts its decode workers first, then imports torch and loads the model, so
the first frames are ready when the model is; while the model generates, the workers decode
the next batches. The loop records how long it waited for frames.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_code.models.lineage import VideoSettings


def caption_batches(
    vlm,
    batches: Iterable[tuple[list[str], np.ndarray]],
    prompt: str | None = None,
    **generation,
) -> Iterator[tuple[str, str]]:
    """(key, caption) for every clip of every (keys, clips [B, T, H, W, 3]) batch, in order.

    Lazy: a shard is read, captioned and written batch by batch, never held whole.
    """
    for keys, clips in batches:
        if len(keys) != len(clips):
            raise ValueError(f"{len(keys)} keys for {len(clips)} clips")
        yield from zip(keys, vlm.caption(clips, prompt=prompt, **generation), strict=True)


@dataclass
class ShardCaptions:
    """The captions of one shard, its rejects, and where the time went."""

    shard: int
    captions: list[tuple[str, int, str]] = field(default_factory=list)  # (key, sample, caption)
    rejects: list[dict] = field(default_factory=list)
    wait_s: float = 0.0  # waiting for decoded frames, after the first batch
    generate_s: float = 0.0


@dataclass
class CaptionRun:
    """Filled while `caption_shards` runs: the loaded model's prompt and the run's timings."""

    prompt: str = ""
    decode_workers: int = 0
    load_s: float = 0.0
    first_batch_wait_s: float = 0.0


def caption_shards(
    checkpoint: str | Path,
    shards: Sequence[str | Path],
    frame_mode: str = "clip",
    batch_size: int = 32,
    decode_workers: int | None = None,
    device: str = "auto",
    run: CaptionRun | None = None,
    samples: int = 1,
    **generation,
) -> Iterator[ShardCaptions]:
    """Caption every usable clip of `shards` with the VLM at `checkpoint`, shard by shard, in
    tar order, `samples` captions a clip (sample 0, 1, ...: see VideoVLM.caption_samples); one
    ShardCaptions per shard (also for a shard with no usable clip).

    frame_mode "clip" shows the VLM the clip's frames; "middle" shows its middle frame as a
    still clip (the per-frame baseline: encoded once, repeated num_frames times)."""
    from model_code.data.shards import ClipStream

    if frame_mode not in ("clip", "middle"):
        raise ValueError(f"frame_mode must be 'clip' or 'middle', not {frame_mode!r}")
    run = run if run is not None else CaptionRun()
    started = time.perf_counter()
    num_frames = VideoSettings.read(checkpoint).num_frames  # before the model loads
    with ClipStream(shards, num_frames, decode_workers) as stream:  # decoding starts here
        vlm = load_captioner(checkpoint, device, num_frames)
        run.prompt, run.decode_workers = vlm.prompt, stream.workers
        run.load_s = time.perf_counter() - started
        repeats = vlm.num_frames if frame_mode == "middle" else 1
        results = [ShardCaptions(i) for i in range(len(shards))]
        done = 0
        batches = stream.batches(batch_size)
        first = True
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            waited = time.perf_counter() - t0
            if first:
                run.first_batch_wait_s, waited, first = waited, 0.0, False
            if batch is None:
                break
            shard, keys, clips = batch
            while done < shard:  # earlier shards are complete
                yield _finish(results[done], stream.rejects)
                done += 1
            if frame_mode == "middle":
                clips = middle_frame(clips)
            t1 = time.perf_counter()
            per_sample = sample_captions(vlm, clips, samples, repeats, **generation)
            results[shard].generate_s += time.perf_counter() - t1
            results[shard].wait_s += waited
            results[shard].captions += [
                (key, k, captions[i])
                for i, key in enumerate(keys)
                for k, captions in enumerate(per_sample)
            ]
        for result in results[done:]:
            yield _finish(result, stream.rejects)


def middle_frame(clips: np.ndarray) -> np.ndarray:
    """[B, T, H, W, 3] -> [B, 1, H, W, 3]: each clip's middle frame (frame T // 2), as a still
    clip of one frame: what the per-frame baseline (frame_captions) shows the image VLM."""
    middle = clips.shape[1] // 2
    return clips[:, middle : middle + 1]


def sample_captions(
    vlm, clips: np.ndarray, samples: int, repeats: int = 1, seed: int = 0, **generation
) -> list[list[str]]:
    """`samples` captions of each clip, a list per sample index: the model's own
    caption_samples (clips encoded once) or, for a captioner without it, one call per sample
    with the same seeds (seed * 1000 + k)."""
    if hasattr(vlm, "caption_samples"):
        return vlm.caption_samples(clips, samples, repeats=repeats, seed=seed, **generation)
    return [
        vlm.caption(clips, repeats=repeats, seed=seed * 1000 + k, **generation)
        for k in range(samples)
    ]


def load_captioner(checkpoint: str | Path, device: str = "auto", num_frames: int = 8):
    """The model at `checkpoint` as a captioner: a vidistill VLM, or an off-the-shelf teacher
    (model_code.models.teacher: Qwen2-VL / Qwen2.5-VL), told apart by config.json's model_type."""
    from model_code.models.teacher import QwenTeacher, is_teacher

    if is_teacher(checkpoint):
        return QwenTeacher.from_pretrained(checkpoint, device=device, num_frames=num_frames)
    from model_code.models.video_vlm import VideoVLM

    return VideoVLM.from_pretrained(checkpoint, device=device)


def _finish(result: ShardCaptions, rejects: list[dict]) -> ShardCaptions:
    result.rejects = [r for r in rejects if r["shard"] == result.shard]
    return result
