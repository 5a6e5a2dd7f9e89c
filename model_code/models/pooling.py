"""A frame's visual tokens for the LM: pooling a frame's patch tokens to a few, and the fixed
code of each token's frame and slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOLINGS = ("grid", "moments")


def _ramps(n: int, pairs: int) -> torch.Tensor:
    """sin/cos at 1..pairs quarter periods over n evenly spaced steps in [0, 1]: [n, 2*pairs].
    The first pair rises and falls monotonically, so 'earlier / later' is linear in it."""
    angles = torch.pi / 2 * torch.linspace(0.0, 1.0, n)[:, None] * torch.arange(1, pairs + 1)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


def frame_slot_code(num_frames: int, slots: int, dim: int, pairs: int = 4) -> torch.Tensor:
    """A fixed [num_frames, slots, dim] code of each visual token's frame and slot within the
    frame (ramps in the first 4 * pairs dims, zero elsewhere), like a video transformer's
    space-time position embedding: the LM can tell which frame a token comes from by content,
    not only by its position in the sequence."""
    w = 2 * pairs
    code = torch.zeros(num_frames, slots, dim)
    code[..., :w] = _ramps(num_frames, pairs)[:, None, :]
    code[..., w : 2 * w] = _ramps(slots, pairs)[None, :, :]
    return code


def pool_frame_tokens(tokens: torch.Tensor, pooling: str, pooled_tokens: int) -> torch.Tensor:
    """[N, P, D] patch tokens of N frames (row-major square grid) -> [N, k, D].

    grid: average-pool to a sqrt(k) x sqrt(k) grid (k = P keeps every patch).
    moments: k = 3 tokens, the patch mean and its first moments along x and y. A static
    background adds the same to every frame, so a moving object shows as a change of the x or
    y moment over time, just as a growing one shows as a change of the mean.
    """
    n, p, d = tokens.shape
    grid = round(p**0.5)
    if pooling == "moments":
        u = torch.linspace(-1.0, 1.0, grid, device=tokens.device, dtype=tokens.dtype)
        weights = torch.stack(
            [torch.ones_like(u).repeat(grid), u.repeat(grid), u.repeat_interleave(grid)]
        )
        return torch.einsum("kp,npd->nkd", weights, tokens) / p
    if pooled_tokens == p:
        return tokens
    side = round(pooled_tokens**0.5)
    pooled = F.adaptive_avg_pool2d(tokens.transpose(1, 2).reshape(n, d, grid, grid), side)
    return pooled.flatten(2).transpose(1, 2)
