import os
import signal
import subprocess
import sys

import pytest

from model_code.runtime.devices import NoFreeDevice, lease_devices

HOLD = """
import sys, time
from model_code.runtime.devices import lease_devices
lease = lease_devices(sys.argv[1], count=int(sys.argv[2]), total=2, timeout_s=float(sys.argv[3]))
print(lease.device, lease.env().get("CUDA_VISIBLE_DEVICES"), flush=True)
time.sleep(600)
"""


def _holder(lock_dir, count: int = 1, timeout_s: float = 30) -> tuple[subprocess.Popen, str]:
    """A process that leases `count` of 2 simulated devices and holds them; its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_dir), str(count), str(timeout_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    return proc, proc.stdout.readline().strip()


def test_concurrent_steps_lease_different_devices_and_a_killed_one_frees_its_own(tmp_path):
    first, a = _holder(tmp_path)
    second, b = _holder(tmp_path)
    try:
        assert {a, b} == {"cuda:0 0", "cuda:1 1"}
        with pytest.raises(NoFreeDevice, match="no 1 free of 2 devices") as refused:
            lease_devices(tmp_path, total=2, timeout_s=0.5, poll_s=0.1)
        assert str(first.pid) in str(refused.value) and str(second.pid) in str(refused.value)
        first.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
        first.wait()
        with lease_devices(tmp_path, total=2, timeout_s=5, poll_s=0.1) as lease:
            assert lease.device == a.split()[0]
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_a_multi_device_lease_takes_all_or_waits(tmp_path):
    holder, line = _holder(tmp_path, count=1)
    try:
        with pytest.raises(NoFreeDevice):
            lease_devices(tmp_path, count=2, total=2, timeout_s=0.3, poll_s=0.1)
        # while waiting it held nothing, so the free device stayed free for others
        with lease_devices(tmp_path, count=1, total=2, timeout_s=1) as one:
            assert one.indices == [1 - int(line.split()[1])]
    finally:
        holder.kill()
        holder.wait()
    with lease_devices(tmp_path, count=2, total=2, timeout_s=5) as both:
        assert both.indices == [0, 1] and both.env() == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_cpu_only_machines_lease_nothing(tmp_path):
    with lease_devices(tmp_path / "locks", total=0) as lease:
        assert lease.indices == [] and lease.device == "cpu" and lease.env() == {}
    assert not (tmp_path / "locks").exists()
    with pytest.raises(ValueError, match="cannot lease 3 of 2"):
        lease_devices(tmp_path, count=3, total=2)


def test_the_new_settings_refuse_out_of_range_values_by_name():
    from pydantic import ValidationError

    from assets.captions import CaptioningConfig
    from resources.devices import Accelerators

    with pytest.raises(ValidationError, match="decode_workers"):
        CaptioningConfig(decode_workers=-1)
    with pytest.raises(ValidationError, match="timeout_s"):
        Accelerators(timeout_s=0)
