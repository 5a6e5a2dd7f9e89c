"""Contrastive losses for the video–text dual encoder, with features gathered across ranks.

Modelled on open_clip's loss.py. With `gather=True` every rank sees the global batch as
negatives but computes only its own rows of the similarity matrix ("local loss"); the
all-gather passes gradients back to the rank that owns each feature, so after DDP averages
the per-rank gradients they equal those of one process on the global batch — exactly, for
the encoders and for logit_scale / logit_bias alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for each slice and returns this
    rank's slice (all_reduce + slice: works on gloo as well as nccl)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(x: torch.Tensor, gather_with_grad: bool) -> torch.Tensor:
    if gather_with_grad:
        return _AllGatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def gather_features(
    video_emb: torch.Tensor, text_emb: torch.Tensor, gather_with_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's features in rank order (local batches must have equal size).

    gather_with_grad=True: gradients flow back to the owning rank (use with a local loss; exact).
    gather_with_grad=False: open_clip's default — other ranks' features are constants and
    only this rank's slot (the local tensor itself) carries gradients.
    """
    if not _distributed():
        return video_emb, text_emb
    return _gather(video_emb, gather_with_grad), _gather(text_emb, gather_with_grad)


def _global_offset(n_local: int, gather: bool) -> int:
    """Where this rank's rows sit in the gathered batch: their positives' column indices."""
    return dist.get_rank() * n_local if gather and _distributed() else 0


def contrastive_loss(
    video_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    gather: bool = False,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): mean of video→text and text→video cross-entropy, where the
    i-th video and i-th text are the positive pair. `logit_scale` is the multiplier (already
    exponentiated). Embeddings are expected L2-normalised."""
    n = video_emb.shape[0]
    all_video, all_text = gather_features(video_emb, text_emb) if gather else (video_emb, text_emb)
    labels = torch.arange(n, device=video_emb.device) + _global_offset(n, gather)
    logits_v2t = logit_scale * video_emb @ all_text.T
    logits_t2v = logit_scale * text_emb @ all_video.T
    return 0.5 * (F.cross_entropy(logits_v2t, labels) + F.cross_entropy(logits_t2v, labels))


def sigmoid_loss(
    video_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    gather: bool = False,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss: every (video, text) pair is an independent binary
    problem, positive on the diagonal; summed over pairs and divided by the batch size.
    Each rank scores its own videos against all texts, so every pair is counted once."""
    n = video_emb.shape[0]
    all_text = _gather(text_emb, gather_with_grad=True) if gather and _distributed() else text_emb
    logits = logit_scale * video_emb @ all_text.T + logit_bias
    labels = -torch.ones_like(logits)
    rows = torch.arange(n, device=logits.device)
    labels[rows, rows + _global_offset(n, gather)] = 1.0
    return -F.logsigmoid(labels * logits).sum() / n
