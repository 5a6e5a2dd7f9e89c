"""Pseudo-captioning: stream (keys, clips) batches through a VLM, one batched generate each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from model_code.vlm import VideoVLM


def caption_batches(
    vlm: VideoVLM,
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
