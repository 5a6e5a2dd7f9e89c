"""Pieces the training loop (model_code.loop) and the programs share: device choice, autocast,
seeding, the LR schedule, and resumable training state written atomically."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np


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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
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


def umask() -> int:
    """This process's umask (read without changing it where Linux says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_modes(folder: Path) -> None:
    """Files and folders as a plain write would have made them (0666 / 0777 less the umask):
    temp files and folders are private, and some writers (safetensors) keep that mode."""
    mask = umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())
_OWNER = f"{_HOST}.{os.getpid()}"  # in every staging name: whose leftover it is


def remove_dead_leftovers(final: str | Path) -> list[Path]:
    """Remove the staging files and folders of `final` that a killed writer left behind: those
    of this host whose process is gone (a writer on another host, or one still alive, is left
    alone). Returns what was removed. Without this every crash mid-publish leaves a copy."""
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(?:tmp|old)-{re.escape(_HOST)}\.(\d+)-")
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.
    Readers see the old folder or the new one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{_OWNER}-"))
    try:
        yield tmp
        publish_modes(tmp)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{_OWNER}-"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a binary file object on a temporary sibling of `path`; on success it is synced
    and replaces `path` in one rename, with the mode a plain write would give it. Readers see
    the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{_OWNER}-")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it private; a plain write would not
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)
