"""Which accelerator a step runs on: a lease per device, held for the life of the step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dagster import ConfigurableResource
from pydantic import Field


class Accelerators(ConfigurableResource):
    """Device leases on this machine (model_code/devices.py): a step that runs a model takes
    one of the CUDA devices no other step holds and pins itself to it; the `gpu` pool only
    decides how many such steps run at once. Lock files live in a folder local to the machine
    (not the data root, which may be shared by several machines)."""

    lock_dir: str = Field(default="/tmp/vidistill-devices",
                          description="machine-local folder of the per-device lock files")
    timeout_s: float = Field(default=3600.0, gt=0,
                             description="how long a step waits for a free device")

    @contextlib.contextmanager
    def device(self, requested: str = "auto", count: int = 1) -> Iterator[str]:
        """The device to use: `requested` as given, or for "auto" a leased `cuda:i` (CPU on a
        machine without CUDA), held until the block ends."""
        if requested != "auto":
            yield requested
            return
        from model_code.devices import lease_devices

        with lease_devices(self.lock_dir, count, timeout_s=self.timeout_s) as lease:
            yield lease.device
