"""Retrieval and zero-shot classification metrics (MSR-VTT protocol), on plain numpy arrays.

Ranks are 1-based. Ties are counted *pessimistically*: an item that scores exactly as high as
the correct one is ranked above it. A collapsed model whose embeddings are all equal then
gets the worst rank, not a perfect one, so ties can never inflate a score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _summary(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_R1": float(100.0 * np.mean(ranks <= 1)),
        f"{prefix}_R5": float(100.0 * np.mean(ranks <= 5)),
        f"{prefix}_R10": float(100.0 * np.mean(ranks <= 10)),
        f"{prefix}_MedR": float(np.median(ranks)),
        f"{prefix}_MeanR": float(np.mean(ranks)),
    }


def text_to_video_ranks(sim: np.ndarray, text_video: Sequence[int]) -> np.ndarray:
    """Rank of each text's own video among all videos: 1 + other videos scoring >= it."""
    sim = np.asarray(sim, dtype=np.float64)
    idx = np.asarray(text_video)
    own = sim[np.arange(len(idx)), idx]
    return (sim >= own[:, None]).sum(axis=1)  # counts the own video once: that is the +1


def video_to_text_ranks(sim: np.ndarray, text_video: Sequence[int]) -> np.ndarray:
    """For each video that has captions, the rank of its best-ranked caption among all texts:
    1 + other videos' captions scoring >= it (its own other captions never count against it)."""
    sim = np.asarray(sim, dtype=np.float64)
    idx = np.asarray(text_video)
    ranks = []
    for v in np.unique(idx):
        mine = idx == v
        best = sim[mine, v].max()
        ranks.append(1 + int((sim[~mine, v] >= best).sum()))
    return np.asarray(ranks)


def retrieval_metrics(sim: np.ndarray, text_video: Sequence[int]) -> dict[str, float]:
    """t2v_/v2t_ R1, R5, R10 (percent), MedR, MeanR from a [n_texts, n_videos] similarity
    matrix and the video index of each text. Videos without a caption are left out of v2t."""
    sim = np.asarray(sim)
    idx = np.asarray(text_video)
    if sim.ndim != 2 or idx.shape != (sim.shape[0],):
        raise ValueError(f"sim {sim.shape} needs one video index per text row, got {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= sim.shape[1]):
        raise ValueError("text_video holds an index outside the videos")
    return {
        **_summary(text_to_video_ranks(sim, idx), "t2v"),
        **_summary(video_to_text_ranks(sim, idx), "v2t"),
    }


def zero_shot_classification(
    video_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of classifying each video as its nearest class
    embedding (dot product; pass L2-normalised embeddings for cosine). Ties pessimistic."""
    scores = np.asarray(video_emb, dtype=np.float64) @ np.asarray(class_emb, dtype=np.float64).T
    labels = np.asarray(labels)
    own = scores[np.arange(len(labels)), labels]
    ranks = (scores >= own[:, None]).sum(axis=1)
    return {
        "top1": float(100.0 * np.mean(ranks <= 1)),
        "top5": float(100.0 * np.mean(ranks <= 5)),
        "n": len(labels),
    }
