"""Device leases: which accelerator(s) a step may use, for as long as its process lives.

The `gpu` concurrency pool decides how many steps run at once; the lease decides which device
each one gets. A lease is an exclusive `flock` on one lock file per device index under a shared
folder: the kernel drops it when the process ends in any way, `kill -9` included, so a dead
step never keeps its GPU. On a machine without CUDA nothing is leased.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self


class NoFreeDevice(TimeoutError):
    """Every device was leased for longer than the step was willing to wait."""


@dataclass
class DeviceLease:
    """The device indices this process holds (empty on CPU) and their open lock files."""

    indices: list[int]
    _locks: list = field(default_factory=list, repr=False)

    @property
    def device(self) -> str:
        """Where this process should put its model: `cuda:i` for the first leased index."""
        return f"cuda:{self.indices[0]}" if self.indices else "cpu"

    def env(self) -> dict[str, str]:
        """Environment for child processes (torchrun ranks): they see only the leased devices."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, self.indices))} if self.indices else {}

    def release(self) -> None:
        for f in self._locks:
            f.close()  # closing the descriptor drops the flock
        self._locks.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def cuda_device_count() -> int:
    """The CUDA devices this process can use. Without an NVIDIA driver the answer is 0 without
    importing torch, so a CPU step starts its decode workers before torch is loaded."""
    if not Path("/proc/driver/nvidia").exists():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def lease_devices(
    lock_dir: str | Path,
    count: int = 1,
    total: int | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
) -> DeviceLease:
    """Lease `count` of the `total` devices (default: the CUDA devices this machine has),
    waiting up to `timeout_s` for them to be free; NoFreeDevice names the holders if not."""
    total = cuda_device_count() if total is None else total
    if total == 0:
        return DeviceLease([])
    if not 1 <= count <= total:
        raise ValueError(f"cannot lease {count} of {total} devices")
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        held: list[tuple[int, object]] = []
        for index in range(total):
            f = open(folder / f"device-{index}.lock", "a+")  # noqa: SIM115  held by the lease
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            held.append((index, f))
            if len(held) == count:
                return DeviceLease([i for i, _ in held], [f for _, f in held])
        for _, f in held:  # not enough free: hold none while waiting, so two steps never
            f.close()  # each hold half of what both need
        if time.monotonic() >= deadline:
            raise NoFreeDevice(
                f"no {count} free of {total} devices after {timeout_s:.0f}s; holders: "
                f"{_holders(folder, total)} (lock files in {folder})"
            )
        time.sleep(poll_s)


def _holders(folder: Path, total: int) -> str:
    out = []
    for index in range(total):
        try:
            pid = (folder / f"device-{index}.lock").read_text().strip()
        except OSError:
            pid = "?"
        out.append(f"device {index}: pid {pid or '?'}")
    return ", ".join(out)
