"""Which accelerator a step runs on: a lease per device, held for the life of the step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field

from resources.fields import NonEmpty

if TYPE_CHECKING:
    from model_code.runtime.devices import DeviceLease


class Accelerators(ConfigurableResource):
    """Device leases on this machine (model_code/runtime/devices.py): a step that runs a model takes
    one of the CUDA devices no other step holds and pins itself to it; the `gpu` pool only
    decides how many such steps run at once. Lock files live in a folder local to the machine
    (not the data root, which may be shared by several machines)."""

    lock_dir: NonEmpty = Field(
        default="/tmp/vidistill-devices",
        description="machine-local folder of the per-device lock files",
    )
    timeout_s: float = Field(
        default=3600.0, gt=0, description="how long a step waits for a free device"
    )

    @contextlib.contextmanager
    def lease(self, requested: str = "auto", count: int = 1) -> Iterator[DeviceLease]:
        """For "auto", `count` devices no other step holds (none on a machine without CUDA),
        held until the block ends; a device the user named is not leased."""
        from model_code.runtime.devices import DeviceLease, lease_devices

        if requested != "auto":
            yield DeviceLease([])
            return
        with lease_devices(self.lock_dir, count, timeout_s=self.timeout_s) as lease:
            yield lease

    @contextlib.contextmanager
    def device(self, requested: str = "auto", count: int = 1) -> Iterator[str]:
        """The device to use in this process: `requested` as given, or for "auto" a leased
        `cuda:i` (CPU on a machine without CUDA), held until the block ends."""
        with self.lease(requested, count) as lease:
            yield lease.device if requested == "auto" else requested
