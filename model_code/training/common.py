"""Pieces the training loop (model_code.training.loop) and the programs share: device choice,
autocast,
seeding, the LR schedule, and resumable training state written atomically."""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np

from model_code.runtime import settings


def pick_device(requested: str = "auto"):
    """'auto' means CUDA when present, else CPU."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def setup_distributed(requested: str = "auto"):
    """(rank, world size, device). Joins the torchrun process group when WORLD_SIZE > 1:
    nccl with one GPU per local rank, gloo on CPU. One process: (0, 1, pick_device(...))."""
    import torch
    import torch.distributed as dist

    device = pick_device(requested)
    world = int(settings.WORLD_SIZE.get())
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(settings.LOCAL_RANK.get()))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def global_mean(value: float, world: int, device) -> float:
    """The mean of `value` over the ranks (itself in one process)."""
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world


def check_loss(value: float, step: int) -> float:
    """`value` if finite; else the training has diverged and must stop before it publishes."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"the loss is {value} at step {step}: training diverged, nothing is published and "
            "the last checkpoint stays as it was (try a lower lr or check the data)"
        )
    return value


def check_publishable(model, steps: int) -> None:
    """Refuse to publish weights no optimizer step made, or any non-finite weight."""
    import torch

    if steps < 1:
        raise ValueError(f"no optimizer step was taken (steps={steps}): nothing to publish")
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise FloatingPointError(
                f"parameter {name} holds non-finite values: nothing is published"
            )


def autocast(device):
    """bf16 autocast on CUDA; full precision on CPU (bf16 matmuls on 2 cores are slower, not
    faster)."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up to the base LR, then cosine decay to 10% of it."""
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def state_file(prefix: str | Path | None, *keyed_by: bytes) -> Path | None:
    """<prefix>-<key>.pt, the resumable state of exactly this training: the key hashes what it
    trains on and with (`keyed_by`: its settings, its inputs), so a rerun of the same training
    resumes and one with other settings or inputs starts afresh. None without a prefix (no
    saves). Every trainer keys its state here."""
    import hashlib

    if not prefix:
        return None
    digest = hashlib.sha256()
    for part in keyed_by:
        digest.update(hashlib.sha256(part).digest())
    return Path(f"{prefix}-{digest.hexdigest()[:12]}.pt")


def save_training_state(path: str | Path, model, optimizer, scheduler, step: int) -> None:
    """Model weights, optimizer, schedule and step, as one file swapped in atomically:
    a run killed mid-save leaves the previous state intact."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng_torch": torch.get_rng_state(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: str | Path, model, optimizer, scheduler) -> int:
    """Restore a state written by save_training_state; returns the step to continue from."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_torch"])
    return int(state["step"])
